"""Where the mock's shear calibration comes from: REGAUSS m of the mock with one effect at a time.

Every variant is the default config's mock (same seed: the same galaxies and the same noise
fields), so each is measured paired against the noise-only control (the mock with only its
correlated noise, the sim's PSF): dm = m(variant) - m(control) on the same galaxy groups, with
bootstrap errors over groups. Variants: the target PSF (atmosphere + optics; atmosphere only;
the sim PSF + optics), knots, bulge, neighbours, cosmic rays + hot pixels, everything (the mock),
and the sims themselves matched to the target PSF (refinegan.refiner.psf_match) with the sim's own
noise (unpaired: other galaxies). Prints one line per variant.

Usage: python bench/mock_m_budget.py [--config config/config.yaml [TARGET.yaml ...]] [--n 4096]
       [--set KEY=VALUE ...] [--out DIR]
(e.g. ``--config config/config.yaml config/targets/knots_no_bulge.yaml``: that target's budget;
the variants switch its effects off one at a time as they do the default mock's)
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from refinegan.compare import calibration as cal
from refinegan.config import apply_overrides, load_config
from refinegan.io import read_stamps
from refinegan.refiner.psf_match import build_psf_match
from refinegan.sim.simulate import simulate
from refinegan.target.mock import prepare_mock

EFFECTS = ["knots", "bulge", "neighbours", "cosmic_rays", "hot_pixels"]
OFF = [f"real.mock.{e}.enabled=false" for e in EFFECTS]
CONTROL = [*OFF, "real.psf.optical=false", "real.psf.use_sim_psf=true"]
VARIANTS = {
    "control (noise only)": CONTROL,
    "target PSF (atmosphere + optics)": OFF,
    "target atmosphere only": [*OFF, "real.psf.optical=false"],
    "sim PSF + target optics": [*OFF, "real.psf.use_sim_psf=true"],
    "knots": [o for o in CONTROL if "knots" not in o],
    "bulge": [o for o in CONTROL if "bulge" not in o],
    "neighbours": [o for o in CONTROL if "neighbours" not in o],
    "cosmic rays + hot pixels": [o for o in CONTROL if "cosmic" not in o and "hot" not in o],
    "mock (everything)": [],
}


def measure(s, psf, sigma, n_boot, rng):
    sh = cal.regauss_shapes(np.asarray(s.images, np.float32), np.asarray(psf, np.float32),
                            sigma**2, s.mask)
    gr = cal.group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, s.labels)
    return gr, cal.calibrate(gr, n_boot, rng)


def fmt(name, c, d=None):
    line = (f"{name:34s} m1 {c['m'][0]:+.4f} +- {c['m_err'][0]:.4f}  m2 {c['m'][1]:+.4f} +- "
            f"{c['m_err'][1]:.4f}")
    if d is not None:
        line += (f" | paired dm vs control {d['dm'][0]:+.4f} +- {d['dm_err'][0]:.4f}, "
                 f"{d['dm'][1]:+.4f} +- {d['dm_err'][1]:.4f}")
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", nargs="+", default=["config/config.yaml"],
                    help="config files, later ones over earlier ones (a target overlay last)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. real.seed=311")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--out", default=None, help="keep the stamp files here (default: a temp dir)")
    a = ap.parse_args()
    base = apply_overrides(load_config(a.config), [*a.set, f"real.n={a.n}", f"sim.n={a.n}"])
    sigma = float(base["real"]["noise"]["sigma"])
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        groups = {}
        for i, (name, sets) in enumerate(VARIANTS.items()):
            path = out / f"variant-{i}.h5"
            prepare_mock(apply_overrides(base, sets), path)
            gr, c = measure(read_stamps(path), read_stamps(path).psf, sigma, a.n_boot, rng)
            groups[name] = gr
            d = None if i == 0 else cal.paired_difference(groups["control (noise only)"], gr, a.n_boot, rng)
            print(fmt(name, c, d), flush=True)
        target = read_stamps(out / f"variant-{len(VARIANTS) - 1}.h5").psf
        sim_path = out / "sim.h5"
        simulate(base, sim_path)
        sim = read_stamps(sim_path)
        gs, c = measure(sim, sim.psf, float(base["sim"]["noise"]["sigma"]), a.n_boot, rng)
        print(fmt("sim", c), flush=True)
        match = build_psf_match(sim.psf, target, sim.images.shape[1:], int(base["seed"]))
        sim.images = match.apply(sim.images, np.asarray(sim.labels["noise_sigma"]), sim.labels)
        gm, c = measure(sim, match.apply_psf(sim.psf), float(base["sim"]["noise"]["sigma"]), a.n_boot, rng)
        d = cal.paired_difference(gs, gm, a.n_boot, rng)
        print(fmt("sim matched to the target PSF", c) + f" | paired dm vs sim {d['dm'][0]:+.4f} +- "
              f"{d['dm_err'][0]:.4f}, {d['dm'][1]:+.4f} +- {d['dm_err'][1]:.4f}", flush=True)


if __name__ == "__main__":
    main()
