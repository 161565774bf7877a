"""Two-sample distances between stamp sets: per-statistic, multivariate, and classifier tests.

- `w1_ks`: Wasserstein-1 (scipy.stats.wasserstein_distance, same units as the statistic) and the
  Kolmogorov-Smirnov statistic and p-value (scipy.stats.ks_2samp), NaNs excluded and counted.
- `energy`: the multivariate energy distance (Szekely & Rizzo) on standardised statistics,
  ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (0 for identical distributions).
- `classifier_auc`: a classifier two-sample test. A classifier is trained to tell set A (label 0)
  from set B (label 1) on a training split and scored by ROC AUC on the held-out split; 0.5 means
  indistinguishable. Splits are group-aware (`group_split`): all stamps of one galaxy (its
  rotated and +/-g twins share ``pair_id``) fall on the same side, so nothing leaks. Repeated over
  several seeds (new split and new classifier each); the error combines the scatter between seeds
  and a bootstrap over held-out groups.
- `paired_classifier_auc`: the same test for two sets A and A2 that pair row for row (R's input
  and R's output on the same stamps) against one B, with the same splits, classifier seeds and
  bootstrap resamples for both, so that the difference AUC(A2 vs B) - AUC(A vs B) carries a
  paired error: the split-to-split and group-to-group scatter that both arms share cancels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.spatial.distance import cdist
from sklearn.metrics import roc_auc_score

__all__ = [
    "w1_ks",
    "energy",
    "group_split",
    "bootstrap_auc",
    "AUCResult",
    "classifier_auc",
    "paired_classifier_auc",
    "PairedAUCResult",
    "gb_fit_predict",
    "gap_closed",
]

logger = logging.getLogger(__name__)


def w1_ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, int]:
    """W1, KS statistic, KS p-value and the number of non-finite values excluded."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    fa, fb = np.isfinite(a), np.isfinite(b)
    n_bad = int((~fa).sum() + (~fb).sum())
    a, b = a[fa], b[fb]
    if len(a) < 2 or len(b) < 2:
        return np.nan, np.nan, np.nan, n_bad
    ks = sps.ks_2samp(a, b)
    return float(sps.wasserstein_distance(a, b)), float(ks.statistic), float(ks.pvalue), n_bad


def energy(
    a: np.ndarray, b: np.ndarray, scale: np.ndarray | None = None, max_n: int = 2000,
    rng: np.random.Generator | None = None,
) -> float:
    """Energy distance between two samples of feature vectors (n, d).

    Rows with any non-finite value are dropped. Features are divided by ``scale`` (default: the
    std of the pooled sample) so each counts equally; at most ``max_n`` rows of each set are used
    (random subsample with ``rng``) to bound the O(n^2) cost.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a[np.isfinite(a).all(axis=1)]
    b = b[np.isfinite(b).all(axis=1)]
    if len(a) < 2 or len(b) < 2:
        return np.nan
    rng = rng or np.random.default_rng(0)
    if len(a) > max_n:
        a = a[rng.choice(len(a), max_n, replace=False)]
    if len(b) > max_n:
        b = b[rng.choice(len(b), max_n, replace=False)]
    if scale is None:
        scale = np.concatenate([a, b]).std(axis=0)
    scale = np.where(np.asarray(scale) > 0, scale, 1.0)
    a, b = a / scale, b / scale
    return float(2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean())


def group_split(
    groups: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean test mask that keeps every group (e.g. ``pair_id``) on one side."""
    uniq = np.unique(groups)
    n_test = max(1, int(round(test_fraction * len(uniq))))
    test_groups = rng.choice(uniq, n_test, replace=False)
    return np.isin(groups, test_groups)


def bootstrap_auc(
    y: np.ndarray, score: np.ndarray, groups: np.ndarray, n_boot: int, rng: np.random.Generator
) -> float:
    """Std of the AUC over bootstrap resamples of held-out groups."""
    return float(_bootstrap_stds(y, [score], groups, n_boot, rng)[0])


def _bootstrap_stds(y, scores, groups, n_boot: int, rng: np.random.Generator) -> list[float]:
    """Std over the same bootstrap resamples of held-out groups of each score's AUC and, for two
    scores, of their difference (second - first); NaN with fewer than 2 usable resamples."""
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        if len(np.unique(y[idx])) == 2:
            a = [roc_auc_score(y[idx], sc[idx]) for sc in scores]
            out.append(a + ([a[1] - a[0]] if len(a) == 2 else []))
    k = 1 if len(scores) == 1 else 3
    if len(out) < 2:
        return [np.nan] * k
    return [float(v) for v in np.std(np.asarray(out), axis=0, ddof=1)]


