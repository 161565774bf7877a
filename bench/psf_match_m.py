"""Does PSF matching give the sims the m that drawing them through the target PSF gives?

The target's mock with every effect off, noiseless, drawn twice from the same seed (the same
galaxies): through the sims' PSF (the noise-only control's PSF) and through the target PSF. The
first, convolved with the matching kernel K (`refinegan.refiner.psf_match`, from the two files'
``/psf`` and, for K's sum, their ``psf_flux_in_stamp``, as training builds it), should equal the
second. Prints the pixel residual, the in-stamp flux ratio, and REGAUSS m of the sets noiseless
and, paired against the drawn set, with one white noise field added to all; beside K, the
unit-sum K of before session 15 (which kept in the stamp the light the target PSF sends beyond
it). The noise field is shared by each galaxy's +g / -g twins, as in the sims.

Usage: python bench/psf_match_m.py [--config config/config.yaml [TARGET.yaml ...]] [--n 1024]
       [--set KEY=VALUE ...]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from mock_m_budget import CONTROL, OFF, measure

from refinegan.compare import calibration as cal
from refinegan.config import apply_overrides, load_config
from refinegan.io import PSF_FLUX_ATTR, StampSet, read_stamps
from refinegan.refiner.psf_match import build_psf_match, psf_flux_gain
from refinegan.seeds import realisation_normals
from refinegan.target.mock import prepare_mock


def m_of(images, psf, sigma, labels, n_boot, rng):
    """`mock_m_budget.measure` of stamps held as an array."""
    return measure(StampSet(np.asarray(images, np.float32), labels), psf, sigma, n_boot, rng)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--sigma", type=float, nargs="+", default=[4.0, 8.0],
                    help="white noise levels (counts) of the paired noisy comparison")
    ap.add_argument("--n-boot", type=int, default=100)
    a = ap.parse_args()
    base = apply_overrides(load_config(a.config), [*a.set, f"real.n={a.n}", "real.noise.sigma=0"])
    rng = np.random.default_rng(1)
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, over in (("sim PSF", CONTROL), ("target PSF", OFF)):
            prepare_mock(apply_overrides(base, over), Path(tmp) / "x.h5")
            sets[name] = read_stamps(Path(tmp) / "x.h5")
    c, t = sets["sim PSF"], sets["target PSF"]
    gain, why = psf_flux_gain(c.attrs.get(PSF_FLUX_ATTR), t.attrs.get(PSF_FLUX_ATTR))
    print(f"PSF matching: {why}")
    drawn = np.asarray(t.images, np.float64)
    peak = np.sqrt((drawn.max(axis=(1, 2)) ** 2).mean())
    arms = {"drawn through the target PSF": (drawn, t.psf)}
    for name, g in (("sims' PSF * K", gain), ("sims' PSF * unit-sum K", 1.0)):
        match = build_psf_match(c.psf, t.psf, c.images.shape[1:], 0, gain=g)
        matched = np.asarray(match.apply(c.images, np.zeros(len(c.images)), c.labels), np.float64)
        arms[name] = (matched, match.apply_psf(c.psf))
        print(f"{name}: pixel residual rms (matched - drawn) / rms peak "
              f"{np.sqrt(((matched - drawn) ** 2).mean()) / peak:.4f}, in-stamp flux matched / "
              f"drawn {matched.sum() / drawn.sum():.4f}")
    for name, (im, psf) in {"drawn through the sims' PSF": (np.asarray(c.images), c.psf), **arms}.items():
        _, q = m_of(im, psf, 1.0, c.labels, a.n_boot, rng)
        print(f"noiseless {name:30s} m {q['m'][0]:+.4f} / {q['m'][1]:+.4f} +- {q['m_err'][0]:.4f}")
    for sig in a.sigma:
        # one field per galaxy and orientation, shared by its +g / -g twins as the sims' and the
        # mock's noise is: the shape noise cancels in m and the paired errors are small
        w = sig * realisation_normals(c.labels, len(drawn), drawn.shape[1:], 7, "psf_match")
        ref = None
        for name, (im, psf) in arms.items():
            gr, q = m_of(im + w, psf, sig, c.labels, a.n_boot, rng)
            line = f"sigma {sig:g} {name:30s} m {q['m'][0]:+.4f} / {q['m'][1]:+.4f} +- {q['m_err'][0]:.4f}"
            if ref is None:
                ref = gr
            else:
                d = cal.paired_difference(ref, gr, a.n_boot, rng)
                line += (f" | paired vs drawn {d['dm'][0]:+.4f} / {d['dm'][1]:+.4f} +- "
                         f"{d['dm_err'][0]:.4f} / {d['dm_err'][1]:.4f}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
