"""Noise estimates shared by target preparation, training and compare: one definition each.

- the **border frame** of a stamp (`frame_mask`, `border_pixels`): pixels within ``width`` of
  the edge;
- the **robust sigma** (`robust_sigma`, `border_sigma`): the median absolute deviation about
  the median, scaled to a Gaussian sigma by `MAD_TO_SIGMA`;
- the **source mask** (`source_mask`, recipe `MaskParams`): smoothed pixels above a threshold
  times the smoothed image's robust sigma, in connected regions of a minimum area, dilated by a
  disc; the **sky mask** (`sky_mask`) is its complement, with the frame as fallback;
- the **noise moments** of the sky pixels (`noise_moments`): mean, std, skewness, kurtosis.

Compare measures noise statistics with `COMPARE_MASK` (the default `MaskParams`), training's
noise anchors measure on the same sky, and the user cutouts' background estimate
(`refinegan.target.sky`) uses `CUTOUT_MASK`, the same recipe with its sigma measured on the sky
found so far, iterated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from .seeds import stream_sequence

__all__ = [
    "MAD_TO_SIGMA",
    "MaskParams",
    "COMPARE_MASK",
    "CUTOUT_MASK",
    "frame_mask",
    "border_pixels",
    "robust_sigma",
    "border_sigma",
    "source_mask",
    "sky_mask",
    "noise_moments",
    "fill_masked",
]

# Gaussian sigma / median absolute deviation, 1 / Phi^-1(3/4) = 1.482602..., rounded to the value
# every stored refinegan mask and noise estimate was computed with (the unrounded constant moves
# 3 of 9.4 million source-mask pixels on the default run's sets, so it would change outputs).
MAD_TO_SIGMA = 1.4826
NOISELESS_PEAK_FRACTION = 1e-3  # noiseless stamps: pixels above this fraction of the peak are source


@dataclass(frozen=True)
class MaskParams:
    """A source-mask recipe (`source_mask`).

    Attributes
    ----------
    threshold_sigma : float
        Detection threshold in units of the smoothed image's robust sigma [default: 2.5].
    smooth_pix : float
        Gaussian smoothing sigma in pixels before detection [default: 1.0].
    dilate_pix : int
        Dilation of the source mask by a disc of this radius, pixels [default: 5; on the
        default sims (white noise) 2 left galaxy wings that raised the lowest-k noise power by
        23 %, 5 by 3 %].
    border_pix : int
        Width of the border frame the smoothed image's sigma is measured on, pixels [default: 4].
    min_area_pix : int
        Detections with fewer connected pixels are noise peaks and stay unmasked [default: 8].
    min_noise_pixels : int
        Fewer sky pixels than this flag a stamp's noise statistics [default: 64].
    connectivity : {4, 8}
        Pixel connectivity of a detection [default: 8].
    sigma_region : {'border', 'good'}
        Where the smoothed image's robust sigma is measured: the border frame (about its
        median), or every good pixel of a background-subtracted stamp (about zero)
        [default: 'border'].
    """

    threshold_sigma: float = 2.5
    smooth_pix: float = 1.0
    dilate_pix: int = 5
    border_pix: int = 4
    min_area_pix: int = 8
    min_noise_pixels: int = 64
    connectivity: int = 8
    sigma_region: str = "border"

    def __post_init__(self) -> None:
        if self.connectivity not in (4, 8):
            raise ValueError(f"MaskParams.connectivity must be 4 or 8, got {self.connectivity!r}")
        if self.sigma_region not in ("border", "good"):
            raise ValueError(f"MaskParams.sigma_region must be 'border' or 'good', got "
                             f"{self.sigma_region!r}")


COMPARE_MASK = MaskParams()
# The user cutouts' sky estimate (refinegan.target.sky): compare's recipe, its detection sigma
# measured on the sky pixels found so far about their background (the stamp is not
# background-subtracted yet and its border frame may lie inside the galaxy).
CUTOUT_MASK = replace(COMPARE_MASK, sigma_region="good")


def frame_mask(shape: tuple[int, int], width: int) -> np.ndarray:
    """(H, W) bool: True within ``width`` pixels of the stamp edge (the border frame)."""
    h, w = int(shape[0]), int(shape[1])
    sel = np.zeros((h, w), bool)
    if width > 0:
        sel[:width] = sel[-width:] = True
        sel[:, :width] = sel[:, -width:] = True
    return sel


def border_pixels(images: np.ndarray, width: int) -> np.ndarray:
    """The border-frame pixels of each stamp, (N, n_frame)."""
    images = np.asarray(images)
    return images[:, frame_mask(images.shape[1:], width)]


def robust_sigma(x: np.ndarray, axis: int = -1, center: float | None = None) -> np.ndarray:
    """``MAD_TO_SIGMA`` x median |x - c| along ``axis``: c is the median of ``x``, or ``center``
    when given (a level known beforehand, e.g. 0 for a background-subtracted image)."""
    x = np.asarray(x)
    c = np.median(x, axis=axis, keepdims=True) if center is None else center
    return MAD_TO_SIGMA * np.median(np.abs(x - c), axis=axis)


def border_sigma(images: np.ndarray, border_px: int = 4) -> np.ndarray:
    """Robust per-stamp noise sigma (N,) float64 from the border frame of ``border_px`` pixels."""
    return robust_sigma(border_pixels(np.asarray(images, dtype=np.float64), border_px))


def source_mask(images: np.ndarray, params: MaskParams = COMPARE_MASK,
                good: np.ndarray | None = None) -> np.ndarray:
    """Boolean (N, H, W) mask, True on source pixels (see the module docstring).

    Parameters
    ----------
    images : ndarray (N, H, W)
        Counts per pixel (bad pixels already filled by the caller).
    params : MaskParams
        The recipe [default: `COMPARE_MASK`].
    good : ndarray (N, H, W) of bool, optional
        Good pixels, for ``params.sigma_region == 'good'`` (the caller has subtracted the
        background) [default: all].

    A stamp whose smoothed sigma is 0 is noiseless: its pixels above
    `NOISELESS_PEAK_FRACTION` of the smoothed peak are the source.
    """
    images = np.asarray(images, dtype=np.float64)
    smooth = ndimage.gaussian_filter(images, sigma=(0, params.smooth_pix, params.smooth_pix))
    if params.sigma_region == "border":
        sigma_s = robust_sigma(border_pixels(smooth, params.border_pix))  # (N,)
    else:
        good = np.ones(images.shape, bool) if good is None else np.asarray(good, bool)
        sigma_s = np.array([robust_sigma(s[g], center=0.0) if g.any() else 0.0
                            for s, g in zip(smooth, good, strict=True)])
    sigma_s = np.where(sigma_s > 0, sigma_s, np.inf)  # noiseless stamps: nothing detected...
    det = smooth > params.threshold_sigma * sigma_s[:, None, None]
    noiseless = ~np.isfinite(sigma_s)  # ...so mask what is above a fraction of the peak instead
    if noiseless.any():
        peak = np.abs(smooth[noiseless]).max(axis=(1, 2), keepdims=True)
        det[noiseless] = np.abs(smooth[noiseless]) > NOISELESS_PEAK_FRACTION * peak
    if params.min_area_pix > 1:
        structure = np.zeros((3, 3, 3), bool)  # connected within each stamp, never along N
        structure[1] = True if params.connectivity == 8 else ndimage.generate_binary_structure(2, 1)
        lab, nlab = ndimage.label(det, structure=structure)
        area = np.bincount(lab.ravel(), minlength=nlab + 1)
        small = area < params.min_area_pix
        small[0] = False
        det &= ~small[lab]
    if params.dilate_pix > 0:
        r = params.dilate_pix
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = (xx**2 + yy**2 <= r * r)[None]  # (1, 2r+1, 2r+1): no extent along N
        det = ndimage.binary_dilation(det, structure=disk)
    return det


def sky_mask(images: np.ndarray, border_px: int, params: MaskParams = COMPARE_MASK
             ) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool sky pixels (outside each stamp's `source_mask`) and (N,) bool of the stamps
    with fewer than ``params.min_noise_pixels`` sky pixels, which get their border frame of
    ``border_px`` pixels instead."""
    sky = ~source_mask(images, params)
    few = sky.sum(axis=(1, 2)) < params.min_noise_pixels
    if few.any():
        sky[few] = frame_mask(sky.shape[1:], border_px)
    return sky, few


