"""What PSF matching's flux gain does to m in the pipeline: the sims re-observed exactly as
refine --matching-only does (model's PSF and noise matching), once with the model's gain and once
with a unit-sum K, REGAUSS on both, paired on the same galaxies (same noise fields).

Usage: python bench/flux_gain_m.py MODEL.pt SIM_SHARD.h5 [...] [--chunk 4096]
"""

import argparse
import dataclasses

import numpy as np

from refinegan.compare import calibration as cal
from refinegan.io import open_stamps
from refinegan.refiner.noise_match import NoiseMatch
from refinegan.refiner.psf_match import PsfMatch
from refinegan.refiner.refiner_file import RefinerFile
from refinegan.refiner.reobserve import Reobserve, known_noise_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("sims", nargs="+")
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--n-boot", type=int, default=200)
    a = ap.parse_args()
    model = RefinerFile.read(a.model)
    match = PsfMatch.from_dict(model.psf_match)
    unit = dataclasses.replace(match, gain=1.0)
    nmatch = NoiseMatch.from_dict(model.noise_match)
    print(f"model gain {match.gain:.4f}")
    shapes = {"gain": [], "unit": []}
    labels = []
    for path in a.sims:
        with open_stamps(path) as sf:
            lab = sf.labels()
            labels.append(lab)
            for name, m in (("gain", match), ("unit", unit)):
                reob = Reobserve(m, nmatch, known_noise_seed(sf.attrs) if nmatch else None, path)
                psf = m.apply_psf(sf.psf)
                for start in range(0, sf.n, a.chunk):
                    sl = slice(start, min(start + a.chunk, sf.n))
                    sub = {k: v[sl] for k, v in lab.items()}
                    img, sig = reob.apply(np.asarray(sf.images[sl]), sub["noise_sigma"], sub, offset=start)
                    shapes[name].append(cal.regauss_shapes(img, psf, sig**2, None))
        print(path, flush=True)
    lab = {k: np.concatenate([x[k] for x in labels]) for k in labels[0]}
    rng = np.random.default_rng(3)
    grs = {}
    for name, parts in shapes.items():
        sh = {k: np.concatenate([p[k] for p in parts]) for k in ("eps1", "eps2", "status")}
        grs[name] = cal.group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, lab)
        q = cal.calibrate(grs[name], a.n_boot, rng)
        print(f"{name}: m {q['m'][0]:+.4f} / {q['m'][1]:+.4f} +- {q['m_err'][0]:.4f} / {q['m_err'][1]:.4f}")
    d = cal.paired_difference(grs["unit"], grs["gain"], a.n_boot, rng)
    print(f"paired dm (gain - unit-sum K): {d['dm'][0]:+.4f} / {d['dm'][1]:+.4f} +- "
          f"{d['dm_err'][0]:.4f} / {d['dm_err'][1]:.4f}")


if __name__ == "__main__":
    main()
