"""compare of N stamps per domain (default 10,000): wall time and the cost per statistic.

Builds the inputs with the pipeline's own stages (cached in --workdir):
  sim      `refinegan.sim.simulate.simulate` on the default config (sim.n = N)
  real     `refinegan.target.cutouts.prepare_real`, the default mock target (real.n = N)
  refined  a stand-in for a refiner's output (no trained model is needed to time compare): the
           sim stamps plus extra white noise of 0.3 x sim.noise.sigma, labels copied.
then times each per-statistic kernel on a block of --block stamps (per stamp) and the whole
`refinegan.compare.compare.compare` with the default compare config (morphology on its default
subsample), and prints a markdown table for docs/benchmarks.md.

Usage: python bench/compare.py [--n 10000] [--workdir /tmp/refinegan-bench-compare]
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from refinegan.compare import calibration as cal  # noqa: E402
from refinegan.compare import distances as dist  # noqa: E402
from refinegan.compare.classifiers import CNNParams  # noqa: E402
from refinegan.compare.compare import compare  # noqa: E402
from refinegan.compare.morphology import morphology  # noqa: E402
from refinegan.compare.stats import (  # noqa: E402
    autocorrelation,
    hsm_moments,
    power_spectrum,
)
from refinegan.config import load_config  # noqa: E402
from refinegan.io import read_stamps, write_stamps  # noqa: E402
from refinegan.noise import MaskParams, noise_moments, source_mask  # noqa: E402


def build_inputs(n: int, workdir: Path) -> dict[str, Path]:
    from refinegan.sim.simulate import simulate
    from refinegan.target.prepare_real import prepare_real

    workdir.mkdir(parents=True, exist_ok=True)
    config = load_config(None, [f"sim.n={n}", f"real.n={n}"])
    paths = {d: workdir / f"{d}-{n}.h5" for d in ("sim", "refined", "real")}
    if not paths["sim"].exists():
        t = time.perf_counter()
        simulate(config, paths["sim"])
        print(f"simulate {n}: {time.perf_counter() - t:.1f} s")
    if not paths["real"].exists():
        t = time.perf_counter()
        prepare_real(config, paths["real"])
        print(f"prepare-real {n}: {time.perf_counter() - t:.1f} s")
    if not paths["refined"].exists():
        s = read_stamps(paths["sim"])
        rng = np.random.default_rng(1)
        extra = 0.3 * config["sim"]["noise"]["sigma"]
        images = s.images + rng.normal(0, extra, s.images.shape).astype(np.float32)
        write_stamps(paths["refined"], images, s.labels, domain="refined",
                     pixel_scale=s.pixel_scale, source="bench stand-in: sim + 0.3 sigma noise",
                     config=config, seed=config["seed"], psf=s.psf,
                     extra_attrs={"parent": str(paths["sim"]), "model_sha256": "bench"})
    return paths


def timed(fn, *args, repeat: int = 1, **kw):
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn(*args, **kw)
    return (time.perf_counter() - t) / repeat, out


def kernel_costs(paths: dict[str, Path], block: int) -> list[tuple[str, float, str]]:
    """Seconds per stamp (or per fit) of each statistic on ``block`` stamps."""
    sim = read_stamps(paths["sim"], slice(0, block))
    real = read_stamps(paths["real"], slice(0, block))
    x = sim.images.astype(np.float64)
    rows = []
    t, mask = timed(source_mask, x, MaskParams())
    rows.append(("source mask", t / block, "per stamp"))
    rows.append(("noise std/skew/kurtosis", timed(noise_moments, x, mask)[0] / block, "per stamp"))
    rows.append(("noise power spectrum", timed(power_spectrum, x, mask)[0] / block, "per stamp"))
    rows.append(("noise 2-D autocorrelation", timed(autocorrelation, x, mask)[0] / block,
                 "per stamp"))
    rows.append(("HSM adaptive moments", timed(hsm_moments, x)[0] / block, "per stamp"))
    rows.append(("REGAUSS shear", timed(cal.regauss_shapes, x, sim.psf, 100.0)[0] / block,
                 "per stamp"))
    nm = min(block, 100)
    t, _ = timed(morphology, x[:nm], np.full(nm, 10.0))
    rows.append(("statmorph (C, A, S, Gini, M20, r50)", t / nm, "per stamp"))
    rng = np.random.default_rng(0)
    fa = rng.normal(size=(block, 20))
    fb = rng.normal(size=(block, 20))
    g = np.arange(block)
    t, _ = timed(dist.classifier_auc, fa, fb, g, g, seeds=1, n_boot=200, rng=rng)
    rows.append((f"gradient boosting AUC ({block} vs {block}, 20 features, 200 boot)", t,
                 "per seed"))
    cnn = CNNParams(scale=10.0)
    t, _ = timed(dist.classifier_auc, sim.images, real.images, g, g, fit_predict=cnn.fit_predict,
                 seeds=1, n_boot=200, rng=rng)
    rows.append((f"CNN AUC ({block} vs {block} stamps, 5 epochs)", t, "per seed"))
    t, _ = timed(dist.energy, fa, fb, max_n=2000, rng=rng)
    rows.append((f"energy distance ({block} vs {block})", t, "per pair"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--block", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/refinegan-bench-compare"))
    ap.add_argument("--skip-full", action="store_true", help="only the per-statistic costs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    paths = build_inputs(args.n, args.workdir)
    rows = kernel_costs(paths, args.block)
    print("\n| statistic | cost | unit |\n|---|---|---|")
    for name, sec, unit in rows:
        print(f"| {name} | {sec * 1e3:.3g} ms | {unit} |")
    result = {"kernels": rows}
    if not args.skip_full:
        config = load_config(None, [f"sim.n={args.n}", f"real.n={args.n}"])
        t = time.perf_counter()
        compare(config, [paths["sim"]], [paths["refined"]], paths["real"],
                args.workdir / "compare.h5", progress=False)
        wall = time.perf_counter() - t
        print(f"\ncompare of {args.n} stamps per domain (default compare config): {wall:.0f} s")
        result["compare_wall_s"] = wall
    (args.workdir / "bench_compare.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
