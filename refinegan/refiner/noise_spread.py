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

Two bases for the classes (``train.noise_spread``). ``lag1`` (above): the per-stamp variance and
lag-1 correlations. ``spectrum``: the per-stamp variance and the directions along which the
target's per-stamp noise power spectra spread beyond sampling (`stamp_spectra`: the power over
the variance in `SPECTRUM_BINS` x `SPECTRUM_BINS` cells of |k_y|, |k_x|; whitened by the
calibration fields' own scatter, the eigen-directions of the target's whitened covariance above
the same significance), at most `MAX_CLASSES` classes. A coadd's stamps mix several dither
kernels per axis, so one lag-1 comes from several spectra; classes along lag-1 give each the
class's mean spectrum, which a classifier on the per-stamp power spectrum sees (session 19,
docs/benchmarks.md: pure mock noise, `python bench/noise_spread.py --mock 8192`).
"""

from __future__ import annotations

import numpy as np

from ..noise import robust_sigma, sky_mask

__all__ = ["noise_sky", "stamp_noise_stats", "stamp_spectra", "spread_stats", "build_bank",
           "class_bins", "STAT_NAMES", "BASES", "SPREAD_SIGNIFICANCE", "MIN_CLASS_STAMPS",
           "MAX_BINS", "MAX_CLASSES", "SPECTRUM_BINS", "RESOLVED_RATIO"]

STAT_NAMES = ("variance", "lag-1 x", "lag-1 y")
SPREAD_SIGNIFICANCE = 6.0  # standard errors of a spread ratio before the target counts as spread
MIN_CLASS_STAMPS = 32  # fewest target stamps a class covariance is measured on
MAX_BINS = 8  # most quantile classes along one statistic
BASES = ("lag1", "spectrum")  # what the classes are quantiles of (module docstring)
MAX_CLASSES = 64  # most classes of the spectrum basis (a class is 2H x 2W floats in refiner files)
SPECTRUM_BINS = 4  # cells per axis of |k| of `stamp_spectra`
# A spectral direction is classed only where the target's spread along it is at least this times
# the sampling variance (its true spread at least the sampling scatter): classes along a weaker one
# regress to the mean and take classes from the strong ones (the mock's coadds: whitened ratios
# 10, 10, then 1.3; with the third, 5 x 4 x 3 classes in place of 8 x 8 (session 19).
RESOLVED_RATIO = 2.0


def class_bins(levels: np.ndarray, n_stamps: int, max_classes: int | None = None
               ) -> tuple[int, ...]:
    """Quantile classes along each spreading statistic, from ``levels`` (how many sampling sigmas
    each one's true spread spans: sqrt(spread ratio - 1)) and the number of target stamps.

    A few classes per statistic turn a continuous spread into a few spikes that the sampling
    scatter does not fill (the mock's Lanczos coadds with 2 x 2 x 2 classes: two lag-1 values per
    axis, a per-stamp lag-1 distribution a gradient-boosting classifier told from the target's
    with AUC 0.68; with 2 x 8 x 8, 0.51). So the classes go, one at a time, to the statistic with
    the most spread per class, while at least `MIN_CLASS_STAMPS` stamps are left in each and no
    statistic has more than `MAX_BINS` (nor all together more than ``max_classes``, if given);
    each starts with 2 where the stamps allow."""
    levels = np.asarray(levels, dtype=np.float64)
    budget = n_stamps // MIN_CLASS_STAMPS
    if max_classes is not None:
        budget = min(budget, max_classes)
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


def _sky_deviations(images: np.ndarray, border_px: int, bad: np.ndarray | None):
    """Each stamp's sky pixels (`noise_sky`) as weights ``w`` (N, H, W), their number ``nw`` (N,),
    the deviations from the sky mean ``d`` (zero off the sky) and the sky variance ``var`` (N,)."""
    x = np.asarray(images, dtype=np.float64)
    w = noise_sky(x, border_px, bad).astype(np.float64)
    nw = np.maximum(w.sum(axis=(1, 2)), 1.0)
    mean = (x * w).sum(axis=(1, 2)) / nw
    d = (x - mean[:, None, None]) * w
    return d, w, nw, (d * d).sum(axis=(1, 2)) / nw


def stamp_noise_stats(images: np.ndarray, border_px: int = 4, bad: np.ndarray | None = None
                      ) -> np.ndarray:
    """(N, 3) per stamp on its sky pixels (`noise_sky`): noise variance (counts^2) and lag-1
    correlations in x and y (pairs of sky pixels)."""
    d, w, _, var = _sky_deviations(images, border_px, bad)
    with np.errstate(invalid="ignore", divide="ignore"):
        lx = (d[:, :, 1:] * d[:, :, :-1]).sum(axis=(1, 2)) / (w[:, :, 1:] * w[:, :, :-1]).sum(axis=(1, 2))
        ly = (d[:, 1:] * d[:, :-1]).sum(axis=(1, 2)) / (w[:, 1:] * w[:, :-1]).sum(axis=(1, 2))
        return np.column_stack([var, lx / var, ly / var])


def stamp_spectra(images: np.ndarray, border_px: int = 4, bad: np.ndarray | None = None,
                  bins: int = SPECTRUM_BINS) -> np.ndarray:
    """(N, bins^2) per stamp on its sky pixels (`noise_sky`): the noise variance (counts^2), then
    the power over the variance in ``bins`` x ``bins`` cells of (|k_y|, |k_x|) but the lowest
    (the cells sum to a constant), each the mean over its modes of the masked sky's periodogram."""
    d, _, nw, var = _sky_deviations(images, border_px, bad)
    n, h, w = d.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.abs(np.fft.fft2(d)) ** 2 / (nw * var)[:, None, None]
    by = np.minimum((np.abs(np.fft.fftfreq(h)) * 2 * bins).astype(int), bins - 1)
    bx = np.minimum((np.abs(np.fft.fftfreq(w)) * 2 * bins).astype(int), bins - 1)
    onehot = np.eye(bins * bins)[(by[:, None] * bins + bx[None, :]).ravel()]  # (H W, cells)
    cells = p.reshape(n, -1) @ (onehot / onehot.sum(axis=0))  # mean over each cell's modes
    return np.column_stack([var, cells[:, 1:]])


def spread_stats(images: np.ndarray, border_px: int = 4, bad: np.ndarray | None = None,
                 basis: str = "lag1") -> np.ndarray:
    """The per-stamp statistics the classes of ``basis`` are built from (`BASES`):
    `stamp_noise_stats` or `stamp_spectra`, variance first."""
    if basis == "lag1":
        return stamp_noise_stats(images, border_px, bad)
    if basis == "spectrum":
        return stamp_spectra(images, border_px, bad)
    raise ValueError(f"noise spread basis {basis!r}: expected one of {BASES}")


def _spectral_directions(t: np.ndarray, c: np.ndarray, limit: float) -> np.ndarray:
    """(F, k) the directions of the target's spectral columns ``t`` (N, F) whitened by the
    calibration fields' ``c`` (M, F) scatter, along which the target spreads more than ``limit``
    and `RESOLVED_RATIO` times the sampling variance, largest first (F, 0 when none)."""
    w, v = np.linalg.eigh(np.cov(c, rowvar=False))
    w = np.maximum(w, 1e-12 * w.max())
    white = v @ np.diag(w**-0.5) @ v.T
    lam, u = np.linalg.eigh(white @ np.cov(t, rowvar=False) @ white)
    order = np.argsort(-lam)
    keep = order[lam[order] > max(limit, RESOLVED_RATIO)]
    return white @ u[:, keep]


def _coordinates(t_raw: np.ndarray, ok: np.ndarray, c_raw: np.ndarray, basis: str,
                 limit: float) -> tuple[np.ndarray, np.ndarray]:
    """What the classes are quantiles of, for the target (rows ``ok`` of ``t_raw``) and the
    calibration fields (``c_raw``): the variance as a fraction of its median, then the lag-1
    correlations (``lag1``) or the projections on `_spectral_directions` (``spectrum``)."""
    t, c = _scaled(t_raw)[ok], _scaled(c_raw)
    if basis == "lag1":
        return t, c
    c = c[np.isfinite(c).all(axis=1)]
    mu = c[:, 1:].mean(axis=0)
    dirs = _spectral_directions(t[:, 1:], c[:, 1:], limit)
    return (np.column_stack([t[:, 0], (t[:, 1:] - mu) @ dirs]),
            np.column_stack([c[:, 0], (c[:, 1:] - mu) @ dirs]))


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
               bad: np.ndarray | None = None, basis: str = "lag1"
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The class covariances (K, 2H, 2W) and their probabilities (K,) carrying the target's
    stamp-to-stamp spread, or (None, None) when it spreads no more than sampling allows (module
    docstring). ``match`` is the mean `NoiseMatch`; ``gain`` the sky selection's power gain;
    ``cal_stats`` `spread_stats` of the calibration fields (of ``basis``); ``covariance_of``
    measures a set's covariance as the mean's was
    (`refinegan.refiner.noise_match.target_noise_covariance`)."""
    t_raw = spread_stats(real_images, border_px, bad, basis)
    ok = np.isfinite(t_raw).all(axis=1)
    n_t, n_c = int(ok.sum()), len(cal_stats)
    if n_t < 2 * MIN_CLASS_STAMPS:
        return None, None
    limit = 1.0 + SPREAD_SIGNIFICANCE * (np.sqrt(2.0 / n_t) + np.sqrt(2.0 / n_c))
    t_ok, c = _coordinates(t_raw, ok, np.asarray(cal_stats), basis, limit)
    n_dim = t_ok.shape[1]
    s_t = np.array([_clipped_std(t_ok[:, j]) for j in range(n_dim)])
    s_c = np.array([_clipped_std(c[:, j][np.isfinite(c[:, j])]) for j in range(n_dim)])
    ratio = s_t**2 / np.maximum(s_c**2, 1e-300)
    dims = [j for j in range(n_dim) if ratio[j] > limit]
    if not dims:
        return None, None
    bins = class_bins(np.sqrt(ratio[dims] - 1.0), n_t,
                      MAX_CLASSES if basis == "spectrum" else None)
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
    # spread in the variance and in the other coordinates (what is not spread stays the mean's).
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
    rho = rho_mean[None] + scale(set(range(1, n_dim))) * (rho - np.tensordot(p, rho, axes=1)[None])
    return v[:, None, None] * rho, p
