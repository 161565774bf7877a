"""Does noise matching give the sims the target's stamp-to-stamp noise spread? (issue 15)

For a finished run's directory (``results/<name>/``, with ``real.h5`` and ``sim/``): build the
noise matching from the target stamps as training does (`refinegan.refiner.noise_match`), put
its noise on the sims' own noiseless galaxies (their noise taken out by seed), and compare per
stamp the sky variance and lag-1 correlations x / y with the target's
(`refinegan.refiner.noise_spread.stamp_noise_stats`): two-sample KS per statistic and a
gradient-boosting AUC on the three together (5-fold cross-validated), beside the same between the
two halves of the target (the floor). No training: seconds to a minute per run.

    python bench/noise_spread.py results/panel_noise_only_cand [more runs ...] [--seed 123]

``--mock N`` needs no run: for each distinct noise of the panel (config/targets/*.yaml and the
default target), N stamps of the mock's noise alone (`refinegan.target.observe.correlated_noise`)
are the target, noise matching is built from them, and its noise (N fields, with the bank of
classes of each basis, ``train.noise_spread``, and with one mean covariance) is told from the target by gradient boosting on the noise
statistics compare's ``gb_noise`` test uses (`refinegan.compare.stats.image_stats`: sky mean,
std, skewness, kurtosis, lag-1 x / y / diagonal correlations and the 12-annulus power spectrum
over the variance), beside a second draw of the target (the floor). Held-out AUC over
``--splits`` random halves, with the error of one (a bootstrap of its held-out rows). Pure
noise isolates the noise model: no galaxies, no training, ~15 minutes at N = 8192 on 2 cores (session 19: compare's gb_noise told refined
``noise_only`` stamps from the target at 0.55 with 65,536 stamps, and this finds it in noise
alone).

    python bench/noise_spread.py --mock 8192 [--splits 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from refinegan.compare.params import NOISE_STATS
from refinegan.compare.stats import image_stats
from refinegan.config import load_config
from refinegan.io import read_many, read_stamps
from refinegan.refiner.noise_match import build_noise_match, remove_sim_noise
from refinegan.refiner.noise_spread import BASES, stamp_noise_stats
from refinegan.target.observe import correlated_noise

ROOT = Path(__file__).resolve().parents[1]


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


def mock_noise(spec: dict, n: int, shape: tuple[int, int], pixel_scale: float,
               seed: int) -> np.ndarray:
    """(n, H, W) float64 stamps of the mock's noise ``spec`` (``real.noise``) alone, one
    generator per stamp from ``seed``."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
    out = [correlated_noise(rngs[i:i + 1024], shape, float(spec["sigma"]), spec, pixel_scale)[0]
           for i in range(0, n, 1024)]
    return np.concatenate(out).astype(np.float64)


def noise_features(images: np.ndarray) -> np.ndarray:
    """(N, F) compare's gb_noise features of pure-noise stamps (`refinegan.compare.classifiers`):
    the noise statistics, then the power spectrum over the variance; non-finite values NaN."""
    cols, powers = [], []
    for i in range(0, len(images), 1024):
        sc, pw, _ = image_stats(images[i:i + 1024])
        cols.append(np.stack([sc[k] for k in NOISE_STATS], axis=1))
        powers.append(pw / sc["noise_std"][:, None] ** 2)
    x = np.concatenate([np.concatenate(cols), np.concatenate(powers)], axis=1)
    return np.where(np.isfinite(x), x, np.nan)


