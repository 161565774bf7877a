"""The target's stamp-to-stamp noise spread, for noise matching (`refinegan.refiner.noise_match`).

Real cutouts do not all have one noise: depth varies over a survey, and a coadd's correlations
depend on each patch's dithers (the mock's Lanczos coadds: lag-1 0.12 +- 0.07 from stamp to
stamp, of which +- 0.024 is the estimate's own scatter on a 48 x 48 stamp). One mean covariance
gives every matched stamp the same noise, which a classifier on per-stamp statistics sees.

`build_bank` measures per stamp the noise variance and the lag-1 correlations in x and y on sky
pixels (`stamp_noise_stats`), and compares their spread (clipped at 5 robust sigmas) with that of pure Gaussian
fields of the mean covariance measured the same way (the calibration fields of
`build_noise_match`, each measured through one target stamp's sky pixels, so with as few pixels as
the target's stamps have: the sampling scatter alone). Where a statistic spreads more than sampling
allows (`SPREAD_SIGNIFICANCE` standard errors), the target's stamps are split into quantile
classes of the spreading statistics (`class_bins`: as many classes as leave `MIN_CLASS_STAMPS`
stamps in each, given to the statistics in proportion to how many sampling sigmas their true
spread spans, at most `MAX_BINS` each), a covariance is measured per class (with the same
selection-bias gain as the mean), split into its variance and its correlation shape, each centred
on the mean's and scaled so that the classes' spread plus the sampling scatter is the target's
observed spread (variance and correlations apart). Each sim noise realisation
then draws one class with the classes' frequencies (stream ``noise_match_class``).
"""

from __future__ import annotations

import numpy as np

from ..noise import robust_sigma, sky_mask

__all__ = ["noise_sky", "stamp_noise_stats", "build_bank", "class_bins", "STAT_NAMES",
           "SPREAD_SIGNIFICANCE", "MIN_CLASS_STAMPS", "MAX_BINS"]

STAT_NAMES = ("variance", "lag-1 x", "lag-1 y")
SPREAD_SIGNIFICANCE = 6.0  # standard errors of a spread ratio before the target counts as spread
MIN_CLASS_STAMPS = 32  # fewest target stamps a class covariance is measured on
MAX_BINS = 8  # most quantile classes along one statistic


def class_bins(levels: np.ndarray, n_stamps: int) -> tuple[int, ...]:
    """Quantile classes along each spreading statistic, from ``levels`` (how many sampling sigmas
    each one's true spread spans: sqrt(spread ratio - 1)) and the number of target stamps.

    A few classes per statistic turn a continuous spread into a few spikes that the sampling
    scatter does not fill (the mock's Lanczos coadds with 2 x 2 x 2 classes: two lag-1 values per
    axis, a per-stamp lag-1 distribution a gradient-boosting classifier told from the target's
    with AUC 0.68; with 2 x 8 x 8, 0.51). So the classes go, one at a time, to the statistic with
    the most spread per class, while at least `MIN_CLASS_STAMPS` stamps are left in each and no
    statistic has more than `MAX_BINS`; each starts with 2 where the stamps allow."""
    levels = np.asarray(levels, dtype=np.float64)
    budget = n_stamps // MIN_CLASS_STAMPS
    bins = [2 if 2 ** len(levels) <= budget else 1] * len(levels)
    while True:
        order = np.argsort(-levels / np.asarray(bins), kind="stable")
        for j in order:
            trial = list(bins)
            trial[j] += 1
            if trial[j] <= MAX_BINS and np.prod(trial) <= budget:
                bins = trial
                break
        else:
            return tuple(bins)


def noise_sky(images: np.ndarray, border_px: int = 4, bad: np.ndarray | None = None
              ) -> np.ndarray:
    """(N, H, W) bool: the pixels noise is measured on, each stamp's sky
    (`refinegan.noise.sky_mask`) less those ``bad`` marks non-zero (the file's /mask: cosmic rays,
    hot pixels are not noise)."""
    sky, _ = sky_mask(np.asarray(images, dtype=np.float64), border_px)
    if bad is not None:
        sky &= np.asarray(bad) == 0
    return sky


def stamp_noise_stats(images: np.ndarray, border_px: int = 4, bad: np.ndarray | None = None
                      ) -> np.ndarray:
    """(N, 3) per stamp on its sky pixels (`noise_sky`): noise variance (counts^2) and lag-1
    correlations in x and y (pairs of sky pixels)."""
    x = np.asarray(images, dtype=np.float64)
    w = noise_sky(x, border_px, bad).astype(np.float64)
    nw = np.maximum(w.sum(axis=(1, 2)), 1.0)
    mean = (x * w).sum(axis=(1, 2)) / nw
    d = (x - mean[:, None, None]) * w
    var = (d * d).sum(axis=(1, 2)) / nw
    with np.errstate(invalid="ignore", divide="ignore"):
        lx = (d[:, :, 1:] * d[:, :, :-1]).sum(axis=(1, 2)) / (w[:, :, 1:] * w[:, :, :-1]).sum(axis=(1, 2))
        ly = (d[:, 1:] * d[:, :-1]).sum(axis=(1, 2)) / (w[:, 1:] * w[:, :-1]).sum(axis=(1, 2))
        return np.column_stack([var, lx / var, ly / var])


