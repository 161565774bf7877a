"""PSF matching: re-observe each sim stamp through the target's PSF before R refines it.

When the target file carries its PSF (``/psf``: the mock, COSMOS, an HDF5 set with a PSF model),
``train.psf_match`` turns the sim stamps into the same galaxies seen through that PSF, exactly
and with the shear label still true, so the refiner need not (and cannot) learn a PSF change:

- the matching kernel K on the stamp grid, ``K~ = P~t conj(P~s) / (|P~s|^2 + eps^2)``, with P~s,
  P~t the discrete Fourier transforms of the sim's and the target's pixelised PSF images, scaled
  to unit sum and clipped to ``|K~| <= 1`` (modes where the sim PSF has no power are not
  amplified); the refined ``/psf`` is ``K * (sim /psf)``, i.e. the target PSF up to that clip;
- each stamp is convolved with K (circularly: the noise stays stationary), which also filters
  its white noise to the power ``sigma^2 |K~|^2``;
- K's sum, its ``gain``, is the target PSF's in-stamp flux fraction over the sims' (each file's
  ``psf_flux_in_stamp`` attribute, `refinegan.io.PSF_FLUX_ATTR`; 1 where either is not
  recorded). The ``/psf`` images are unit-sum inside the stamp, so a unit-sum K would keep in the
  stamp the light the target PSF sends beyond it: 4.4 % for the default mock's PSF, 5.4 % for a
  more aberrated one, against 0.03 % for the sims' Moffat; the matched sims were that much
  brighter than the same galaxies seen through the target, which moved REGAUSS's m by -0.005 to
  -0.013 at 8 counts of noise (docs/benchmarks.md, session 15; `bench/psf_match_m.py`). With the
  gain the matched stamp is ``gain * (K1 * sim)``, K1 of unit sum, and the refined ``/psf`` stays
  unit-sum;
- white noise is put back with an independent field of power ``sigma^2 (1 - |K~|^2)``, so the
  matched stamp's noise is white with the sim's sigma again (its ``noise_sigma`` label stays
  true) and R learns the target's noise from the sim's, as without matching. The field is drawn
  per noise realisation of the sim (``pair_id`` and ``rot90``: the +g / -g twins of one
  orientation share it as they share the sim noise, so shear pairs still cancel noise;
  `refinegan.seeds`, stream ``psf_match``): training and refine see the same
  bytes, whatever the chunking.

This is what the shear-calibration difference between sim and target mostly comes from on the
mock (docs/benchmarks.md: the target PSF moves REGAUSS's m by -0.04 / -0.05 of the mock's total
-0.03 / -0.06). Labels are copied unchanged; ``psf_fwhm`` stays the sim's input PSF, ``/psf`` is
the PSF of the refined stamps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..seeds import realisation_normals

__all__ = ["PsfMatch", "build_psf_match", "psf_flux_gain", "embed", "WIENER_EPS"]

WIENER_EPS = 1e-3  # regularisation of the division by the sim PSF's transform (unit-sum PSFs)


def embed(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes of ``img`` to ``shape`` (pixel h//2 -> H//2)."""
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape[-2:]
    hh, ww = shape
    out = np.zeros(img.shape[:-2] + (hh, ww))
    # source and destination windows, aligned on the centre pixels h//2 and H//2
    dy, dx = hh // 2 - h // 2, ww // 2 - w // 2
    ys, yd = max(0, -dy), max(0, dy)
    xs, xd = max(0, -dx), max(0, dx)
    ny, nx = min(h - ys, hh - yd), min(w - xs, ww - xd)
    out[..., yd:yd + ny, xd:xd + nx] = img[..., ys:ys + ny, xs:xs + nx]
    return out


def _ft(centred: np.ndarray) -> np.ndarray:
    """DFT of an image centred on pixel (H//2, W//2), with the origin moved to (0, 0)."""
    return np.fft.fft2(np.fft.ifftshift(centred, axes=(-2, -1)))


