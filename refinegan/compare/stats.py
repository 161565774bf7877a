"""Per-image statistics of postage stamps (docs/compare.md defines each one).

Everything here works on a block of stamps ``images`` of shape (N, H, W) in counts and is
vectorised over N except the HSM adaptive moments (a C++ call per stamp). Failed measurements are
NaN with a per-image flag; nothing is dropped.

Source masking (shared by every noise statistic): the stamp is smoothed with a Gaussian of
``smooth_pix`` pixels, pixels above ``threshold_sigma`` times the smoothed noise (a robust MAD
estimate from the stamp border) are the source, and the source is dilated by ``dilate_pix`` pixels.
The remaining pixels are "noise pixels".
"""

from __future__ import annotations

import logging

import galsim
import numpy as np

from ..noise import COMPARE_MASK, MaskParams, noise_moments, source_mask

__all__ = [
    "power_spectrum",
    "autocorrelation",
    "hsm_moments",
    "half_light_radius",
    "pixel_histogram",
    "image_stats",
    "sky_noise_std",
    "FLAG_HSM",
    "FLAG_NOISE",
]

logger = logging.getLogger(__name__)

FLAG_HSM = 1  # bit: HSM adaptive moments failed
FLAG_NOISE = 2  # bit: fewer than MaskParams.min_noise_pixels noise pixels
FLAG_NONFINITE = 4  # bit: the stamp has non-finite pixels (set to 0 for the statistics)


