"""Sky background and noise of one user cutout, from its source-masked pixels (``real.fits`` /
``real.hdf5``; issue 16 item 6).

The sources are masked with compare's recipe (`refinegan.noise.COMPARE_MASK`: 2.5 sigma of the
1-pixel-smoothed image, 8-connected regions of at least 8 pixels, dilated by 5 pixels), its
threshold measured on the sky pixels found so far about the background found so far
(`refinegan.noise.CUTOUT_MASK`),
and the mask is iterated to a fixed point: a galaxy that fills most of the stamp first inflates
the threshold and the level, each pass masks more of it, and the sky left at the end is the
stamp's own (an SDSS stamp inside its galaxy had 187 counts subtracted against a sky of 5-7 with
the earlier single pass). The background is the median of those pixels after astropy's 3-sigma
clipping (cosmic rays, undetected faint sources), the noise their `refinegan.noise.robust_sigma`.

Fewer sky pixels than `MIN_SKY_PIXELS`, or than `MIN_SKY_FRACTION` of the good pixels, and the
stamp has no measurable sky (a stamp inside a galaxy): `SkyEstimate.ok` is False and the
caller subtracts nothing (label ``sky_ok`` 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clip

from ..noise import COMPARE_MASK, CUTOUT_MASK, robust_sigma, source_mask

__all__ = ["MIN_SKY_PIXELS", "MIN_SKY_FRACTION", "SkyEstimate", "estimate_sky",
           "plane_sigma"]

MIN_SKY_PIXELS = COMPARE_MASK.min_noise_pixels  # 64: fewer and compare flags the noise statistics too
MIN_SKY_FRACTION = 0.1  # ... and at least this fraction of the stamp's good pixels
SKY_CLIP_SIGMA = 3.0  # astropy sigma_clip of the sky pixels, about their median, in MAD sigmas
SKY_CLIP_ITERS = 5
SKY_MAX_ITER = 20  # mask passes at most; a galaxy filling 84 % of a 64-pixel stamp takes 4-5
SKY_SETTLED_FRACTION = 0.01  # fewer sky pixels than this fraction of the good ones changed: done
# (the mask's edge on such a galaxy flips about 0.4 % of the pixels back and forth between passes)


@dataclass(frozen=True)
class SkyEstimate:
    """What `estimate_sky` measured on one stamp.

    Attributes
    ----------
    background : float
        Sky level, counts per pixel (NaN when no good pixel).
    noise_sigma : float
        Robust noise sigma of the sky pixels, counts.
    n_sky : int
        Sky pixels (good, outside the source mask) the estimate used.
    ok : bool
        ``n_sky`` reached `MIN_SKY_PIXELS` and `MIN_SKY_FRACTION` of the good pixels.
    sky : ndarray (H, W) of bool
        The sky pixels.
    """

    background: float
    noise_sigma: float
    n_sky: int
    ok: bool
    sky: np.ndarray


def _sky_stats(values: np.ndarray) -> tuple[float, float]:
    """Background: the median of ``values`` after astropy's iterative 3-sigma clipping about the
    median (a positive tail of undetected sources pulls it less); noise: `robust_sigma` of all
    of them (the MAD ignores such tails already, and clipping would lower it: by 0.35 % on
    Gaussian noise)."""
    kept = sigma_clip(values, sigma=SKY_CLIP_SIGMA, maxiters=SKY_CLIP_ITERS, cenfunc="median",
                      stdfunc="mad_std", masked=False)
    return float(np.median(kept if kept.size else values)), float(robust_sigma(values))


def estimate_sky(image: np.ndarray, bad: np.ndarray) -> SkyEstimate:
    """Background and noise of one (H, W) stamp from its source-masked good pixels (module doc).

    Parameters
    ----------
    image : ndarray (H, W)
        Counts per pixel, not background-subtracted.
    bad : ndarray (H, W) of bool
        Bad pixels (never sky).
    """
    image = np.asarray(image, dtype=np.float64)
    good = ~np.asarray(bad, bool) & np.isfinite(image)
    n_good = int(good.sum())
    if n_good == 0:
        return SkyEstimate(float("nan"), float("nan"), 0, False, good)
    sky = good
    bkg, sigma = _sky_stats(image[sky])
    for _ in range(SKY_MAX_ITER):
        filled = np.where(good, image, bkg)
        new = good & ~source_mask((filled - bkg)[None], CUTOUT_MASK, sky[None])[0]
        changed = int((new ^ sky).sum())
        if changed == 0 or not new.any():
            sky = new
            break
        sky = new
        bkg, sigma = _sky_stats(image[sky])
        if changed <= SKY_SETTLED_FRACTION * n_good:  # noise peaks at the threshold: settled
            break
    n_sky = int(sky.sum())
    ok = n_sky >= MIN_SKY_PIXELS and n_sky >= MIN_SKY_FRACTION * n_good
    return SkyEstimate(bkg, sigma, n_sky, ok, sky)


def plane_sigma(sigma_map: np.ndarray, sky: np.ndarray, good: np.ndarray) -> float:
    """The noise label from a per-pixel sigma map (``real.*.noise_*``): its median over the sky
    pixels, over all good pixels when there are none (counts)."""
    sel = sky if sky.any() else good
    return float(np.median(sigma_map[sel]))
