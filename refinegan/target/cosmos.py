"""``real.source: cosmos``: real HST galaxies from a GalSim RealGalaxyCatalog, through the target PSF.

Each galaxy is ``galsim.RealGalaxy`` (the HST image deconvolved by its HST PSF), rotated by a
random angle (``real.cosmos.rotations``) and mirrored where allowed (``flips``), convolved with
the target PSF of ``real.psf`` (as the mock's), drawn at the working pixel scale by the batched
k-space renderer, and given fresh target noise (``real.noise``, as the mock's). The HST noise
left in the reconvolved image (variance label ``hst_noise_var``, far below the target noise at
ground-based scales) is kept, or whitened first with ``real.cosmos.whiten`` (GalSim's
``whitenNoise``; slower, drawn by GalSim per stamp).

Real galaxies are few in the small catalogs the repo ships (data/real_hst: 5 AEGIS galaxies;
in cosmos/test_catalog.fits only row 0 is real), so stamp i draws catalog row
``indices[i % len(indices)]``: each galaxy many times with fresh rotation, flip and noise, all
recorded as labels. The full COSMOS sample (``galsim_download_cosmos``) works the same way:
point ``real.cosmos.dir`` / ``file_name`` at it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import galsim
import numpy as np
from tqdm.auto import tqdm

from ..config import RunConfig
from ..errors import InputDataError
from ..io import StampWriter
from ..seeds import MOCK_EFFECT_WORDS, MOCK_NOISE_WORDS, galaxy_rng
from ..sim.render import make_renderer
from ..sim.simulate import draw_psf_image
from .observe import build_target_psf, correlated_noise, psf_fwhm_arcsec

__all__ = ["open_catalog", "prepare_cosmos"]

logger = logging.getLogger(__name__)

STAMPS_PER_BATCH = 128
DRAW_EXTRA = MOCK_EFFECT_WORDS["cosmos_draw"]  # per-stamp rotation and flip (mock_effects stream)
NOISE_EXTRA = MOCK_NOISE_WORDS["cosmos"]  # per-stamp noise (mock_noise stream)


def open_catalog(directory: str, file_name: str) -> galsim.RealGalaxyCatalog:
    """Open a RealGalaxyCatalog; InputDataError naming the path if it is missing or unreadable."""
    path = Path(directory) / file_name
    if not path.exists():
        raise InputDataError(
            f"real-galaxy catalog {path} not found (real.cosmos.dir / file_name); the repo ships "
            "small catalogs in data/real_hst, the full COSMOS sample comes from "
            "galsim_download_cosmos (then point real.cosmos.dir at its directory)")
    try:
        return galsim.RealGalaxyCatalog(file_name, dir=directory)
    except Exception as err:  # GalSim / astropy raise many types for a bad catalog
        raise InputDataError(f"{path}: not a readable RealGalaxyCatalog ({err})") from None


def _catalog_rows(cat: galsim.RealGalaxyCatalog, sec) -> list[int]:
    """The catalog rows ``real.cosmos.indices`` names (all rows when null), checked."""
    indices = list(range(cat.nobjects)) if sec["indices"] is None else list(sec["indices"])
    bad = [i for i in indices if not 0 <= i < cat.nobjects]
    if not indices or bad:
        raise InputDataError(f"{Path(sec['dir']) / sec['file_name']}: real.cosmos.indices {bad or '[]'} "
                             f"out of range; expected rows in [0, {cat.nobjects})")
    return indices


def _real_galaxies(cat, indices: list[int], sec, seed: int, psf: galsim.GSObject
                   ) -> tuple[dict[int, galsim.GSObject], dict[int, float]]:
    """Each catalog row's RealGalaxy and the variance of the HST noise left after the target PSF."""
    galaxies, hst_var = {}, {}
    for i in sorted(set(indices)):
        try:
            galaxies[i] = galsim.RealGalaxy(cat, index=i, flux_rescale=sec["flux_scale"],
                                            rng=galsim.BaseDeviate(seed + i))
        except Exception as err:
            raise InputDataError(f"{Path(sec['dir']) / sec['file_name']} row {i}: cannot build "
                                 f"the RealGalaxy ({err})") from None
        hst_var[i] = float(galsim.Convolve(galaxies[i], psf).noise.getVariance())
    return galaxies, hst_var