def noise_moments(images: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, std (ddof=1), skewness and excess kurtosis of each stamp's pixels outside ``mask``.

    Returns a dict of (N,) arrays: ``noise_mean``, ``noise_std``, ``noise_skew``,
    ``noise_kurt`` (counts, counts, dimensionless, dimensionless) and ``n_noise_pix``.
    """
    w = (~mask).astype(np.float64)
    x = np.asarray(images, dtype=np.float64)
    n = w.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * x).sum(axis=(1, 2)) / n
        d = (x - mean[:, None, None]) * w
        m2 = (d**2).sum(axis=(1, 2)) / n
        m3 = (d**3).sum(axis=(1, 2)) / n
        m4 = (d**4).sum(axis=(1, 2)) / n
        std = np.sqrt(m2 * n / (n - 1))
        skew = m3 / m2**1.5
        kurt = m4 / m2**2 - 3.0
    return {"noise_mean": mean, "noise_std": std, "noise_skew": skew, "noise_kurt": kurt,
            "n_noise_pix": n}


def fill_masked(images: np.ndarray, mask: np.ndarray | None, sigma: np.ndarray,
                seed: int) -> tuple[np.ndarray, int]:
    """Replace bad pixels by white noise of each stamp's sigma.

    Bad pixels (``mask`` non-zero: cosmic rays, hot pixels) become noise so D never learns them
    as a feature of the target and R never learns to add them (training,
    `refinegan.refiner.data`), and compare's pixel CNN does not count them
    (`refinegan.compare.classifiers.cnn_pixels`).

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) counts.
    mask : numpy.ndarray or None
        (N, H, W) integer mask, non-zero = bad.
    sigma : numpy.ndarray
        (N,) noise sigma in counts.
    seed : int
        The run's seed (stream ``mask_fill``).

    Returns
    -------
    images : numpy.ndarray
        The images (a copy when anything changed).
    n : int
        The number of pixels replaced.
    """
    if mask is None or not mask.any():
        return images, 0
    bad = mask != 0  # (N, H, W)
    rng = np.random.default_rng(stream_sequence(seed, "mask_fill"))
    out = images.copy()
    fill = rng.standard_normal(int(bad.sum())).astype(np.float32)
    out[bad] = fill * np.broadcast_to(sigma.astype(np.float32)[:, None, None], bad.shape)[bad]
    return out, int(bad.sum())
