"""A user's PSF image, checked and prepared: one centred star, resampled to an odd-sized /psf.

Used by the user-data target sources (`refinegan.target.fits`, `refinegan.target.hdf5`) and
`refinegan.target.cutouts` (a per-cutout PSF follows its stamp's rotated copies).
"""

from __future__ import annotations

import galsim
import numpy as np
from scipy import ndimage

from ..errors import InputDataError
from .resample import draw_at_scale

__all__ = ["prepare_psf", "check_psf_image", "check_psf_cube", "square_psf", "centroid_offset",
           "PSF_MAX_OFFSET_PIX", "PSF_SECOND_PEAK"]

PSF_MAX_OFFSET_PIX = 2.0  # a PSF centroid further than this from the image centre is refused
PSF_SECOND_PEAK = 0.2  # another local maximum above this fraction of the peak: not one PSF


def prepare_psf(psf: np.ndarray, scale: float, opts, where: str) -> np.ndarray:
    """The user's PSF image at ``scale`` arcsec/pixel, checked, centred and resampled to the
    working scale (``opts.pixel_scale``, a `refinegan.target.cutouts.CutoutOptions`): an
    odd-sized, unit-sum image whose centroid is its central pixel.

    Refused (`InputDataError` naming ``where``): not a 2-D floating-point image, non-finite
    pixels, no positive sum, fewer than 3 x 3 pixels, a second peak above `PSF_SECOND_PEAK` of
    the first (two stars, a binary), a centroid more than `PSF_MAX_OFFSET_PIX` pixels from the
    image centre (a rolled or mis-cut image). A smaller offset is removed by a sub-pixel shift.
    """
    psf = check_psf_image(psf, where)
    _check_single_peak(psf, where)
    dy, dx = centroid_offset(psf)
    if max(abs(dy), abs(dx)) > PSF_MAX_OFFSET_PIX:
        raise InputDataError(f"{where}: the PSF's centroid is ({dy:+.2f}, {dx:+.2f}) pixels from its "
                             f"image centre (more than {PSF_MAX_OFFSET_PIX:g}); a PSF image must be "
                             "centred on its star (was it rolled or cut off-centre?)")
    out_scale = opts.pixel_scale
    n_out = [int(np.ceil(s * scale / out_scale - 1e-6)) for s in psf.shape]
    n_out = [n + 1 - n % 2 for n in n_out]  # odd: the centroid on the central pixel
    out = draw_at_scale(psf, scale, out_scale, tuple(n_out), (-dy, -dx))  # centroid to centre
    return out / out.sum()


def check_psf_cube(psf, n_cutouts: int, where: str, key: str, cutouts: str) -> None:
    """A cube (N_psf, h, w) of floating-point PSF images, one per input cutout in their order:
    `InputDataError` naming ``where``, ``key`` and both counts unless N_psf equals
    ``n_cutouts`` (the cutouts ``cutouts`` names). Each PSF is checked by `prepare_psf` once
    its cutout is accepted (`CutoutCollector.add`)."""
    if psf.dtype.kind != "f" or psf.ndim != 3:
        raise InputDataError(f"{where} ({key}): a PSF cube must be floating-point (N, h, w), got "
                             f"{psf.dtype.name} of shape {psf.shape}")
    if psf.shape[0] != n_cutouts:
        raise InputDataError(
            f"{where} ({key}): a cube of {psf.shape[0]} PSFs for {n_cutouts} input cutouts "
            f"({cutouts}); expected one PSF per cutout, in their order: shape ({n_cutouts}, "
            f"{psf.shape[1]}, {psf.shape[2]})")
    if min(psf.shape[1:]) < 3:
        raise InputDataError(f"{where} ({key}): PSF images of {psf.shape[1]}x{psf.shape[2]} pixels "
                             "are too small to sample a PSF; expected at least 3x3")


def square_psf(psf: np.ndarray) -> np.ndarray:
    """An odd-sized PSF image zero-padded to a square about its central pixel (so its rotations
    by 90 degrees keep its shape)."""
    h, w = psf.shape
    m = max(h, w)
    out = np.zeros((m, m))
    out[(m - h) // 2:(m - h) // 2 + h, (m - w) // 2:(m - w) // 2 + w] = psf
    return out


def check_psf_image(psf: np.ndarray, where: str) -> np.ndarray:
    """A 2-D floating-point image of at least 3x3 finite pixels with a positive sum, as float64;
    `InputDataError` naming ``where`` otherwise."""
    psf = np.asarray(psf)
    if psf.dtype.kind != "f" or psf.ndim != 2:
        raise InputDataError(f"{where}: PSF must be a 2-D floating-point image, got "
                             f"{psf.dtype.name} of shape {psf.shape}")
    if not np.all(np.isfinite(psf)) or psf.sum() <= 0:
        raise InputDataError(f"{where}: PSF must have finite pixels and a positive sum")
    if min(psf.shape) < 3:
        raise InputDataError(f"{where}: PSF image of {psf.shape[0]}x{psf.shape[1]} pixels is too "
                             "small to sample a PSF; expected at least 3x3")
    return psf.astype(np.float64)


def _check_single_peak(psf: np.ndarray, where: str) -> None:
    peaks = (ndimage.maximum_filter(psf, size=3, mode="constant") == psf) & (
        psf > PSF_SECOND_PEAK * psf.max())
    regions, n = ndimage.label(peaks, structure=np.ones((3, 3)))  # a plateau is one peak
    if n > 1:
        where_max = ndimage.maximum_position(psf, regions, range(1, n + 1))
        found = ", ".join(f"({y}, {x}) {psf[y, x] / psf.max():.2f}" for y, x in where_max)
        raise InputDataError(f"{where}: the PSF image has {n} peaks above "
                             f"{PSF_SECOND_PEAK:g} of its maximum (pixel, fraction: {found}); expected "
                             "one star")


def centroid_offset(psf: np.ndarray) -> tuple[float, float]:
    """(dy, dx) pixels of the PSF's centroid from its true image centre ((n - 1) / 2): the HSM
    adaptive centroid, the flux-weighted one if HSM fails."""
    h, w = psf.shape
    res = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(psf)), strict=False)
    if res.moments_status == 0:
        # GalSim's pixel (1, 1) is array [0, 0]: its true centre is ((w + 1) / 2, (h + 1) / 2)
        return res.moments_centroid.y - (h + 1) / 2, res.moments_centroid.x - (w + 1) / 2
    yy, xx = np.mgrid[:h, :w]
    return (float((psf * yy).sum() / psf.sum() - (h - 1) / 2),
            float((psf * xx).sum() / psf.sum() - (w - 1) / 2))