def radial_bins(shape: tuple[int, int], nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of each FFT pixel by |k| (cycles/pixel) in [0, 0.5]; -1 for DC and corners."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    k = np.hypot(kx, ky)
    edges = np.linspace(0.0, 0.5, nbins + 1)
    idx = np.minimum(np.digitize(k, edges) - 1, nbins - 1)  # k = 0.5 goes in the last annulus
    idx[(k == 0) | (k > 0.5)] = -1
    return idx, 0.5 * (edges[1:] + edges[:-1])


def power_spectrum(
    images: np.ndarray, mask: np.ndarray, nbins: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of each stamp's noise pixels.

    The mean of the noise pixels is subtracted, source pixels are set to zero, and
    ``P(k) = |FFT(x w)|^2 / sum(w)`` is averaged in annuli of |k| (the DC term excluded). For
    white noise of variance s^2 the expectation is s^2 at every k (counts^2).

    Returns
    -------
    k : ndarray (nbins,)
        Annulus centres, cycles per pixel.
    power : ndarray (N, nbins)
        counts^2.
    """
    w = (~mask).astype(np.float64)
    x = np.asarray(images, dtype=np.float64)
    n = w.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * x).sum(axis=(1, 2)) / n
        f = np.fft.fft2((x - mean[:, None, None]) * w)
        p2 = (f.real**2 + f.imag**2) / n[:, None, None]  # (N, H, W)
    idx, k = radial_bins(x.shape[1:], nbins)
    onehot = np.zeros((idx.size, nbins))
    good = idx.ravel() >= 0
    onehot[np.flatnonzero(good), idx.ravel()[good]] = 1.0
    counts = onehot.sum(axis=0)
    power = p2.reshape(len(x), -1) @ onehot / np.where(counts > 0, counts, np.nan)
    return k, power


def autocorrelation(images: np.ndarray, mask: np.ndarray, max_lag: int = 3) -> np.ndarray:
    """Normalised 2-D autocorrelation of each stamp's noise pixels, lags -L..L.

    ``rho(dy, dx) = [sum x(p) x(p+d) / npairs(d)] / [sum x(p)^2 / npix]`` over pairs of noise
    pixels (noise-pixel mean subtracted; direct sums over the overlapping region, nothing wraps).
    Returns (N, 2L+1, 2L+1) with rho[:, L, L] = 1; rho[:, L, L+1] is the x-lag-1 correlation.
    rho(-d) = rho(d), so only half the lags are summed.
    """
    w = (~mask).astype(np.float64)
    x = np.asarray(images, dtype=np.float64)
    n, h, wd = x.shape
    big = max_lag
    out = np.full((n, 2 * big + 1, 2 * big + 1), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * x).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
        xw = (x - mean[:, None, None]) * w
        for dy in range(0, big + 1):
            for dx in range(-big, big + 1):
                if dy == 0 and dx < 0:
                    continue
                a = (slice(None), slice(0, h - dy), slice(max(0, -dx), wd - max(0, dx)))
                b = (slice(None), slice(dy, h), slice(max(0, dx), wd - max(0, -dx)))
                num = np.einsum("nij,nij->n", xw[a], xw[b])
                pairs = np.einsum("nij,nij->n", w[a], w[b])
                val = num / np.where(pairs > 0, pairs, np.nan)
                out[:, big + dy, big + dx] = val
                out[:, big - dy, big - dx] = val
        return out / out[:, big, big][:, None, None]


def hsm_moments(
    images: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """HSM adaptive moments (Bernstein & Jarvis 2002) of each stamp, one GalSim call per stamp.

    Returns (N,) arrays: ``hsm_sigma`` (pixels, sqrt of the adaptive second-moment determinant),
    ``hsm_g1``, ``hsm_g2`` (observed shape, reduced-shear convention |g|=(a-b)/(a+b)),
    ``hsm_dx``, ``hsm_dy`` (centroid offset from the stamp centre, pixels), ``hsm_flux`` (flux of
    the best-fit elliptical Gaussian, counts) and ``hsm_status`` (0 = success). Failures are NaN.
    """
    n, h, w = images.shape
    names = ("hsm_sigma", "hsm_g1", "hsm_g2", "hsm_dx", "hsm_dy", "hsm_flux")
    out = {k: np.full(n, np.nan) for k in names}
    status = np.zeros(n, np.int16)
    centre = galsim.PositionD((w + 1) / 2.0, (h + 1) / 2.0)  # GalSim images start at pixel 1
    for i in range(n):
        img = galsim.Image(np.ascontiguousarray(images[i], dtype=np.float64))
        badpix = None
        if mask is not None and mask[i].any():
            badpix = galsim.Image(np.ascontiguousarray(mask[i], dtype=np.int32))
        res = galsim.hsm.FindAdaptiveMom(img, badpix=badpix, strict=False)
        if res.moments_status != 0 or res.moments_sigma <= 0:
            status[i] = res.moments_status if res.moments_status != 0 else -1
            logger.debug("HSM failed on stamp %d: %s", i, res.error_message.strip())
            continue
        out["hsm_sigma"][i] = res.moments_sigma
        out["hsm_g1"][i] = res.observed_shape.g1
        out["hsm_g2"][i] = res.observed_shape.g2
        out["hsm_dx"][i] = res.moments_centroid.x - centre.x
        out["hsm_dy"][i] = res.moments_centroid.y - centre.y
        out["hsm_flux"][i] = res.moments_amp
    out["hsm_status"] = status
    return out


HLR_APERTURE_SIGMAS = 4.0  # aperture radius of `half_light_radius`, in HSM sigmas


def half_light_radius(
    images: np.ndarray, dx: np.ndarray, dy: np.ndarray, sigma: np.ndarray,
    aperture_sigmas: float = HLR_APERTURE_SIGMAS,
) -> np.ndarray:
    """Circular half-light radius (pixels) within an aperture around the HSM centroid.

    The aperture has radius ``aperture_sigmas`` x HSM sigma (capped at the stamp half-size);
    the radius enclosing half of the aperture flux is interpolated on the curve of growth of the
    pixel centres sorted by distance. For a Gaussian of sigma s it is 1.1774 s (99.97 % of the
    flux is inside 4 s). NaN where HSM failed or the aperture flux is not positive.
    """
    n, h, w = images.shape
    yy, xx = np.mgrid[0:h, 0:w]
    cx = (w - 1) / 2.0 + np.nan_to_num(dx)  # array index of the centroid
    cy = (h - 1) / 2.0 + np.nan_to_num(dy)
    r = np.hypot(xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]).reshape(n, -1)
    r_ap = np.minimum(aperture_sigmas * np.nan_to_num(sigma, nan=0.0), min(h, w) / 2.0)
    f = np.where(r <= r_ap[:, None], np.asarray(images, np.float64).reshape(n, -1), 0.0)
    order = np.argsort(r, axis=1)
    rs = np.take_along_axis(r, order, axis=1)
    fs = np.take_along_axis(f, order, axis=1)
    cum = np.cumsum(fs, axis=1) - 0.5 * fs  # each pixel's flux centred on its own radius
    total = fs.sum(axis=1)
    half = 0.5 * total
    out = np.full(n, np.nan)
    for i in np.flatnonzero(np.isfinite(sigma) & (total > 0)):
        j = int(np.argmax(cum[i] >= half[i]))  # first pixel reaching half the flux
        if j == 0:
            out[i] = rs[i, 0]
            continue
        c0, c1 = cum[i, j - 1], cum[i, j]
        t = (half[i] - c0) / (c1 - c0) if c1 > c0 else 0.0
        out[i] = rs[i, j - 1] + t * (rs[i, j] - rs[i, j - 1])
    return out


def pixel_histogram(
    images: np.ndarray, scale: float, edges: np.ndarray
) -> np.ndarray:
    """Counts of ``asinh(pixel / scale)`` in ``edges`` (outliers go to the end bins)."""
    v = np.arcsinh(np.asarray(images, dtype=np.float64).ravel() / scale)
    v = np.clip(v, edges[0], edges[-1])
    return np.histogram(v, bins=edges)[0]


def _noise_block(images: np.ndarray, bad: np.ndarray | None, params: MaskParams):
    """The stamps with non-finite pixels zeroed, the bad and excluded (source or bad) masks, the
    noise moments of the sky pixels and which stamps have too few of them."""
    x = np.asarray(images, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, 0.0)
    bad = (~finite) if bad is None else (np.asarray(bad, bool) | ~finite)
    excl = source_mask(x, params) | bad
    out = noise_moments(x, excl)
    return x, bad, excl, out, out["n_noise_pix"] < params.min_noise_pixels


def sky_noise_std(images: np.ndarray, bad: np.ndarray | None, params: MaskParams) -> np.ndarray:
    """(N,) noise std of the source-masked sky pixels, exactly `image_stats`' ``noise_std``
    (NaN with fewer than ``params.min_noise_pixels`` of them), without the other statistics."""
    _, _, _, out, low = _noise_block(images, bad, params)
    std = out["noise_std"]
    std[low] = np.nan
    return std


def image_stats(
    images: np.ndarray,
    bad: np.ndarray | None = None,
    params: MaskParams = COMPARE_MASK,
    *,
    ps_bins: int = 12,
    acf_lag: int = 3,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """All cheap per-image statistics of a block of stamps.

    Parameters
    ----------
    images : ndarray (N, H, W)
        Counts per pixel.
    bad : ndarray (N, H, W) of bool, optional
        Bad pixels (the file's /mask); excluded from noise statistics and HSM.
    params : MaskParams
        Source masking.
    ps_bins : int
        Annuli of the noise power spectrum [default: 12].
    acf_lag : int
        Largest autocorrelation lag, pixels [default: 3].

    Returns
    -------
    scalars : dict of str to (N,) arrays
        flux, peak_snr, noise_*, acf_10, acf_01, acf_11, hsm_*, hlr_pix, flags (FLAG_HSM,
        FLAG_NOISE, FLAG_NONFINITE).
    power : (N, ps_bins) noise power spectrum, counts^2
    acf : (N, 2L+1, 2L+1) noise autocorrelation
    """
    x, bad, excl, out, low = _noise_block(images, bad, params)
    flags = np.zeros(len(x), np.uint8)
    flags[~np.isfinite(np.asarray(images)).all(axis=(1, 2))] |= FLAG_NONFINITE
    flags[low] |= FLAG_NOISE
    for key in ("noise_std", "noise_skew", "noise_kurt", "noise_mean"):
        out[key][low] = np.nan
    _, power = power_spectrum(x, excl, ps_bins)
    acf = autocorrelation(x, excl, acf_lag)
    power[low] = np.nan
    acf[low] = np.nan
    out["acf_10"] = acf[:, acf_lag, acf_lag + 1]  # x-lag 1
    out["acf_01"] = acf[:, acf_lag + 1, acf_lag]  # y-lag 1
    out["acf_11"] = acf[:, acf_lag + 1, acf_lag + 1]
    out["flux"] = np.where(bad, 0.0, x).sum(axis=(1, 2))  # bad pixels count as sky (0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["peak_snr"] = np.where(bad, -np.inf, x).max(axis=(1, 2)) / out["noise_std"]
    hsm = hsm_moments(x, bad if bad.any() else None)
    flags[hsm["hsm_status"] != 0] |= FLAG_HSM
    out.update(hsm)
    out["hlr_pix"] = half_light_radius(np.where(bad, 0.0, x), hsm["hsm_dx"], hsm["hsm_dy"],
                                       hsm["hsm_sigma"])
    out["flags"] = flags
    return out, power, acf