def split_auc(a: np.ndarray, b: np.ndarray, splits: int, n_boot: int = 100) -> tuple[float, float]:
    """Held-out AUC of gradient boosting telling rows of ``a`` from ``b`` (independent stamps:
    no groups), the mean over ``splits`` random halves, and its error: the rms over splits of a
    bootstrap of the held-out rows. The splits share one draw of the data, so their scatter alone
    (the sem) would leave out the data's own sampling: 0.002 where this gives 0.006 at 8,192."""
    aucs, boots = [], []
    for s in range(splits):
        rng = np.random.default_rng(s)
        ta, tb = rng.random(len(a)) < 0.5, rng.random(len(b)) < 0.5
        x_tr, x_te = np.vstack([a[~ta], b[~tb]]), np.vstack([a[ta], b[tb]])
        y_tr = np.r_[np.zeros((~ta).sum()), np.ones((~tb).sum())]
        y_te = np.r_[np.zeros(ta.sum()), np.ones(tb.sum())]
        clf = HistGradientBoostingClassifier(max_iter=100, random_state=s, early_stopping=False)
        score = clf.fit(x_tr, y_tr).predict_proba(x_te)[:, 1]
        aucs.append(roc_auc_score(y_te, score))
        idx = rng.integers(0, len(y_te), (n_boot, len(y_te)))
        boots.append(np.std([roc_auc_score(y_te[i], score[i]) for i in idx], ddof=1))
    return float(np.mean(aucs)), float(np.sqrt(np.mean(np.square(boots))))


def panel_noises() -> dict[str, dict]:
    """The distinct ``real.noise`` of the default target and the panel's, by the targets that
    have each."""
    out: dict[str, tuple[list[str], dict]] = {}
    for path in [None, *sorted((ROOT / "config" / "targets").glob("*.yaml"))]:
        files = [ROOT / "config" / "config.yaml"] + ([path] if path else [])
        spec = dict(load_config(files)["real"]["noise"])
        key = repr(sorted(spec.items()))
        out.setdefault(key, ([], spec))[0].append(path.stem if path else "default")
    return {", ".join(names): spec for names, spec in out.values()}


def check_mock(name: str, spec: dict, n: int, splits: int, seed: int) -> str:
    """One row: noise matching with the bank of each basis (`refinegan.refiner.noise_spread.
    BASES`), with one mean covariance, and a second draw of the target, each against the target."""
    base = load_config(ROOT / "config" / "config.yaml")
    shape = (base.stamp_size, base.stamp_size)
    target = mock_noise(spec, n, shape, base.pixel_scale, seed)
    again = mock_noise(spec, n, shape, base.pixel_scale, seed + 1)
    lab = {"pair_id": np.arange(n), "rot90": np.zeros(n, int)}
    zeros, sims_sigma = np.zeros((n, *shape)), np.zeros(n)
    matches = [build_noise_match(target, seed, spread_basis=b) for b in BASES]
    matches.append(build_noise_match(target, seed, spread=False))
    sets = [m.apply(zeros, sims_sigma, lab) for m in matches] + [again]
    ft = noise_features(target)
    cells = [split_auc(ft, noise_features(np.asarray(x, np.float64)), splits) for x in sets]
    k = " / ".join("none" if m.bank is None else str(len(m.bank)) for m in matches[:-1])
    desc = f"{spec['correlation']} {spec['sigma']:g}" + (
        f", {spec['n_exposures']} exposures" if spec["correlation"] == "lanczos" else "")
    return (f"| {name} | {desc} | {k} | " + " | ".join(f"{m:.3f} +- {e:.3f}" for m, e in cells)
            + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="results/<name>/ directories")
    ap.add_argument("--seed", type=int, default=123, help="noise matching seed")
    ap.add_argument("--mock", type=int, default=0, metavar="N",
                    help="pure mock noise, N stamps per panel noise, instead of runs")
    ap.add_argument("--splits", type=int, default=5, help="random halves per AUC (--mock)")
    args = ap.parse_args()
    if args.mock:
        print(f"Pure noise, {args.mock} stamps per set; AUC of gradient boosting on compare's "
              f"gb_noise features, mean over {args.splits} splits +- one split's bootstrap error.")
        print("| targets | noise | bank classes " + " / ".join(BASES) + " | "
              + " | ".join(f"AUC matched, {b} classes" for b in BASES)
              + " | AUC one covariance | AUC target vs target (floor) |")
        print("|---|---|---|" + "---|" * (len(BASES) + 2))
        for name, spec in panel_noises().items():
            print(check_mock(name, spec, args.mock, args.splits, args.seed), flush=True)
        return
    if not args.runs:
        ap.error("give run directories, or --mock N")
    print("| run | bank classes | KS matched vs target: variance / lag-1 x / y | AUC | "
          "KS target halves | AUC target halves |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        print(check(run, args.seed), flush=True)


if __name__ == "__main__":
    main()