@dataclass
class AUCResult:
    """Held-out AUC over seeds. ``err`` = sqrt((seed_std^2 + mean boot_err^2) / n_seeds)."""

    auc: float
    err: float
    seed_aucs: np.ndarray  # (n_seeds,)
    boot_errs: np.ndarray  # (n_seeds,)
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return {"auc": self.auc, "err": self.err, "seed_aucs": self.seed_aucs,
                "boot_errs": self.boot_errs, "n_a": self.n_a, "n_b": self.n_b}


FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def gb_fit_predict(x_train, y_train, x_test, seed: int, max_iter: int = 100,
                   threads: int = 1) -> np.ndarray:
    """Gradient-boosting scores (HistGradientBoostingClassifier handles NaN features).

    OpenMP threads are limited to ``threads`` for the call (threadpoolctl): on a loaded 2-core
    machine one thread took 0.13 s where the default took 10-18 s (spinning OpenMP workers).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    # sklearn's default min_samples_leaf=20 allows no split at all on tiny training sets
    leaf = int(min(20, max(2, len(x_train) // 20)))
    clf = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed,
                                         early_stopping=False, min_samples_leaf=leaf)
    with threadpool_limits(limits=threads):
        clf.fit(x_train, y_train)
        return clf.predict_proba(x_test)[:, 1]


def classifier_auc(
    xa: np.ndarray,
    xb: np.ndarray,
    groups_a: np.ndarray,
    groups_b: np.ndarray,
    *,
    fit_predict: FitPredict = gb_fit_predict,
    seeds: int = 3,
    test_fraction: float = 0.5,
    n_boot: int = 200,
    rng: np.random.Generator,
) -> AUCResult:
    """Held-out AUC of a classifier telling A (label 0) from B (label 1), over ``seeds`` seeds.

    Parameters
    ----------
    xa, xb : ndarray (n_a, ...), (n_b, ...)
        Features (or stamps) of each set.
    groups_a, groups_b : ndarray (n_a,), (n_b,)
        Group of each row (``pair_id``; the row index when there are no pairs). Groups of A and B
        are split independently, each keeping its members together.
    fit_predict : callable
        ``(x_train, y_train, x_test, seed) -> score`` for the test rows.
    seeds : int
        Independent splits and classifiers [default: 3].
    test_fraction : float
        Fraction of groups held out [default: 0.5].
    n_boot : int
        Bootstrap resamples of held-out groups per seed [default: 200].
    rng : numpy.random.Generator
    """
    if _too_few_groups(groups_a, groups_b, "classifier test", len(xa), len(xb)):
        return _nan_result(seeds, len(xa), len(xb))
    aucs, errs, err = _over_seeds([xa], xb, groups_a, groups_b, fit_predict, seeds, test_fraction,
                                  n_boot, rng)
    return _arm(aucs, errs, err, 0, len(xa), len(xb))


def _too_few_groups(groups_a, groups_b, what: str, n_a: int, n_b: int) -> bool:
    """True (and a warning) when A or B holds fewer than 2 galaxy groups: no split possible."""
    if len(np.unique(groups_a)) < 2 or len(np.unique(groups_b)) < 2:
        logger.warning("%s skipped: fewer than 2 galaxy groups in a set (%d, %d stamps)", what,
                       n_a, n_b)
        return True
    return False


def _nan_result(seeds: int, n_a: int, n_b: int) -> AUCResult:
    nan = np.full(seeds, np.nan)
    return AUCResult(np.nan, np.nan, nan, nan, n_a, n_b)


def _arm(aucs: np.ndarray, errs: np.ndarray, err: np.ndarray, j: int, n_a: int, n_b: int) -> AUCResult:
    """Column ``j`` of `_over_seeds`'s output as an `AUCResult`."""
    return AUCResult(float(aucs[:, j].mean()), float(err[j]), aucs[:, j], errs[:, j], n_a, n_b)