def _clipped_std(x: np.ndarray, k: float = 5.0) -> float:
    """The standard deviation of x within k robust sigmas of its median (a stamp with a cosmic
    ray does not set the spread; two populations still count as spread, as a MAD would not)."""
    med, rs = np.median(x), robust_sigma(x)
    return float(np.std(x[np.abs(x - med) <= k * rs])) if rs > 0 else float(np.std(x))


def _scaled(stats: np.ndarray) -> np.ndarray:
    """The variance column as a fraction of its median (the correlations are already so)."""
    out = np.array(stats, dtype=np.float64)
    out[:, 0] = out[:, 0] / np.nanmedian(out[:, 0])
    return out


def build_bank(real_images: np.ndarray, match, gain: np.ndarray, taper: np.ndarray,
               cal_stats: np.ndarray, covariance_of, border_px: int = 4,
               bad: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The class covariances (K, 2H, 2W) and their probabilities (K,) carrying the target's
    stamp-to-stamp spread, or (None, None) when it spreads no more than sampling allows (module
    docstring). ``match`` is the mean `NoiseMatch`; ``gain`` the sky selection's power gain;
    ``cal_stats`` `stamp_noise_stats` of the calibration fields; ``covariance_of`` measures a
    set's covariance as the mean's was (`refinegan.refiner.noise_match.target_noise_covariance`)."""
    t = _scaled(stamp_noise_stats(real_images, border_px, bad))
    c = _scaled(cal_stats)
    ok = np.isfinite(t).all(axis=1)
    t_ok = t[ok]
    n_t, n_c = len(t_ok), len(c)
    if n_t < 2 * MIN_CLASS_STAMPS:
        return None, None
    s_t = np.array([_clipped_std(t_ok[:, j]) for j in range(3)])
    s_c = np.array([_clipped_std(c[:, j][np.isfinite(c[:, j])]) for j in range(3)])
    ratio = s_t**2 / np.maximum(s_c**2, 1e-300)
    limit = 1.0 + SPREAD_SIGNIFICANCE * (np.sqrt(2.0 / n_t) + np.sqrt(2.0 / n_c))
    dims = [j for j in range(3) if ratio[j] > limit]
    if not dims:
        return None, None
    bins = class_bins(np.sqrt(ratio[dims] - 1.0), n_t)
    if np.prod(bins) < 2:
        return None, None
    cls = np.zeros(n_t, dtype=np.int64)
    for j, nb in zip(dims, bins, strict=True):
        q = np.quantile(t_ok[:, j], np.linspace(0, 1, nb + 1)[1:-1])
        cls = cls * nb + np.searchsorted(q, t_ok[:, j], side="right")
    idx = np.flatnonzero(ok)
    covs, p, means = [], [], []
    for k in np.unique(cls):
        sel = idx[cls == k]
        ck = covariance_of(real_images[sel], border_px, None if bad is None else bad[sel])
        ck = np.fft.ifft2(np.fft.fft2(ck * taper).real * gain).real * taper
        covs.append(ck)
        p.append(sel.size / n_t)
        means.append(t_ok[cls == k][:, dims].mean(axis=0))
    covs, p, means = np.asarray(covs), np.asarray(p), np.asarray(means)
    # Each class covariance = its variance x its correlation shape; both centred on the mean's and
    # scaled apart, so that the classes' spread plus the sampling scatter is the target's observed
    # spread in the variance and in the lag-1 correlations (what is not spread stays the mean's).
    between = (p[:, None] * (means - p @ means) ** 2).sum(axis=0)
    excess = s_t[dims] ** 2 - s_c[dims] ** 2

    def scale(which):
        sel = [i for i, j in enumerate(dims) if j in which]
        if not sel:
            return 0.0
        return float(np.clip(np.sqrt(excess[sel].sum() / max(between[sel].sum(), 1e-300)), 0.0, 1.5))

    v = covs[:, 0, 0]
    rho = covs / v[:, None, None]
    v_mean, rho_mean = match.covariance[0, 0], match.covariance / match.covariance[0, 0]
    v = v_mean + scale({0}) * (v - p @ v)
    rho = rho_mean[None] + scale({1, 2}) * (rho - np.tensordot(p, rho, axes=1)[None])
    return v[:, None, None] * rho, p
