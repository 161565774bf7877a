"""Resampling a cutout or a PSF image to the working pixel scale, flux-conserving.

The input's own pixel response is divided out within its band, the result becomes a
Lanczos-interpolated surface brightness (GalSim ``InterpolatedImage``), and it is integrated over
each output pixel (``drawImage(method='auto')``). Used by `refinegan.target.cutouts` for user
cutouts and by `refinegan.target.psf_image` for their PSF images.
"""

from __future__ import annotations

import galsim
import numpy as np
from scipy.fft import dct, idct

__all__ = ["resample_cutout", "draw_at_scale", "SCALE_RTOL", "RESAMPLE_INTERPOLANT"]

SCALE_RTOL = 1e-3  # pixel scales closer than this are the same scale
RESAMPLE_INTERPOLANT = 11  # Lanczos order used to resample cutouts (5: 1e-3 of an HST PSF's peak)


def resample_cutout(image: np.ndarray, bad: np.ndarray, scale_in: float, scale_out: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Flux-conserving resampling of a cutout to ``scale_out`` arcsec/pixel; bad pixels are filled
    with the median first, and an output pixel is bad when it overlaps any bad input pixel.

    The cutout's own pixel response is divided out within its band (`_remove_pixel`), the result
    becomes a Lanczos-interpolated surface brightness (GalSim ``InterpolatedImage``; the true
    centres of both grids aligned), and it is integrated over each output pixel
    (``drawImage(method='auto')``: the output pixel convolved), in both directions. So white noise
    averages down by the pixel-area ratio and a galaxy is what a drawing at ``scale_out`` gives
    (measured, tests/test_cutouts.py: Sersic galaxies and an Airy + Gaussian PSF drawn at
    0.03"/pixel and resampled to 0.2" differ from the same profiles drawn at 0.2" by at most
    1.2e-4 of their peak, 8e-5 in HSM size and 1e-5 in g; keeping the input pixel gave up to
    2.2e-3 and 1.7e-3; docs/real_data.md has the candidates). Going to finer pixels the same rule
    gives the finer drawing to the limit of the coarse sampling (an exponential at 0.3"
    resampled to 0.2": 2.5e-3 of the peak, HSM size 1e-5; sampling it without the pixel steps
    gave 2.6e-2 and +1.2 %).
    """
    h, w = image.shape
    ny, nx = (int(np.floor(s * scale_in / scale_out + 1e-6)) for s in (h, w))
    fill = float(np.median(image[~bad])) if np.any(~bad) else 0.0
    out = draw_at_scale(np.where(bad, fill, image), scale_in, scale_out, (ny, nx))
    return out, _overlaps_bad(bad, (ny, nx), scale_out / scale_in)


def draw_at_scale(image: np.ndarray, scale_in: float, scale_out: float, shape: tuple[int, int],
                   shift_pix: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``image`` at ``scale_in`` arcsec/pixel drawn on a ``shape`` grid at ``scale_out`` (true
    centres aligned, then shifted by ``shift_pix`` (dy, dx) input pixels), Lanczos-interpolated:
    at another scale its input pixel removed (`_remove_pixel`) and integrated over each output
    pixel (`resample_cutout`); at the same scale (a PSF's recentring) sampled, which keeps the
    pixel it has (and the pixels themselves, unshifted)."""
    same = abs(scale_out / scale_in - 1) <= SCALE_RTOL
    ii = galsim.InterpolatedImage(
        galsim.ImageD(np.asarray(image, np.float64) if same else _remove_pixel(image),
                      scale=scale_in),
        x_interpolant=galsim.Lanczos(RESAMPLE_INTERPOLANT),
        calculate_stepk=False, calculate_maxk=False)
    if shift_pix != (0.0, 0.0):
        ii = ii.shift(shift_pix[1] * scale_in, shift_pix[0] * scale_in)
    return ii.drawImage(nx=shape[1], ny=shape[0], scale=scale_out,
                        method="no_pixel" if same else "auto").array


def _remove_pixel(image: np.ndarray) -> np.ndarray:
    """(H, W) float64: ``image`` with its own pixel response divided out within its band.

    A cutout's pixels are its profile convolved with one pixel and sampled; interpolating them
    and integrating over the output pixel would count the input pixel on top of the output one
    (from 0.03" to 0.2": 1.3e-3 of the peak, +1e-3 in HSM size). Each axis' DCT-II coefficient k
    (frequency u = k / 2n cycles per pixel, below Nyquist) is divided by the pixel's response
    sinc(u) (at most pi / 2 per axis, at Nyquist); the DCT extends the cutout mirrored, so a
    constant sky stays constant and the edges do not ring. GalSim's
    ``InterpolatedImage(depixelize=True)`` solves the same problem with a dense (H W)^2 matrix:
    out of memory for a 334 x 334 HST cutout.
    """
    out = np.asarray(image, np.float64)
    for axis, n in enumerate(out.shape):
        response = np.sinc(np.arange(n) / (2 * n)).reshape((-1, 1) if axis == 0 else (1, -1))
        out = idct(dct(out, type=2, axis=axis, norm="ortho") / response, type=2, axis=axis,
                   norm="ortho")
    return out


def _overlaps_bad(bad: np.ndarray, shape_out: tuple[int, int], ratio: float) -> np.ndarray:
    """(ny, nx) bool: output pixels (``ratio`` input pixels wide, centres aligned) that overlap a
    bad input pixel, by a summed-area table of the input mask."""
    h, w = bad.shape
    table = np.zeros((h + 1, w + 1))
    table[1:, 1:] = np.cumsum(np.cumsum(bad.astype(np.float64), axis=0), axis=1)

    def ranges(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        c = (np.arange(n_out) - (n_out - 1) / 2) * ratio + (n_in - 1) / 2  # centre, input pixels
        lo = np.clip(np.ceil(c - ratio / 2 - 0.5 + 1e-9), 0, n_in).astype(int)
        hi = np.clip(np.floor(c + ratio / 2 + 0.5 - 1e-9) + 1, 0, n_in).astype(int)
        return lo, np.maximum(hi, lo)

    (y0, y1), (x0, x1) = ranges(shape_out[0], h), ranges(shape_out[1], w)
    count = (table[y1[:, None], x1[None, :]] - table[y0[:, None], x1[None, :]]
             - table[y1[:, None], x0[None, :]] + table[y0[:, None], x0[None, :]])
    return count > 0.5
