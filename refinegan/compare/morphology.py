"""Non-parametric morphology with statmorph on a subsample of stamps.

statmorph costs ~0.1-0.3 s per stamp, so `morphology` runs on the indices it is given (compare
picks a random subsample of ``compare.morphology_n`` stamps per domain and records it).

Segmentation: the stamp is smoothed with a 2-D Gaussian kernel (FWHM ``kernel_fwhm_pix``), and
`photutils.segmentation.detect_sources` finds connected regions above ``threshold_sigma`` times
the stamp's noise std with at least ``n_pixels`` pixels. The galaxy is the segment under the stamp
centre (on noisy stamps label 1 is often a noise peak), or the segment nearest to the centre when
the centre pixel is background; other segments are masked for statmorph.

Failures are NaN with ``morph_flag``: statmorph's own flag (0 good, 1 suspect, 2 bad, 4 catastrophic)
or FLAG_NO_SEGMENT (8) / FLAG_EXCEPTION (16) from here. Warnings that statmorph or photutils emit are
caught per stamp and counted in ``morph_n_warnings``; they are not errors of ours.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from astropy.convolution import convolve
from photutils.segmentation import detect_sources, make_2dgaussian_kernel

__all__ = ["MORPH_NAMES", "centre_segment", "morphology", "FLAG_NO_SEGMENT", "FLAG_EXCEPTION"]

logger = logging.getLogger(__name__)

# statmorph attribute -> our name. rhalf_circ, r20, r80 are in pixels.
MORPH_NAMES = {
    "rhalf_circ": "morph_r50",
    "concentration": "morph_c",
    "asymmetry": "morph_a",
    "smoothness": "morph_s",
    "gini": "morph_gini",
    "m20": "morph_m20",
}
FLAG_NO_SEGMENT = 8  # no segment found (nothing above threshold)
FLAG_EXCEPTION = 16  # statmorph raised
# statmorph evaluates all ~50 of its lazy properties in __init__, a Sersic fit and MID statistics
# included (~0.37 s a 32x32 stamp); we evaluate only what we store (and what its flags need).
_NEEDED = ("xc_centroid", "yc_centroid", "xc_asymmetry", "yc_asymmetry", "rpetro_circ",
           *MORPH_NAMES, "r20", "r80", "sky_mean", "sky_sigma")


def _core_morphology_class():
    import statmorph

    class _CoreMorphology(statmorph.SourceMorphology):
        """statmorph's SourceMorphology evaluating only the statistics compare stores."""

        def _calculate_morphology(self) -> None:
            for name in _NEEDED:
                getattr(self, name)

    return _CoreMorphology


