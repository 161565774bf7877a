"""Stamp sets with known answers for the compare tests (built with GalSim, written with io)."""

from __future__ import annotations

import galsim
import numpy as np

from refinegan.io import SIM_LABELS, write_stamps

SCALE = 0.2  # arcsec / pixel


def make_pairs(
    n_gal: int,
    *,
    g: tuple[float, float] = (0.02, 0.0),
    bias: float = 0.0,
    noise: float = 0.0,
    profile: str = "gauss",
    psf_fwhm: float = 0.6,
    size: int = 32,
    e_int: float = 0.2,
    hlr: float = 0.5,
    flux: float = 5000.0,
    seed: int = 1,
    method: str = "no_pixel",
):
    """Galaxies in groups of 4 (rot90 in (0,1) x shear_sign in (+1,-1)), as the sims order them.

    Intrinsic position angles are theta_k = k pi / (2 n_gal), so the e^{4 i theta} terms that a
    single rotated pair leaves cancel over the set. Drawn with shear (1 + bias) g and labelled g.
    Noise is Gaussian with sigma ``noise``; the +/-g twins of a rotation share their noise field.
    Returns images (4 n_gal, size, size), labels, psf image.
    """
    rng = np.random.default_rng(seed)
    psf = galsim.Gaussian(fwhm=psf_fwhm)
    rows, ims = [], []
    for k in range(n_gal):
        theta = k * np.pi / (2 * n_gal)
        if profile == "gauss":
            gal = galsim.Gaussian(half_light_radius=hlr, flux=flux)
        else:
            gal = galsim.Exponential(half_light_radius=hlr, flux=flux)
        for rot in (0, 1):
            angle = theta + rot * np.pi / 2
            shaped = gal.shear(g=e_int, beta=angle * galsim.radians)
            field = rng.normal(0.0, noise, (size, size)) if noise > 0 else 0.0
            for sign in (1, -1):
                g1, g2 = sign * g[0], sign * g[1]
                obj = shaped.shear(g1=(1 + bias) * g1, g2=(1 + bias) * g2)
                img = galsim.Convolve(obj, psf).drawImage(nx=size, ny=size, scale=SCALE,
                                                         method=method).array
                ims.append(img + field)
                rows.append((4 * k + 2 * rot + (sign < 0), g1, g2, e_int * np.cos(2 * angle),
                             e_int * np.sin(2 * angle), flux, hlr, 0.5 if profile == "gauss" else 1.0,
                             psf_fwhm, noise, 0.0, k, rot, sign))
    arr = np.array(rows)
    names = (*SIM_LABELS, "pair_id", "rot90", "shear_sign")
    labels = {name: arr[:, j] for j, name in enumerate(names)}
    for name in ("id", "pair_id", "rot90", "shear_sign"):
        labels[name] = labels[name].astype(np.int64)
    psf_img = psf.drawImage(nx=25, ny=25, scale=SCALE, method=method).array
    return np.array(ims, np.float32), labels, psf_img


def write_set(path, images, labels, psf, domain: str, parent: str | None = None):
    extra = {"parent": str(parent), "model_sha256": "0" * 64} if domain == "refined" else None
    return write_stamps(path, images, labels, domain=domain, pixel_scale=SCALE,
                        source=f"test {domain}", config={}, seed=1, psf=psf, extra_attrs=extra)
