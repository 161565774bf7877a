"""The control for comparing each set with the target on its own selection (session 16): the twin
(the target's physics drawn on the sims' galaxies) should read the target's m. Prints m_twin -
m_target per compare.h5 on the twin's own selection and on the paired sets' common one, errors
the two sets' in quadrature, and chi2 of each over all runs.

    python bench/twin_selection.py results/*/compare.h5
"""

import sys

import h5py
import numpy as np


def main() -> None:
    own_d, com_d, errs = [], [], []
    for path in sys.argv[1:]:
        with h5py.File(path, "r") as f:
            c = f["calibration"]
            if "twin" not in c or "m_own_selection" not in c["twin"]:
                continue
            t, r = c["twin"], c["real"]
            own, com, m_r = t["m_own_selection"][()], t["m"][()], r["m"][()]
            err = np.hypot(t["m_err"][()], r["m_err"][()])
        own_d.append(own - m_r)
        com_d.append(com - m_r)
        errs.append(err)
        print(f"| {path.split('/')[-2]} | {own[0] - m_r[0]:+.3f} / {own[1] - m_r[1]:+.3f} | "
              f"{com[0] - m_r[0]:+.3f} / {com[1] - m_r[1]:+.3f} | {err[0]:.3f} / {err[1]:.3f} |")
    o, cm, e = np.array(own_d), np.array(com_d), np.array(errs)
    print(f"chi2 own {((o / e) ** 2).sum():.1f}, common {((cm / e) ** 2).sum():.1f}, dof {o.size}; "
          f"rms own {np.sqrt((o**2).mean()):.4f}, common {np.sqrt((cm**2).mean()):.4f}")


if __name__ == "__main__":
    main()
