"""How a target set is observed: its PSF (atmosphere x optics) and its correlated sky noise.

Shared by the mock target (`refinegan.target.mock`) and the COSMOS real-galaxy target
(`refinegan.target.cosmos`), both configured by ``real.psf`` and ``real.noise``.
"""

from __future__ import annotations

import functools

import galsim
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..sim.simulate import build_psf

__all__ = ["build_target_psf", "psf_fwhm_arcsec", "lanczos_taps", "correlated_noise",
           "FWHM_OVERSAMPLING"]

FWHM_OVERSAMPLING = 8  # PSF drawn at pixel_scale / this to measure its FWHM


def build_target_psf(spec: dict) -> galsim.GSObject:
    """Kolmogorov(atmos_fwhm) convolved with OpticalPSF (``real.psf`` keys; arcsec, waves).

    With ``use_sim_psf`` the sim's PSF (``spec["sim"]``: the ``sim.psf`` section) replaces the
    Kolmogorov atmosphere (a noise-only control: sim PSF, no optics, the target's noise).
    """
    if spec.get("use_sim_psf"):
        sim = spec["sim"]
        atmos = build_psf(sim["type"], sim["fwhm"], sim["beta"], sim["e1"], sim["e2"])
    else:
        atmos = galsim.Kolmogorov(fwhm=spec["atmos_fwhm"])
    if not spec["optical"]:
        return atmos
    optical = galsim.OpticalPSF(
        lam_over_diam=spec["lam_over_diam"], obscuration=spec["obscuration"],
        nstruts=spec["nstruts"], strut_angle=spec["strut_angle"] * galsim.degrees,
        defocus=spec["defocus"], astig1=spec["astig1"], astig2=spec["astig2"],
        coma1=spec["coma1"], coma2=spec["coma2"], spher=spec["spher"])
    return galsim.Convolve(atmos, optical)


@functools.lru_cache(maxsize=8)  # 0.7 s for an OpticalPSF; GSObjects hash by their parameters
def psf_fwhm_arcsec(psf: galsim.GSObject, pixel_scale: float) -> float:
    """FWHM of a PSF profile (no pixel) measured on an oversampled image, arcsec."""
    scale = pixel_scale / FWHM_OVERSAMPLING
    return float(psf.drawImage(nx=256, ny=256, scale=scale, method="no_pixel").calculateFWHM())


def lanczos_taps(shift: np.ndarray, order: int) -> np.ndarray:
    """Lanczos-``order`` interpolation weights (..., 2 order) at sub-pixel ``shift`` in [0, 1).

    Output pixel p is sum_j w_j in[p + j], j = -order+1 .. order, weights summing to 1.
    """
    j = np.arange(-order + 1, order + 1)
    x = j - np.asarray(shift)[..., None]
    w = np.sinc(x) * np.sinc(x / order)
    return w / w.sum(axis=-1, keepdims=True)


def correlated_noise(rngs: list[np.random.Generator], shape: tuple[int, int], sigma: float,
                     spec: dict, pixel_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """One noise field (B, H, W) float32 per generator, std ``sigma``, and its lag-1 correlation.

    ``spec`` is ``real.noise``: ``white``, ``lanczos`` (mean of ``n_exposures`` white frames,
    each resampled at a random sub-pixel shift, then scaled to std sigma; the expected lag-1
    correlation, mean of x and y, is returned per field) or ``cosmos``.
    """
    b, (h, w) = len(rngs), shape
    kind = spec["correlation"]
    if kind == "white":
        return (np.stack([r.standard_normal(shape, dtype=np.float32) for r in rngs]) * sigma,
                np.zeros(b))
    if kind == "cosmos":
        out, lag1 = np.empty((b, h, w), np.float32), np.empty(b)
        for i, r in enumerate(rngs):
            cn = galsim.getCOSMOSNoise(rng=galsim.BaseDeviate(int(r.integers(1, 2**31))),
                                       cosmos_scale=pixel_scale, variance=sigma**2)
            # GalSim draws correlated noise by FFT on the image, so it wraps around (the first and
            # last columns correlated as neighbours); no coadd's noise does. Drawn on a doubled
            # image and cut, it does not (tests/test_mock.py).
            im = galsim.ImageF(2 * w, 2 * h, scale=pixel_scale)
            im.addNoise(cn)
            out[i] = im.array[:h, :w]
            cf = cn.drawImage(galsim.ImageD(5, 5, scale=pixel_scale)).array
            lag1[i] = 0.5 * (cf[2, 3] + cf[3, 2]) / cf[2, 2]
        return out, lag1
    order, n_exp = spec["lanczos_order"], spec["n_exposures"]
    pad = 2 * order - 1
    shifts = np.stack([r.random((n_exp, 2)) for r in rngs])  # (B, E, 2)
    white = np.stack([r.standard_normal((n_exp, h + pad, w + pad), dtype=np.float32) for r in rngs])
    wx, wy = lanczos_taps(shifts[..., 0], order), lanczos_taps(shifts[..., 1], order)  # (B, E, 2o)
    tmp = np.einsum("behwk,bek->behw", sliding_window_view(white, 2 * order, axis=3), wx)
    coadd = np.einsum("behwk,bek->bhw", sliding_window_view(tmp, 2 * order, axis=2), wy) / n_exp
    sx, sy = (wx**2).sum(-1), (wy**2).sum(-1)  # (B, E)
    var = (sx * sy).sum(-1) / n_exp**2
    cx = ((wx[..., 1:] * wx[..., :-1]).sum(-1) * sy).sum(-1) / n_exp**2
    cy = ((wy[..., 1:] * wy[..., :-1]).sum(-1) * sx).sum(-1) / n_exp**2
    scale = (sigma / np.sqrt(var)).astype(np.float32)
    return coadd.astype(np.float32) * scale[:, None, None], 0.5 * (cx + cy) / var