def _draw_batch(ids: np.ndarray, rows: np.ndarray, galaxies: dict, hst_var: dict, sec, seed: int,
                psf: galsim.GSObject, renderer, size: int, scale: float):
    """Noiseless stamps (B, H, W) of catalog rows ``rows`` for stamp ids ``ids``, each rotated
    and flipped by its own draw, and their rotation, flip and residual HST noise variance."""
    rot, flip, objs = np.zeros(ids.size), np.zeros(ids.size, np.int8), []
    for j, gid in enumerate(ids):
        rng = galaxy_rng(seed, "mock_effects", gid, DRAW_EXTRA)
        u_rot, u_flip = rng.random(2)
        rot[j] = 2 * np.pi * u_rot if sec["rotations"] else 0.0
        flip[j] = int(sec["flips"] and u_flip < 0.5)
        g = galaxies[int(rows[j])]
        g = g.transform(-1.0, 0.0, 0.0, 1.0) if flip[j] else g
        objs.append(g.rotate(rot[j] * galsim.radians))
    residual = np.array([hst_var[int(r)] for r in rows])
    if not sec["whiten"]:
        return renderer.render(objs), rot, flip, residual
    clean = np.empty((ids.size, size, size), np.float32)
    for j, g in enumerate(objs):
        final = galsim.Convolve(g, psf)
        im = final.drawImage(nx=size, ny=size, scale=scale)
        im.whitenNoise(final.noise)
        clean[j], residual[j] = im.array, 0.0
    return clean, rot, flip, residual


def prepare_cosmos(config: RunConfig | dict, out: str | os.PathLike, progress: bool = False) -> Path:
    """Write ``real.n`` stamps of real catalog galaxies (``real.cosmos``) to ``out``.

    Parameters
    ----------
    config : RunConfig or dict
        Run configuration: a `RunConfig`, or a dict (validated once, defaults filled).
    out : str or Path
        Output stamp file, domain ``real``, written atomically.
    progress : bool
        Show a progress bar [default: False].
    """
    config = RunConfig.of(config)
    real, sec = config["real"], config["real"]["cosmos"]
    size, scale, n = config.stamp_size, config.pixel_scale, real["n"]
    seed = real["seed"] or config.seed
    sigma = float(real["noise"]["sigma"])
    cat = open_catalog(sec["dir"], sec["file_name"])
    indices = _catalog_rows(cat, sec)
    psf = build_target_psf({**real["psf"], "sim": config["sim"]["psf"]})
    renderer = make_renderer(psf, size, scale)
    fwhm = psf_fwhm_arcsec(psf, scale)
    galaxies, hst_var = _real_galaxies(cat, indices, sec, seed, psf)
    ident = np.array([int(x) if str(x).isdigit() else -1 for x in cat.ident], dtype=np.int64)
    attrs = {"catalog": str(Path(sec["dir"]) / sec["file_name"]), "n_galaxies": len(galaxies),
             "n_rejected": 0, "is_mock": False, "renderer": type(renderer).__name__,
             "whitened": bool(sec["whiten"])}
    source = (f"real HST galaxies ({attrs['catalog']}, {len(galaxies)} galaxies, each drawn ~"
              f"{n / len(galaxies):.0f} times with random rotation{' and flips' if sec['flips'] else ''}"
              f" and fresh noise) through the target PSF, GalSim {galsim.__version__}")
    with StampWriter(out, n, (size, size), domain="real", pixel_scale=scale, source=source,
                     config=config, seed=seed, psf=draw_psf_image(psf, size, scale),
                     extra_attrs=attrs) as writer, \
            tqdm(total=n, unit="stamp", disable=not progress, desc="prepare-real cosmos") as bar:
        for start in range(0, n, STAMPS_PER_BATCH):
            ids = np.arange(start, min(start + STAMPS_PER_BATCH, n), dtype=np.int64)
            rows = np.array([indices[i % len(indices)] for i in ids], dtype=np.int64)
            clean, rot, flip, residual = _draw_batch(ids, rows, galaxies, hst_var, sec, seed, psf,
                                                     renderer, size, scale)
            images = clean
            if sigma > 0:
                rngs = [galaxy_rng(seed, "mock_noise", gid, NOISE_EXTRA) for gid in ids]
                noise, _ = correlated_noise(rngs, (size, size), sigma, real["noise"], scale)
                images = clean + noise
            power = np.sqrt(np.sum(clean.astype(np.float64) ** 2, axis=(1, 2)))
            labels = {
                "id": ids, "cat_index": rows, "ident": ident[rows], "rotation": rot, "flip": flip,
                "flux": np.array([galaxies[int(r)].flux for r in rows]),
                "psf_fwhm": np.full(ids.size, fwhm), "noise_sigma": np.full(ids.size, sigma),
                "snr": power / sigma if sigma > 0 else np.full(ids.size, np.inf),
                "hst_noise_var": residual,
            }
            writer.write(images, labels)
            bar.update(ids.size)
    logger.info("cosmos target: %d stamps of %d real galaxies -> %s", n, len(galaxies), out)
    return Path(out)
