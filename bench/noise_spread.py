"""Does noise matching give the sims the target's stamp-to-stamp noise spread? (issue 15)

For a finished run's directory (``results/<name>/``, with ``real.h5`` and ``sim/``): build the
noise matching from the target stamps as training does (`refinegan.refiner.noise_match`), put
its noise on the sims' own noiseless galaxies (their noise taken out by seed), and compare per
stamp the sky variance and lag-1 correlations x / y with the target's
(`refinegan.refiner.noise_spread.stamp_noise_stats`): two-sample KS per statistic and a
gradient-boosting AUC on the three together (5-fold cross-validated), beside the same between the
two halves of the target (the floor). No training: seconds to a minute per run.

    python bench/noise_spread.py results/panel_noise_only_cand [more runs ...] [--seed 123]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from refinegan.io import read_many, read_stamps
from refinegan.refiner.noise_match import build_noise_match, remove_sim_noise
from refinegan.refiner.noise_spread import stamp_noise_stats


def _auc(a: np.ndarray, b: np.ndarray) -> float:
    x = np.vstack([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    ok = np.isfinite(x).all(axis=1)
    p = cross_val_predict(HistGradientBoostingClassifier(max_iter=100, random_state=0), x[ok], y[ok],
                          cv=5, method="predict_proba")[:, 1]
    return float(roc_auc_score(y[ok], p))


def _ks(a: np.ndarray, b: np.ndarray) -> str:
    return " / ".join(f"{ks_2samp(a[:, j], b[:, j]).statistic:.3f}" for j in range(3))


def check(run: Path, seed: int) -> str:
    real = read_stamps(run / "real.h5")
    sims = read_many(sorted((run / "sim").glob("*.h5")))
    clean = remove_sim_noise(sims.images, sims.labels, int(sims.attrs["seed"]), str(run / "sim"))
    t = stamp_noise_stats(real.images, 4, real.mask)
    match = build_noise_match(real.images, seed, 4, real.mask)
    s = stamp_noise_stats(match.apply(clean, np.zeros(len(clean)), sims.labels), 4)
    half = len(t) // 2
    k = "none" if match.bank is None else str(len(match.bank))
    return (f"| {run.name} | {k} | {_ks(s, t)} | {_auc(s, t):.3f} | {_ks(t[:half], t[half:])} | "
            f"{_auc(t[:half], t[half:]):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="results/<name>/ directories")
    ap.add_argument("--seed", type=int, default=123, help="noise matching seed")
    args = ap.parse_args()
    print("| run | bank classes | KS matched vs target: variance / lag-1 x / y | AUC | "
          "KS target halves | AUC target halves |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        print(check(run, args.seed), flush=True)


if __name__ == "__main__":
    main()