def _whiten(k: np.ndarray) -> np.ndarray:
    """sqrt(1 - |K~|^2): the filter of the white noise put back after K~ filtered some away."""
    return np.sqrt(np.clip(1.0 - np.abs(k) ** 2, 0.0, None))


@dataclass(frozen=True)
class PsfMatch:
    """A matching kernel (centred on pixel (H//2, W//2), unit sum) and the whitening seed.

    ``residual`` is how far ``K * sim_psf`` stays from the target's PSF, max |difference| as a
    fraction of the target PSF's peak (`summary`, both unit-sum), and ``residual_max`` the bound
    training accepted it under; both None until recorded (training records them, refine writes
    them to the refined files' attributes ``psf_match_residual`` / ``psf_match_residual_max``).
    ``gain`` (0 < gain <= 1) is K's sum, the share of the sims' in-stamp flux that the target's
    PSF keeps in the stamp (module docstring); ``kernel`` itself is unit-sum.
    """

    kernel: np.ndarray  # (H, W) float64
    seed: int
    sim_psf: np.ndarray  # (h, w) float64: the PSF the kernel starts from (checked at refine)
    residual: float | None = None  # fraction of the target PSF's peak
    residual_max: float | None = None  # the bound it was accepted under (same unit)
    gain: float = 1.0  # K's sum: target / sim in-stamp PSF flux fraction

    def kernel_ft(self, shape: tuple[int, int]) -> np.ndarray:
        """K~ on a stamp grid of ``shape`` (the kernel embedded, re-normalised to sum ``gain``)."""
        k = embed(self.kernel, shape)
        return _ft(k * (self.gain / k.sum()))

    def whiten_ft(self, shape: tuple[int, int]) -> np.ndarray:
        """The whitening filter sqrt(1 - |K~|^2) on a grid of ``shape`` (real, >= 0)."""
        return _whiten(self.kernel_ft(shape))

    def apply_psf(self, psf: np.ndarray) -> np.ndarray:
        """The PSF of matched stamps, ``K * psf``, for (h, w) or (N, h, w) images.

        On ``psf``'s grid, widened to the kernel's where that is larger (the wings K adds are kept).
        """
        psf = np.asarray(psf, dtype=np.float64)
        grid = tuple(max(a, b) for a, b in zip(psf.shape[-2:], self.kernel.shape, strict=True))
        psf = embed(psf, grid)
        out = np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(psf, axes=(-2, -1))) * self.kernel_ft(grid))
        out = np.fft.fftshift(out.real, axes=(-2, -1))
        return (out / out.sum(axis=(-2, -1), keepdims=True)).astype(np.float32)

    def apply(self, images: np.ndarray, sigma: np.ndarray, labels: Mapping, offset: int = 0) -> np.ndarray:
        """Matched stamps (N, H, W) float32 from sim stamps in counts with noise sigma (N,)."""
        images = np.asarray(images, dtype=np.float64)
        n, shape = images.shape[0], images.shape[-2:]
        if n == 0:
            return images.astype(np.float32)
        k = self.kernel_ft(shape)
        conv = np.fft.ifft2(np.fft.fft2(images) * k).real
        w = realisation_normals(labels, n, shape, self.seed, "psf_match", offset)
        fill = np.fft.ifft2(np.fft.fft2(w) * _whiten(k)).real
        sigma = np.asarray(sigma, dtype=np.float64).reshape(n, 1, 1)
        return (conv + sigma * fill).astype(np.float32)

    def to_dict(self) -> dict:
        out = {"kernel": self.kernel.tolist(), "seed": int(self.seed), "sim_psf": self.sim_psf.tolist(),
               "gain": float(self.gain)}
        for key in ("residual", "residual_max"):
            if getattr(self, key) is not None:
                out[key] = float(getattr(self, key))
        return out

    @classmethod
    def from_dict(cls, d: Mapping | None) -> PsfMatch | None:
        """The inverse of `to_dict`; a dict without ``residual`` (an older refiner.pt) reads as
        not recorded (None)."""
        if not d:
            return None
        return cls(np.asarray(d["kernel"], dtype=np.float64), int(d["seed"]),
                   np.asarray(d["sim_psf"], dtype=np.float64),
                   *(None if d.get(k) is None else float(d[k]) for k in ("residual", "residual_max")),
                   gain=float(d.get("gain", 1.0)))  # older refiner.pt: unit-sum K

    def summary(self, target_psf: np.ndarray) -> dict:
        """How well K * sim_psf reproduces ``target_psf`` and how much of K~ was clipped."""
        shape = self.kernel.shape
        ps, pt = _ft(embed(self.sim_psf, shape)), _ft(embed(target_psf, shape))
        raw = np.abs(pt) / np.maximum(np.abs(ps), 1e-300)
        got = self.apply_psf(embed(self.sim_psf, shape))
        tgt = embed(target_psf, shape)
        tgt = tgt / tgt.sum()
        return {"clipped_fraction": float(np.mean(raw > 1.0)),
                "psf_residual": float(np.abs(got - tgt).max() / tgt.max())}


