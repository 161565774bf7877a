"""Does the SimGAN earn its place? R trained with D (``train.adv_weight=1``) and without any
adversarial loss (``0``), side by side, over seeds and targets (issue 18 item 2).

For each target config (layered on config/config.yaml; ``default`` = the default mock) and each
master seed: simulate one shard, prepare the target, then for each arm train, refine, write R's
input (``refine --matching-only``) and compare, all with the pipeline's own stage functions.
Prints one markdown table per target, mean +- std / sqrt(N) over the N seeds, with the PSF-matched
sims (R's input, no R) as the reference row:

    AUC gradient boosting on all statistics / noise only / morphology only, AUC pixel CNN
    (refined vs real; 0.5 = indistinguishable), morphology gap closed (energy distance),
    m1 / m2 of the refined set (REGAUSS), R's own paired dm1 / dm2 (refined - psf_matched)

    python bench/adv_ablation.py [--seeds 3] [--targets default config/targets/knots_no_bulge.yaml
        config/cosmos.yaml] [--device auto] [--workdir /tmp/refinegan-adv-ablation]
        [--set train.steps=2000 ...] [--small]

``--small`` shrinks everything (32 x 32 stamps, 32 galaxies, 3 steps, a tiny R and D, the
cheapest compare) so the whole bench runs in about a minute per target on a laptop: a smoke
test of the bench, not a measurement. Inputs are cached in --workdir per target and seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from refinegan.compare.compare import compare  # noqa: E402
from refinegan.config import load_config  # noqa: E402
from refinegan.refiner.refine import refine  # noqa: E402
from refinegan.refiner.train import train  # noqa: E402
from refinegan.sim.simulate import simulate  # noqa: E402
from refinegan.target.prepare_real import prepare_real  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TARGETS = ("default", "config/targets/knots_no_bulge.yaml", "config/cosmos.yaml")
ARMS = {"with D": 1.0, "no adversarial loss": 0.0}
SMALL = ["stamp.size=32", "sim.n=32", "real.n=32", "train.steps=3", "train.batch_size=8",
         "train.refiner_channels=4", "train.refiner_blocks=1", "train.disc_channels=4",
         "train.history_size=8", "train.sample_every=0", "train.log_every=1",
         "compare.morphology_n=8", "compare.cnn_seeds=1", "compare.cnn_epochs=1",
         "compare.cnn_channels=2", "compare.n_bootstrap=10", "compare.gb_max_iter=5",
         "compare.gb_seeds=2", "compare.energy_n=50", "compare.plot_stamps=2"]
# (column, how to read it from compare's result for the refined set, ... for the psf_matched set)
COLUMNS = (
    ("AUC gb all", lambda r: r["classifier"]["gb_all"]["auc"][1],
     lambda r: r["classifier"]["gb_all"]["psf_matched_auc"]),
    ("AUC gb noise", lambda r: r["classifier"]["gb_noise"]["auc"][1],
     lambda r: r["classifier"]["gb_noise"]["psf_matched_auc"]),
    ("AUC gb morphology", lambda r: r["classifier"]["gb_morph"]["auc"][1],
     lambda r: r["classifier"]["gb_morph"]["psf_matched_auc"]),
    ("AUC pixel CNN", lambda r: r["classifier"]["cnn_pixels"]["auc"][1],
     lambda r: r["classifier"]["cnn_pixels"]["psf_matched_auc"]),
    ("morphology gap closed (energy)", lambda r: r["distances"]["gap_closed_energy_morph"],
     lambda r: r["distances"]["psf_matched"]["gap_closed_matching_energy_morph"]),
    ("m1 refined", lambda r: r["calibration"]["refined"]["m"][0],
     lambda r: r["calibration"]["psf_matched"]["m"][0]),
    ("m2 refined", lambda r: r["calibration"]["refined"]["m"][1],
     lambda r: r["calibration"]["psf_matched"]["m"][1]),
    ("dm1 R only", lambda r: r["calibration"]["paired_r_only"]["dm"][0], lambda r: 0.0),
    ("dm2 R only", lambda r: r["calibration"]["paired_r_only"]["dm"][1], lambda r: 0.0),
)


def mean_err(values) -> tuple[float, float, int]:
    """Mean and std / sqrt(N) (ddof 1) of the finite values, and N; err NaN for N < 2."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    err = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), err, int(v.size)


def _read(fn, result) -> float:
    try:
        return float(np.asarray(fn(result), dtype=float))
    except (KeyError, IndexError, TypeError):
        return float("nan")


def run_one(target: str, seed: int, overrides: list[str], workdir: Path) -> dict[str, dict]:
    """One target and seed: both arms trained and compared; per arm its column values."""
    files = [ROOT / "config" / "config.yaml"] + ([] if target == "default" else [ROOT / target])
    base = [f"seed={seed}", *overrides]
    cfg = load_config(files, base)
    tag = hashlib.sha256(json.dumps(overrides).encode()).hexdigest()[:8]  # cache per setting
    d = workdir / f"{Path(target).stem if target != 'default' else 'default'}-{tag}" / f"seed-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    sim, real = d / "sim.h5", d / "real.h5"
    if not sim.exists():
        simulate(cfg, sim)
    if not real.exists():
        prepare_real(cfg, real)
    rows = {}
    for arm, weight in ARMS.items():
        a = d / f"adv-{weight:g}"
        acfg = load_config(files, [*base, f"train.adv_weight={weight}"])
        res = train(acfg, [sim], real, a / "model")
        refine(res.model_path, sim, a / "refined.h5")
        refine(res.model_path, sim, a / "psf_matched.h5", matching_only=True)
        out = compare(acfg, [sim], [a / "refined.h5"], real, a / "compare.h5",
                      plots_dir=a / "plots", progress=False, psf_matched_paths=[a / "psf_matched.h5"])
        rows[arm] = {c: _read(f, out) for c, f, _ in COLUMNS}
        rows.setdefault("PSF matching only (no R)", {c: _read(g, out) for c, _, g in COLUMNS})
    return rows


def table(per_seed: list[dict[str, dict]]) -> list[str]:
    """The markdown table: one row per arm, mean +- err (N seeds) per column."""
    lines = ["| arm | " + " | ".join(c for c, _, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for arm in [*ARMS, "PSF matching only (no R)"]:
        cells = []
        for c, _, _ in COLUMNS:
            m, e, n = mean_err([s[arm][c] for s in per_seed])
            cells.append(f"{m:.4g} +- {e:.2g} ({n})" if n else "n/a")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="master seeds 1..N per target (>= 3)")
    ap.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS),
                    help="target config files layered on config/config.yaml; 'default' = the mock")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/refinegan-adv-ablation"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override KEY=VALUE for every run (repeatable)")
    ap.add_argument("--small", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = [*(SMALL if a.small else []), f"train.device={a.device}", *a.overrides]
    results = {}
    for target in a.targets:
        if target != "default" and not (ROOT / target).exists():
            print(f"\n{target}: no such file, skipped")
            continue
        per_seed = [run_one(target, seed, overrides, a.workdir) for seed in range(1, a.seeds + 1)]
        results[target] = per_seed
        print(f"\n### {target}: mean +- std/sqrt(N) over N = {a.seeds} seeds"
              + (" (--small: smoke test only)" if a.small else ""))
        print("\n".join(table(per_seed)))
    (a.workdir / "adv_ablation.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