def _over_seeds(arms, xb, groups_a, groups_b, fit_predict, seeds, test_fraction, n_boot, rng):
    """The seed loop of `classifier_auc` for one or two arms (sets A, A2 that share their rows'
    groups) against B: per seed one group-aware split and one classifier seed for every arm, and
    one bootstrap of the held-out groups. Returns ``aucs``, ``boot_errs`` (seeds, k) and ``err``
    (k,) = sqrt((seed variance + mean boot_err^2) / seeds), k = 1, or 3 for two arms (A, A2, and
    A2 - A)."""
    y = np.r_[np.zeros(len(arms[0])), np.ones(len(xb))].astype(np.int64)
    xs = [np.concatenate([xa, xb]) for xa in arms]
    # groups of B are offset so they never coincide with groups of A
    ga = np.unique(np.asarray(groups_a), return_inverse=True)[1]
    gb = np.unique(np.asarray(groups_b), return_inverse=True)[1] + ga.max() + 1
    groups = np.r_[ga, gb]
    aucs, errs = [], []
    for _ in range(seeds):
        test = np.r_[group_split(ga, test_fraction, rng), group_split(gb, test_fraction, rng)]
        seed = int(rng.integers(0, 2**31 - 1))
        scores = [fit_predict(x[~test], y[~test], x[test], seed) for x in xs]
        a = [roc_auc_score(y[test], sc) for sc in scores]
        aucs.append(a + ([a[1] - a[0]] if len(a) == 2 else []))
        errs.append(_bootstrap_stds(y[test], scores, groups[test], n_boot, rng))
    aucs, errs = np.asarray(aucs), np.asarray(errs)
    seed_var = aucs.var(axis=0, ddof=1) if seeds > 1 else np.zeros(aucs.shape[1])
    return aucs, errs, np.sqrt((seed_var + np.nanmean(errs**2, axis=0)) / seeds)


@dataclass
class PairedAUCResult:
    """`paired_classifier_auc`: each arm's `AUCResult` and their paired difference ``diff`` =
    AUC(A2 vs B) - AUC(A vs B), ``err`` = sqrt((seed_std(diff)^2 + mean boot_err(diff)^2) /
    n_seeds), ``seed_diffs`` (n_seeds,)."""

    first: AUCResult
    second: AUCResult
    diff: float
    err: float
    seed_diffs: np.ndarray


def paired_classifier_auc(
    xa: np.ndarray,
    xa2: np.ndarray,
    xb: np.ndarray,
    groups_a: np.ndarray,
    groups_b: np.ndarray,
    *,
    fit_predict: FitPredict = gb_fit_predict,
    seeds: int = 3,
    test_fraction: float = 0.5,
    n_boot: int = 200,
    rng: np.random.Generator,
) -> PairedAUCResult:
    """`classifier_auc` of A vs B and of A2 vs B, paired: A2 holds the same stamps as A, changed
    (R's output on R's input), so row i of A2 takes row i of A's place in every split.

    Each seed draws one split (groups of A, which are A2's, and groups of B) and one classifier
    seed, trains a classifier on each arm's training rows with them, and bootstraps the held-out
    groups once for both arms. With A2 identical to A the two arms are the same computation and
    the difference is exactly 0 +- 0. Parameters as `classifier_auc`; ``rng`` is drawn as there
    (split, seed, bootstrap per seed), so the first arm's AUCs are those `classifier_auc` gives
    for the same draws.
    """
    xa, xa2 = np.asarray(xa), np.asarray(xa2)
    if xa.shape != xa2.shape:
        raise ValueError(f"paired classifier test: the two arms differ in shape ({xa.shape} vs "
                         f"{xa2.shape}); they must hold the same stamps, row for row")
    if _too_few_groups(groups_a, groups_b, "paired classifier test", len(xa), len(xb)):
        r = _nan_result(seeds, len(xa), len(xb))
        return PairedAUCResult(r, r, np.nan, np.nan, r.seed_aucs)
    aucs, errs, err = _over_seeds([xa, xa2], xb, groups_a, groups_b, fit_predict, seeds,
                                  test_fraction, n_boot, rng)
    diff = _arm(aucs, errs, err, 2, len(xa), len(xb))
    return PairedAUCResult(_arm(aucs, errs, err, 0, len(xa), len(xb)),
                           _arm(aucs, errs, err, 1, len(xa2), len(xb)), diff.auc, diff.err,
                           diff.seed_aucs)


def gap_closed(d_sim: np.ndarray, d_refined: np.ndarray) -> np.ndarray:
    """``1 - d(refined, real) / d(sim, real)``: 1 = gap closed, 0 = unchanged, < 0 = worse."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - np.asarray(d_refined, float) / np.asarray(d_sim, float)
