"""Fast batched drawing of galaxies through one PSF, in Fourier space.

GalSim's ``drawImage`` picks an FFT size per galaxy from its profile (often 256-1024 pixels for
Sersic n = 4) and builds the convolution anew each time. Stamps of a run share one PSF, pixel
scale and stamp size, so `KSpaceRenderer` instead:

1. draws the PSF x pixel transfer function once on a fixed k grid (M x M real-space period,
   M = ``pad_factor`` x stamp size, rounded up to an FFT-friendly size),
2. evaluates each galaxy's analytic Fourier transform on that grid with GalSim's
   ``_drawKImage`` (only the kx >= 0 half plane, as a real FFT needs),
3. multiplies, and inverse-FFTs the whole batch with one ``scipy.fft.irfft2`` call,
4. crops the central stamp.

Accuracy against ``galsim.GSObject.drawImage`` (tests/test_render.py): with the default
``pad_factor = 3`` and the default population (Sersic 0.5 <= n <= 4, hlr <= 1.2", Moffat
0.7" at 0.2"/pixel, 48 x 48), max |difference| <= 1e-4 of the stamp's peak, and the stamp
flux agrees to 0.2 %: flux beyond the M-pixel period wraps instead of being cut.
The k grid stops at the Nyquist frequency pi / pixel_scale; GalSim folds what lies beyond.
The renderer measures the PSF x pixel amplitude there and refuses an undersampled PSF
(above `NYQUIST_TOLERANCE`), falling back to GalSim's own drawImage for such runs.

Centering follows GalSim: the profile centre is the stamp's true centre (a pixel corner for
even sizes, the central pixel's centre for odd sizes).
"""

from __future__ import annotations

import logging

import galsim
import numpy as np
import scipy.fft

__all__ = ["KSpaceRenderer", "GalSimRenderer", "make_renderer", "NYQUIST_TOLERANCE"]

logger = logging.getLogger(__name__)

DEFAULT_PAD_FACTOR = 3  # real-space period / stamp size (accuracy above)
NYQUIST_TOLERANCE = 1e-3  # max |PSF x pixel| transfer at the Nyquist frequency for k-space drawing


def _good_fft_size(n: int) -> int:
    return int(scipy.fft.next_fast_len(int(n), real=True))


class KSpaceRenderer:
    """Draw many galaxies through one PSF by batched FFT (see module docstring).

    Parameters
    ----------
    psf : galsim.GSObject
        The PSF (without pixel; the pixel response is applied here).
    stamp_size : int
        Stamp side in pixels.
    pixel_scale : float
        arcsec per pixel.
    pad_factor : float, optional
        Real-space period of the FFT grid in stamp sizes [default: 3].
    """

    def __init__(self, psf: galsim.GSObject, stamp_size: int, pixel_scale: float,
                 pad_factor: float = DEFAULT_PAD_FACTOR) -> None:
        self.stamp_size = int(stamp_size)
        self.pixel_scale = float(pixel_scale)
        m = _good_fft_size(int(np.ceil(pad_factor * stamp_size)))
        m += m % 2  # even: the kx = 0 .. M/2 half plane is then exact
        self.fft_size = m
        self.dk = 2 * np.pi / (m * self.pixel_scale)
        self._bounds = galsim.BoundsI(0, m // 2, -m // 2, m // 2 - 1)
        kim = galsim.ImageCD(self._bounds, scale=self.dk)
        galsim.Convolve(psf, galsim.Pixel(self.pixel_scale))._drawKImage(kim)
        transfer = kim.array  # (M, M/2+1), rows ky = -M/2..M/2-1, columns kx = 0..M/2
        self.nyquist_amplitude = float(
            max(np.abs(transfer[0, :]).max(), np.abs(transfer[:, -1]).max())
            / max(abs(transfer[m // 2, 0]), 1e-300)
        )
        # Put the profile centre at the stamp's true centre: half a pixel off the FFT origin for
        # even stamp sizes (the crop below starts at M/2 - size/2).
        shift = 0.5 * self.pixel_scale if self.stamp_size % 2 == 0 else 0.0
        kx = np.arange(0, m // 2 + 1) * self.dk
        ky = np.arange(-m // 2, m // 2) * self.dk
        phase = np.exp(1j * (kx[None, :] + ky[:, None]) * shift)
        self._transfer = np.fft.ifftshift(transfer * phase, axes=0).astype(np.complex64)
        self._kimage = galsim.ImageCD(self._bounds, scale=self.dk)
        lo = m // 2 - self.stamp_size // 2
        self._crop = slice(lo, lo + self.stamp_size)

    @property
    def undersampled(self) -> bool:
        return self.nyquist_amplitude > NYQUIST_TOLERANCE

    def render(self, galaxies: list[galsim.GSObject]) -> np.ndarray:
        """Noiseless stamps (B, H, W) float32 of ``galaxies`` convolved with PSF and pixel."""
        m = self.fft_size
        kbuf = np.empty((len(galaxies), m, m // 2 + 1), dtype=np.complex64)  # (B, M, M/2+1)
        for i, gal in enumerate(galaxies):
            gal._drawKImage(self._kimage)
            kbuf[i] = np.fft.ifftshift(self._kimage.array, axes=0)
        kbuf *= self._transfer
        x = scipy.fft.irfft2(kbuf, s=(m, m), axes=(-2, -1), overwrite_x=True)  # (B, M, M)
        x = np.fft.fftshift(x, axes=(-2, -1))
        return np.ascontiguousarray(x[:, self._crop, self._crop], dtype=np.float32)


class GalSimRenderer:
    """Reference renderer: GalSim's own ``drawImage`` per galaxy (slow, exact folding)."""

    def __init__(self, psf: galsim.GSObject, stamp_size: int, pixel_scale: float) -> None:
        self.psf = psf
        self.stamp_size = int(stamp_size)
        self.pixel_scale = float(pixel_scale)

    def render(self, galaxies: list[galsim.GSObject]) -> np.ndarray:
        out = np.empty((len(galaxies), self.stamp_size, self.stamp_size), dtype=np.float32)
        for i, gal in enumerate(galaxies):
            im = galsim.Convolve(gal, self.psf).drawImage(
                nx=self.stamp_size, ny=self.stamp_size, scale=self.pixel_scale
            )
            out[i] = im.array
        return out


def make_renderer(psf: galsim.GSObject, stamp_size: int, pixel_scale: float, method: str = "kspace"):
    """The k-space renderer, or GalSim's when asked for or when the PSF is undersampled."""
    if method == "galsim":
        return GalSimRenderer(psf, stamp_size, pixel_scale)
    renderer = KSpaceRenderer(psf, stamp_size, pixel_scale)
    if renderer.undersampled:
        logger.warning(
            "PSF x pixel transfer at Nyquist is %.1e (> %.0e): the PSF is undersampled at "
            "%.3f\"/pixel, drawing with GalSim's drawImage instead (slower, folds aliased power)",
            renderer.nyquist_amplitude, NYQUIST_TOLERANCE, pixel_scale,
        )
        return GalSimRenderer(psf, stamp_size, pixel_scale)
    return renderer