def centre_segment(
    image: np.ndarray,
    noise_std: float,
    *,
    threshold_sigma: float = 1.5,
    n_pixels: int = 5,
    kernel_fwhm_pix: float = 2.0,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Segment map of the central galaxy and a mask of the other segments.

    Returns ``(segmap, mask)``: int (H, W) with 1 on the galaxy, and bool (H, W) True on other
    sources; ``(None, None)`` if nothing is detected.
    """
    kernel = make_2dgaussian_kernel(kernel_fwhm_pix, size=2 * int(np.ceil(kernel_fwhm_pix)) + 1)
    smooth = convolve(image, kernel)
    seg = detect_sources(smooth, threshold_sigma * noise_std, n_pixels=n_pixels)
    if seg is None:
        return None, None
    data = seg.data
    h, w = data.shape
    label = data[h // 2, w // 2]
    if label == 0:
        yy, xx = np.nonzero(data)
        j = np.argmin((yy - h // 2) ** 2 + (xx - w // 2) ** 2)
        label = data[yy[j], xx[j]]
    return (data == label).astype(np.int32), (data != 0) & (data != label)


def morphology(
    images: np.ndarray,
    noise_std: np.ndarray,
    *,
    threshold_sigma: float = 1.5,
    n_pixels: int = 5,
    progress: bool = False,
    processes: int = 1,
) -> dict[str, np.ndarray]:
    """statmorph statistics of each stamp.

    Parameters
    ----------
    images : ndarray (n, H, W)
        Counts per pixel (the subsample to measure).
    noise_std : ndarray (n,)
        Noise std of each stamp, counts (from `refinegan.compare.stats.noise_moments`); used for the
        segmentation threshold and as statmorph's weight map (a constant sigma image).
    threshold_sigma : float
        Segmentation threshold in units of ``noise_std`` [default: 1.5].
    n_pixels : int
        Minimum segment area, pixels [default: 5].
    progress : bool
        Show a tqdm bar [default: False].
    processes : int
        Worker processes ("spawn" context); stamps are split into that many contiguous blocks
        and the results concatenated, identical to one process [default: 1].

    Returns
    -------
    dict of (n,) arrays: morph_r50 (pixels), morph_c, morph_a, morph_s, morph_gini, morph_m20,
    morph_flag (int), morph_n_warnings (int).
    """
    n = len(images)
    if processes > 1 and n > 1:
        out = _morphology_parallel(images, noise_std, threshold_sigma, n_pixels, processes)
        _log_flags(out["morph_flag"])
        return out
    from tqdm import tqdm

    morph_class = _core_morphology_class()
    out = {name: np.full(n, np.nan) for name in MORPH_NAMES.values()}
    flag = np.zeros(n, np.int16)
    n_warn = np.zeros(n, np.int16)
    for i in tqdm(range(n), disable=not progress, desc="statmorph", leave=False):
        values, flag[i], n_warn[i] = _one_stamp(
            np.asarray(images[i], dtype=np.float64), float(noise_std[i]), morph_class,
            threshold_sigma, n_pixels, i)
        if flag[i] >= 2:  # statmorph: 2 = bad, 4 = catastrophic; values are not trustworthy
            continue
        for key, value in values.items():
            out[key][i] = value if np.isfinite(value) and value != -99 else np.nan
    out["morph_flag"] = flag
    out["morph_n_warnings"] = n_warn
    _log_flags(flag)
    return out


def _one_stamp(img: np.ndarray, sigma: float, morph_class, threshold_sigma: float,
               n_pixels: int, i: int) -> tuple[dict[str, float], int, int]:
    """statmorph values of one stamp (H, W), its flag and the number of warnings caught."""
    if not (np.isfinite(sigma) and sigma > 0):
        return {}, FLAG_NO_SEGMENT, 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segmap, other = centre_segment(
            img, sigma, threshold_sigma=threshold_sigma, n_pixels=n_pixels
        )
        if segmap is None:
            return {}, FLAG_NO_SEGMENT, len(caught)
        try:
            m = morph_class(
                img, segmap, label=1, mask=other, weightmap=np.full(img.shape, sigma)
            )
            values = {ours: float(getattr(m, theirs)) for theirs, ours in MORPH_NAMES.items()}
            flag = int(m.flag)
        except Exception as err:  # statmorph raises many types on odd stamps
            logger.debug("statmorph failed on stamp %d: %s", i, err)
            flag, values = FLAG_EXCEPTION, {}
    return values, flag, len(caught)


def _morphology_parallel(images, noise_std, threshold_sigma: float, n_pixels: int,
                         processes: int) -> dict[str, np.ndarray]:
    """`morphology` in ``processes`` spawned workers on contiguous blocks, concatenated."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    n = len(images)
    blocks = np.array_split(np.arange(n), min(processes, n))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(blocks), mp_context=ctx) as pool:
        parts = list(pool.map(
            _morphology_block,
            [(np.asarray(images[b]), np.asarray(noise_std[b]), threshold_sigma, n_pixels)
             for b in blocks]))
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _morphology_block(args) -> dict[str, np.ndarray]:
    images, noise_std, threshold_sigma, n_pixels = args
    return morphology(images, noise_std, threshold_sigma=threshold_sigma, n_pixels=n_pixels)


def _log_flags(flag: np.ndarray) -> None:
    n_bad = int((flag >= 2).sum())
    if n_bad:
        logger.info("statmorph: %d of %d stamps flagged (values NaN)", n_bad, len(flag))
