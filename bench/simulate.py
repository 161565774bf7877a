"""Simulation throughput: refinegan simulate vs the reference GalSim loops, in one process.

Runs ../shared/bench/galsim_naive.py and ../shared/bench/galsim_tuned.py unmodified (their own
timing loops, captured from stdout), then `refinegan.sim.simulate.simulate` on

- the default sim config (48 x 48, Sersic 0.5 <= n <= 4 on a 0.05 grid, Moffat 0.7", noise,
  pairs), HDF5 writing included, and
- the reference loops' population (64 x 64, hlr 0.3-1.1", flux 1e4-6e4, e in +/-0.15,
  noise sigma 30) for a like-for-like ratio,

and prints stamps/s per core (one process, one thread) and the ratios.

Usage: python bench/simulate.py [--n 4096] [--shared ../shared/bench]
"""

import argparse
import contextlib
import io as _io
import os
import re
import runpy
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from refinegan.config import load_config  # noqa: E402
from refinegan.sim.simulate import simulate  # noqa: E402

BASELINE_POPULATION = [
    "stamp.size=64", "sim.galaxy.hlr_median=0.7", "sim.galaxy.hlr_sigma_ln=1.0",
    "sim.galaxy.hlr_min=0.3", "sim.galaxy.hlr_max=1.1", "sim.galaxy.flux_min=1e4",
    "sim.galaxy.flux_max=6e4", "sim.galaxy.shape_sigma=0.1", "sim.galaxy.shape_max=0.21",
    "sim.noise.sigma=30", "sim.galaxy.sersic_n_step=0.1",
]


def run_reference(script: Path) -> dict[str, float]:
    buf = _io.StringIO()
    with contextlib.redirect_stdout(buf):
        runpy.run_path(str(script), run_name="__main__")
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+) ([\d.]+) stamps/s", buf.getvalue())}


def run_refinegan(n: int, overrides: list[str]) -> float:
    cfg = load_config(None, [f"sim.n={n}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        simulate(cfg, Path(tmp) / "warm.h5", shard=0, nshards=max(1, n // 64))  # warm caches
        t0 = time.perf_counter()
        simulate(cfg, Path(tmp) / "sim.h5")
        return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="stamps per refinegan run")
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "bench"))
    args = parser.parse_args()
    shared = Path(args.shared)
    ref = {}
    for name in ("galsim_naive.py", "galsim_tuned.py"):
        if (shared / name).exists():
            ref.update(run_reference(shared / name))
        else:
            print(f"{shared / name} not found: reference loop skipped")
    ours_default = run_refinegan(args.n, [])
    ours_like = run_refinegan(args.n, BASELINE_POPULATION)
    print(f"{'loop':40s} {'stamps/s/core':>14s}")
    for k, v in ref.items():
        print(f"{'reference ' + k:40s} {v:14.1f}")
    print(f"{'refinegan default config (48x48, h5)':40s} {ours_default:14.1f}")
    print(f"{'refinegan reference population (64x64)':40s} {ours_like:14.1f}")
    if "simple" in ref and "simple_q" in ref:
        print(f"ratio default / naive simple    = {ours_default / ref['simple']:.1f}")
        print(f"ratio default / tuned simple_q  = {ours_default / ref['simple_q']:.2f}")
        print(f"ratio 64x64 pop / naive simple  = {ours_like / ref['simple']:.1f}")
        print(f"ratio 64x64 pop / tuned simple_q = {ours_like / ref['simple_q']:.2f}")


if __name__ == "__main__":
    main()
