"""Stamp files for the refiner tests: analytic elliptical Gaussian galaxies, exact shear twins.

A galaxy is a Gaussian of covariance ``C_gal`` (size ``sigma_px``, intrinsic ellipticity), sheared
by ``g`` exactly (``C -> A C A^T``), convolved with a round Gaussian PSF (covariances add) and
sampled at pixel centres. Twins with ``g1 = 0.02`` and ``0`` share galaxies and noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from refinegan.io import SIM_LABELS, write_stamps

PIXEL_SCALE = 0.2  # arcsec / pixel
PSF_SIGMA_PX = 1.5
FLUX_MIN, FLUX_MAX = 150.0, 1500.0  # counts, with noise sigma 1: the default config's flux / sigma range
CORR_KERNEL = np.array([[0.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 0.0]])  # mock coadd-like


def psf_image(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    p = np.exp(-0.5 * (x * x + y * y) / PSF_SIGMA_PX**2)
    return p / p.sum()


def galaxy_params(n: int, rng: np.random.Generator) -> dict:
    e = rng.normal(0, 0.2, (n, 2)).clip(-0.6, 0.6)
    return {
        "flux": np.exp(rng.uniform(np.log(FLUX_MIN), np.log(FLUX_MAX), n)),
        "sigma_px": rng.uniform(1.2, 2.8, n),
        "e1_int": e[:, 0],
        "e2_int": e[:, 1],
    }


def render(params: dict, size: int, g1: float = 0.0, g2: float = 0.0) -> np.ndarray:
    """Noiseless stamps (n, size, size) in counts."""
    n = len(params["flux"])
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    out = np.empty((n, size, size))
    gmag2 = g1 * g1 + g2 * g2
    a = np.array([[1 + g1, g2], [g2, 1 - g1]]) / np.sqrt(1 - gmag2)
    for i in range(n):
        e1, e2 = params["e1_int"][i], params["e2_int"][i]
        b = np.array([[1 + e1, e2], [e2, 1 - e1]]) / np.sqrt(1 - e1 * e1 - e2 * e2)
        c = params["sigma_px"][i] ** 2 * (b @ b.T)  # intrinsic covariance (det = sigma^4)
        c = a @ c @ a.T + PSF_SIGMA_PX**2 * np.eye(2)
        ci = np.linalg.inv(c)
        q = ci[0, 0] * x * x + 2 * ci[0, 1] * x * y + ci[1, 1] * y * y
        out[i] = params["flux"][i] * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(np.linalg.det(c)))
    return out


def noise(n: int, size: int, sigma: float, rng: np.random.Generator, correlated: bool) -> np.ndarray:
    w = rng.normal(0.0, sigma, (n, size, size))
    if not correlated:
        return w
    k = CORR_KERNEL / np.sqrt((CORR_KERNEL**2).sum())  # keeps the per-pixel sigma
    return ndimage.convolve(w, k[None], mode="wrap")


def sim_labels(params: dict, sigma: float, g1: float, start_id: int = 0) -> dict:
    n = len(params["flux"])
    labels = {name: np.zeros(n) for name in SIM_LABELS}
    labels["id"] = np.arange(start_id, start_id + n, dtype=np.int64)
    labels["g1"] = np.full(n, g1)
    labels["e1_int"], labels["e2_int"] = params["e1_int"], params["e2_int"]
    labels["flux"] = params["flux"]
    labels["hlr"] = params["sigma_px"] * 1.1774 * PIXEL_SCALE
    labels["psf_fwhm"] = np.full(n, 2.3548 * PSF_SIGMA_PX * PIXEL_SCALE)
    labels["noise_sigma"] = np.full(n, sigma)
    labels["snr"] = params["flux"] / sigma
    return labels


def write_set(path, n, size, rng, *, domain="sim", sigma=1.0, correlated=False, g1=0.0,
              pixel_scale=PIXEL_SCALE, params=None, noise_field=None, **kw):
    """Write a sim or real stamp file; returns (path, params, images)."""
    params = galaxy_params(n, rng) if params is None else params
    nf = noise(n, size, sigma, rng, correlated) if noise_field is None else noise_field
    images = (render(params, size, g1) + nf).astype(np.float32)
    labels = sim_labels(params, sigma, g1) if domain == "sim" else {"flux": params["flux"]}
    write_stamps(path, images, labels, domain=domain, pixel_scale=pixel_scale, source="test",
                 config={}, seed=1, psf=psf_image(size), **kw)
    return path, params, images
