"""Mock-target throughput: refinegan's mock vs GalSim's ``realistic_cached`` loop, in one process.

Runs ../shared/bench/galsim_tuned.py unmodified (its own timing loops, captured from stdout;
``realistic_cached`` draws exponential disk + bulge + 30 RandomKnots through a cached
Kolmogorov x OpticalPSF InterpolatedImage, 64 x 64, no noise), then
`refinegan.target.cutouts.prepare_real` (real.source mock) with

- the default config (48 x 48, all effects on, Lanczos-correlated noise, cosmic rays, hot
  pixels, neighbours, pairs; /mask and HDF5 writing included), and
- the same at 64 x 64 (the reference loop's stamp size),
- the default with every effect off (the PSF and correlated noise kept),

and prints stamps/s per core (one process, one thread) and the ratios.

Usage: python bench/mock.py [--n 2048] [--shared ../shared/bench]
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
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from refinegan.config import load_config  # noqa: E402
from refinegan.target.prepare_real import prepare_real  # noqa: E402

EFFECTS_OFF = [f"real.mock.{e}.enabled=false"
               for e in ("knots", "bulge", "neighbours", "cosmic_rays", "hot_pixels")]


def run_reference(script: Path) -> dict[str, float]:
    buf = _io.StringIO()
    with contextlib.redirect_stdout(buf):
        runpy.run_path(str(script), run_name="__main__")
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+) ([\d.]+) stamps/s", buf.getvalue())}


def run_mock(n: int, overrides: list[str]) -> float:
    cfg = load_config(None, [f"real.n={n}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        prepare_real(load_config(None, ["real.n=64", *overrides]), Path(tmp) / "warm.h5")
        t0 = time.perf_counter()
        prepare_real(cfg, Path(tmp) / "real.h5")
        return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="stamps per mock run")
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "bench"))
    args = parser.parse_args()
    script = Path(args.shared) / "galsim_tuned.py"
    ref = run_reference(script) if script.exists() else {}
    if not ref:
        print(f"{script} not found: reference loop skipped")
    rows = [("mock, default config (48x48, all effects, h5)", run_mock(args.n, [])),
            ("mock, default at 64x64", run_mock(args.n, ["stamp.size=64"])),
            ("mock, effects off (PSF + corr. noise, 48x48)", run_mock(args.n, EFFECTS_OFF))]
    print(f"{'loop':48s} {'stamps/s/core':>14s}")
    for k, v in ref.items():
        print(f"{'reference ' + k:48s} {v:14.1f}")
    for name, v in rows:
        print(f"{name:48s} {v:14.1f}")
    if "realistic_cached" in ref:
        for name, v in rows:
            print(f"ratio {name} / realistic_cached = {v / ref['realistic_cached']:.2f}")


if __name__ == "__main__":
    main()