def build_psf_match(sim_psf: np.ndarray, target_psf: np.ndarray, shape: tuple[int, int],
                    seed: int, eps: float = WIENER_EPS, gain: float = 1.0) -> PsfMatch:
    """The kernel taking ``sim_psf`` (h, w) to ``target_psf`` (h', w') on a stamp grid ``shape``,
    with sum ``gain`` (0 < gain <= 1: `psf_flux_gain`).

    Both PSFs are pixelised images at the stamp scale, centred on pixel (h//2, w//2) or on the
    same sub-pixel point (a common offset cancels in the ratio); a target shift relative to the
    sim PSF is part of K, as it is of the target stamps.
    """
    sim_psf = np.asarray(sim_psf, dtype=np.float64)
    target_psf = np.asarray(target_psf, dtype=np.float64)
    for name, p in (("sim", sim_psf), ("target", target_psf)):
        if p.ndim != 2 or not np.isfinite(p).all() or p.sum() <= 0:
            raise ValueError(f"{name} PSF must be one finite (h, w) image with positive sum, got shape {p.shape}")
    ps = _ft(embed(sim_psf / sim_psf.sum(), shape))
    pt = _ft(embed(target_psf / target_psf.sum(), shape))
    k = pt * np.conj(ps) / (np.abs(ps) ** 2 + eps**2)
    k /= k[0, 0].real
    k /= np.maximum(1.0, np.abs(k))  # no mode amplified: the whitening filter stays real
    kernel = np.fft.fftshift(np.fft.ifft2(k).real)
    if not (np.isfinite(gain) and 0 < gain <= 1):
        raise ValueError(f"PSF matching gain must be in (0, 1], got {gain!r}")
    return PsfMatch(kernel / kernel.sum(), int(seed), sim_psf / sim_psf.sum(), gain=float(gain))


def psf_flux_gain(sim_fraction: float | None, target_fraction: float | None) -> tuple[float, str]:
    """K's sum from the two files' in-stamp PSF flux fractions (`refinegan.io.PSF_FLUX_ATTR`):
    ``target / sim``, and a line saying so; 1 where either is not recorded (a user's cutouts) or
    where the target keeps more of its PSF's light in the stamp than the sims (matching can only
    widen, so it does not brighten either)."""
    if sim_fraction is None or target_fraction is None:
        return 1.0, ("in-stamp PSF flux not recorded for "
                     f"{'the sims' if sim_fraction is None else 'the target'}: K of unit sum")
    fs, ft = float(sim_fraction), float(target_fraction)
    for name, f in (("sims'", fs), ("target's", ft)):
        if not (np.isfinite(f) and 0 < f <= 1):
            raise ValueError(f"the {name} psf_flux_in_stamp must be in (0, 1], got {f!r}")
    if ft >= fs:
        return 1.0, (f"the target keeps {ft:.4f} of its PSF's flux in the stamp, the sims "
                     f"{fs:.4f}: K of unit sum")
    return ft / fs, (f"K's sum {ft / fs:.4f}: the target keeps {ft:.4f} of its PSF's flux in the "
                     f"stamp, the sims {fs:.4f}")
