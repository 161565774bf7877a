"""Noise matching's two spread bases side by side on a finished run (issue 15, session 19).

For a run's directory (``results/<name>/``, with ``real.h5``, ``sim/`` and ``config/``): the
sims' own galaxies (their noise taken out by seed, `refinegan.refiner.noise_match.
remove_sim_noise`) re-observed with the target's noise by noise matching with the bank of each
basis (``train.noise_spread``: ``lag1``, ``spectrum``), measured as compare measures
(`refinegan.compare.measure`), and told from the target by compare's gradient boosting on the
``gb_all`` and ``gb_noise`` features over ``--seeds`` group splits, the two bases paired (the same
splits and classifier seeds; `refinegan.compare.distances.paired_classifier_auc`), beside the
real-vs-real floor. No PSF matching: use it on targets drawn with the sims' PSF (``noise_only``),
where PSF-and-noise-matched stamps are these. No training. 65,536 stamps: ~15 min on 2 cores.

    python bench/noise_spread_ab.py results/panel_noise_only_s18big2 --stamps 65536 --seeds 10
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from refinegan.compare import distances as dist
from refinegan.compare.classifiers import _features
from refinegan.compare.measure import groups_of, measure
from refinegan.compare.params import NOISE_STATS, SCALAR_STATS, CompareParams
from refinegan.compare.samples import Samples
from refinegan.config import RunConfig
from refinegan.io import StampSet, read_many, read_stamps
from refinegan.refiner.noise_match import build_noise_match, remove_sim_noise

CHUNK = 4096


def _first(s: StampSet, n: int, mask: bool = True) -> StampSet:
    return StampSet(s.images[:n], {k: v[:n] for k, v in s.labels.items()}, s.psf,
                    None if (s.mask is None or not mask) else s.mask[:n], s.attrs, s.units)


def matched_sets(run: Path, n: int, seed: int) -> dict[str, StampSet]:
    """The target's first ``n`` stamps (``real``) and the first ``n`` sims re-observed with
    noise matching of each basis (``lag1``, ``spectrum``)."""
    shards = sorted((run / "sim").glob("shard-*.h5"), key=lambda q: int(q.stem.split("-")[1]))
    sims = _first(read_many(shards, n), n, mask=False)
    real = _first(read_stamps(run / "real.h5"), n)
    clean = remove_sim_noise(sims.images, sims.labels, int(sims.attrs["seed"]), str(run / "sim"))
    sets = {"real": real}
    for basis in ("lag1", "spectrum"):
        m = build_noise_match(real.images, seed, 4, real.mask, spread_basis=basis)
        out = np.empty(clean.shape, np.float32)
        for s in range(0, len(clean), CHUNK):
            k = min(CHUNK, len(clean) - s)
            out[s:s + k] = m.apply(clean[s:s + k], np.zeros(k),
                                   {key: v[s:s + k] for key, v in sims.labels.items()}, offset=s)
        sets[basis] = StampSet(out, sims.labels, sims.psf, None, sims.attrs, sims.units)
        print(f"{basis}: {'no bank' if m.bank is None else f'{len(m.bank)} classes'}", flush=True)
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished run's results/<name>/ directory")
    ap.add_argument("--stamps", type=int, default=16384, help="first stamps of each set")
    ap.add_argument("--seeds", type=int, default=10, help="group splits per AUC")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cfg = RunConfig.of(json.loads((args.run / "config" / "compare.json").read_text()))
    p = replace(CompareParams.from_config(cfg), gb_seeds=args.seeds)
    sets = matched_sets(args.run, args.stamps, cfg.seed)
    meas = {d: measure(s, p, False) for d, s in sets.items()}
    groups = {d: groups_of(s) for d, s in sets.items()}
    rng = np.random.default_rng(19)
    half_b = dist.group_split(groups["real"], 0.5, rng)
    data = Samples(sets, meas, groups, half_b, 1.0)

    def gb(xtr, ytr, xte, seed):
        return dist.gb_fit_predict(xtr, ytr, xte, seed, max_iter=p.gb_max_iter, threads=1)

    kw = dict(fit_predict=gb, seeds=args.seeds, test_fraction=0.5, n_boot=p.n_bootstrap, rng=rng)
    print(f"{args.run.name}: {len(sets['real'])} stamps, {args.seeds} splits")
    print("| test | AUC lag1 classes | AUC spectrum classes | spectrum - lag1 (paired) | floor |")
    print("|---|---|---|---|---|")
    for key, names in (("gb_all", SCALAR_STATS), ("gb_noise", NOISE_STATS)):
        x = {d: _features(data, d, names, True) for d in sets}
        r = dist.paired_classifier_auc(x["lag1"], x["spectrum"], x["real"], groups["lag1"],
                                       groups["real"], **kw)
        fl = dist.classifier_auc(x["real"][~half_b], x["real"][half_b], groups["real"][~half_b],
                                 groups["real"][half_b], **kw)
        print(f"| {key} | {r.first.auc:.4f} +- {r.first.err:.4f} | {r.second.auc:.4f} +- "
              f"{r.second.err:.4f} | {r.diff:+.4f} +- {r.err:.4f} | {fl.auc:.4f} +- {fl.err:.4f} |",
              flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
