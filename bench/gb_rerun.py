"""compare's gradient-boosting tests again on a finished run, with more stamps and split seeds.

compare (calibration mode) runs its classifier tests on the first ``compare.subsample_stamps``
stamps (4,096) with ``compare.gb_seeds`` splits (3): errors of 0.01-0.02 in AUC. This reads a
finished run's directory (``results/<name>/``: sim/, refined/, psf_matched/, real.h5, and
control_noise.h5 where the target has one), measures the first ``--stamps`` stamps of each set as
compare does (`refinegan.compare.measure`), and runs compare's ``gb_all`` and ``gb_noise`` tests
(`refinegan.compare.classifiers`) with ``--seeds`` splits: sim, refined and the real-vs-real floor
against the target, and the control and the physics-only stamps (psf_matched) beside them. Then
the permutation importances (held-out AUC lost when one feature is shuffled) of refined vs target
on ``gb_all``, over 3 group splits: what the classifier finds. Session 19 (issue 15): 65,536
stamps, 10 seeds, ~20 min on 2 cores.

    python bench/gb_rerun.py results/panel_noise_only_s18big2 --stamps 65536 --seeds 10
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance

from refinegan.compare import distances as dist
from refinegan.compare.classifiers import _auc_triple, _features
from refinegan.compare.compare import _load_sets
from refinegan.compare.measure import groups_of, measure
from refinegan.compare.params import NOISE_STATS, SCALAR_STATS, CompareParams
from refinegan.compare.samples import Samples
from refinegan.config import RunConfig


def _shards(run: Path, sub: str) -> list[Path]:
    return sorted((run / sub).glob("shard-*.h5"), key=lambda q: int(q.stem.split("-")[1]))


def _cell(auc: float, err: float) -> str:
    return f"{auc:.4f} +- {err:.4f}"


def rerun(run: Path, stamps: int, seeds: int) -> dict:
    """The tests of the module docstring on ``run``; returns what it prints, as a dict."""
    cfg = RunConfig.of(json.loads((run / "config" / "compare.json").read_text()))
    p = replace(CompareParams.from_config(cfg), subsample_stamps=stamps, gb_seeds=seeds,
                cnn_seeds=0, max_stamps=None)
    control = [run / "control_noise.h5"] if (run / "control_noise.h5").exists() else []
    sets = _load_sets(_shards(run, "sim"), _shards(run, "refined"), run / "real.h5", control,
                      p.full_stamps, _shards(run, "psf_matched"))
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, p.seed_offset, stamps, seeds]))
    meas = {d: measure(s, p, True, desc=d) for d, s in sets.items()}
    groups = {d: groups_of(s) for d, s in sets.items()}
    half_b = dist.group_split(groups["real"], 0.5, rng)
    data = Samples(sets, meas, groups, half_b, 1.0)

    def gb(xtr, ytr, xte, seed):
        return dist.gb_fit_predict(xtr, ytr, xte, seed, max_iter=p.gb_max_iter, threads=1)

    out: dict = {"run": str(run), "stamps": {d: len(s) for d, s in sets.items()}, "seeds": seeds}
    for key, names in (("gb_all", SCALAR_STATS), ("gb_noise", NOISE_STATS)):
        x = {d: _features(data, d, names, True) for d in sets}
        tri = _auc_triple({d: x[d] for d in ("sim", "refined", "real", *(["control"] * bool(control)))},
                          groups, half_b, gb, seeds, p, rng)
        pm = dist.classifier_auc(x["psf_matched"], x["real"], groups["psf_matched"],
                                 groups["real"], fit_predict=gb, seeds=seeds,
                                 test_fraction=p.test_fraction, n_boot=p.n_bootstrap, rng=rng)
        out[key] = {"sim": [tri["auc"][0], tri["err"][0]],
                    "refined": [tri["auc"][1], tri["err"][1]],
                    "floor": [tri["auc"][2], tri["err"][2]],
                    "physics_only": [pm.auc, pm.err],
                    "control": [tri.get("control_auc", np.nan), tri.get("control_err", np.nan)],
                    "refined_seed_aucs": tri["seed_aucs"][1].tolist()}
    xa, xb = _features(data, "refined", SCALAR_STATS, True), _features(data, "real", SCALAR_STATS, True)
    names = [*SCALAR_STATS, *(f"power_{i}" for i in range(xa.shape[1] - len(SCALAR_STATS)))]
    imps = []
    for s in range(3):
        ta = dist.group_split(groups["refined"], 0.5, rng)
        tb = dist.group_split(groups["real"], 0.5, rng)
        clf = HistGradientBoostingClassifier(max_iter=p.gb_max_iter, random_state=s,
                                             early_stopping=False)
        clf.fit(np.vstack([xa[~ta], xb[~tb]]), np.r_[np.zeros((~ta).sum()), np.ones((~tb).sum())])
        pi = permutation_importance(clf, np.vstack([xa[ta], xb[tb]]),
                                    np.r_[np.zeros(ta.sum()), np.ones(tb.sum())],
                                    scoring="roc_auc", n_repeats=5, random_state=s)
        imps.append(pi.importances_mean)
    imp = np.mean(imps, axis=0)
    out["importance"] = {names[i]: float(imp[i]) for i in np.argsort(-imp)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished run's results/<name>/ directory")
    ap.add_argument("--stamps", type=int, default=16384, help="first stamps of each set")
    ap.add_argument("--seeds", type=int, default=10, help="group splits per AUC")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = rerun(args.run, args.stamps, args.seeds)
    print(f"{args.run.name}: {r['stamps']['refined']} stamps, {args.seeds} splits "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| test | sim | refined | physics only | control | floor (real vs real) |")
    print("|---|---|---|---|---|---|")
    for key in ("gb_all", "gb_noise"):
        t = r[key]
        print(f"| {key} | " + " | ".join(_cell(*t[d]) for d in
                                         ("sim", "refined", "physics_only", "control", "floor")) + " |")
    top = list(r["importance"].items())[:8]
    print("permutation importance, refined vs target (gb_all, AUC lost): "
          + ", ".join(f"{k} {v:+.4f}" for k, v in top))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
