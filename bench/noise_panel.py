"""The panel of mock targets (config/targets/*.yaml): each target's noise and PSF next to the
sims', and what noise matching needs (issue 15).

For each target: draw ``--n`` mock stamps with the default run's config plus the target's file,
measure its noise covariance on sky pixels (`refinegan.refiner.noise_match`): sigma, the lag-1
correlations, and the largest white sim sigma that noise matching can start from; the PSF's HSM
size beside the sims'. Prints one markdown table (docs/benchmarks.md).

    python bench/noise_panel.py [--n 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from refinegan.compare.stats import hsm_moments
from refinegan.config import load_config
from refinegan.io import read_stamps
from refinegan.refiner.noise_match import build_noise_match
from refinegan.sim.simulate import build_psf, draw_psf_image
from refinegan.target.prepare_real import prepare_real

ROOT = Path(__file__).resolve().parents[1]


def _psf_sigma(psf: np.ndarray) -> float:
    return float(hsm_moments(np.asarray(psf, np.float64)[None])["hsm_sigma"][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="target stamps per panel target")
    args = ap.parse_args()
    base = load_config(ROOT / "config" / "config.yaml")
    sim_sigma = base["sim"]["noise"]["sigma"]
    sp = base["sim"]["psf"]
    sim_psf = draw_psf_image(build_psf(sp["type"], sp["fwhm"], sp["beta"], sp["e1"], sp["e2"]),
                             base.stamp_size, base.pixel_scale)
    print(f"sims: white noise sigma {sim_sigma:g} counts, PSF HSM sigma {_psf_sigma(sim_psf):.2f} px")
    print("| target | noise sigma | lag-1 x / y | noise matching needs sim sigma <= | matchable from the default sims | PSF HSM sigma (px) | s |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted((ROOT / "config" / "targets").glob("*.yaml")):
        cfg = load_config([ROOT / "config" / "config.yaml", path], [f"real.n={args.n}"])
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            out = prepare_real(cfg, Path(tmp) / "real.h5")
            real = read_stamps(out)
        match = build_noise_match(real.images, cfg.seed, 4, real.mask)
        c = match.covariance
        need = match.required_sim_sigma()
        print(f"| {path.stem} | {np.sqrt(c[0, 0]):.2f} | {c[0, 1] / c[0, 0]:.3f} / "
              f"{c[1, 0] / c[0, 0]:.3f} | {need:.2f} | {'yes' if sim_sigma <= need else 'no'} | "
              f"{_psf_sigma(real.psf):.2f} | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main()
