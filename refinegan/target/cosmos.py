"""``real.source: cosmos``: real HST galaxies from a GalSim RealGalaxyCatalog, through the target PSF.

Each galaxy is ``galsim.RealGalaxy`` (the HST image deconvolved by its HST PSF), mirrored where
allowed (``real.cosmos.flips``), rotated by a random angle (``rotations``), lensed by a known
shear, convolved with the target PSF of ``real.psf`` (as the mock's), drawn at the working pixel
scale by the batched k-space renderer, and given fresh target noise (``real.noise``, as the
mock's). The HST noise left in the reconvolved image (variance label ``hst_noise_var``, far
below the target noise at ground-based scales) is kept, or whitened first with
``real.cosmos.whiten`` (GalSim's ``whitenNoise``; slower, drawn by GalSim per stamp).

Layout, labels and pairs follow refinegan.sim.simulate, so the set calibrates shear like the
sims and the mock: galaxy groups ``pair_id`` of 1, 2 or 4 stamps, ``rot90`` in (0, 1) then
``shear_sign`` in (+1, -1) (``real.cosmos.pairs``; null = ``sim.pairs``), stamp ``id`` =
``pair_id * group_size + k``. Group ``pair_id`` draws catalog row
``indices[pair_id % len(indices)]`` (the catalogs shipped are small: each galaxy is drawn many
times), one flip and rotation angle, and one applied shear (g1, g2) drawn as the sims draw theirs
(``sim.shear``, `refinegan.sim.population.draw_shear`). The order of operations on the intrinsic
real galaxy is: flip, random rotation, the rot90 twin's extra 90 degrees, shear by
``shear_sign * g``, then the target PSF, so the labels ``g1``, ``g2`` are the shear in the stamp's
frame. The +g / -g stamps of one orientation share their noise field (as the sims' and the
mock's), the two orientations get independent ones.

Random streams are the target's own, seeded by ``real.seed`` or the master seed: ``mock_effects``
(word ``cosmos_draw``: rotation, flip, then shear, per group) and ``mock_noise`` (word
``cosmos``, then the rotation: noise and whitening, per group and orientation); never the sim's.
The full COSMOS sample (``galsim_download_cosmos``) works the same way: point
``real.cosmos.dir`` / ``file_name`` at it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import galsim
import numpy as np
from tqdm.auto import tqdm

from ..config import RunConfig
from ..errors import ConfigError, InputDataError
from ..io import PSF_FLUX_ATTR, StampWriter
from ..seeds import MOCK_EFFECT_WORDS, MOCK_NOISE_WORDS, galaxy_rng
from ..sim.population import Population, draw_shear
from ..sim.render import make_renderer
from ..sim.simulate import draw_psf_image, group_layout, psf_flux_in_stamp
from .observe import build_target_psf, correlated_noise, psf_fwhm_arcsec

__all__ = ["open_catalog", "cosmos_layout", "prepare_cosmos"]

logger = logging.getLogger(__name__)

GROUPS_PER_BATCH = 32  # galaxy groups per FFT batch (up to 128 stamps)
DRAW_EXTRA = MOCK_EFFECT_WORDS["cosmos_draw"]  # per-group rotation, flip, shear (mock_effects stream)
NOISE_EXTRA = MOCK_NOISE_WORDS["cosmos"]  # per-group-and-orientation noise (mock_noise stream)
WHITEN_WORD = 1  # after NOISE_EXTRA and the rotation: the seed of GalSim's whitening noise


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


def cosmos_layout(config: RunConfig) -> list[tuple[int, int]]:
    """(rot90, shear_sign) of each stamp of a group (``real.cosmos.pairs``, null = ``sim.pairs``);
    ConfigError unless ``real.n`` is a whole number of groups."""
    pairs, sim_pairs = config["real"]["cosmos"]["pairs"], config["sim"]["pairs"]
    rot90 = sim_pairs["rot90"] if pairs["rot90"] is None else pairs["rot90"]
    sign = sim_pairs["shear_sign"] if pairs["shear_sign"] is None else pairs["shear_sign"]
    layout = group_layout(bool(rot90), bool(sign))
    n = config["real"]["n"]
    if n % len(layout):
        raise ConfigError(f"real.n = {n} must be a multiple of {len(layout)} (cosmos pairs "
                          f"rot90={rot90}, shear_sign={sign} make groups of {len(layout)} stamps)")
    return layout


def _group_draw(seed: int, sec, pop: Population, gid: int) -> tuple[float, int, float, float]:
    """Rotation (radians), flip and applied shear (g1, g2) of group ``gid``, in that draw order."""
    rng = galaxy_rng(seed, "mock_effects", gid, DRAW_EXTRA)
    u_rot, u_flip = rng.random(2)
    g1, g2 = draw_shear(pop, rng)
    rot = 2 * np.pi * u_rot if sec["rotations"] else 0.0
    return rot, int(sec["flips"] and u_flip < 0.5), g1, g2


def _lensed(gal: galsim.GSObject, flip: int, rot: float, rot90: int, g1: float, g2: float):
    """The intrinsic galaxy mirrored, rotated (random angle, then the twin's 90 degrees) and
    sheared, in that order: the shear acts in the stamp's frame, before the PSF."""
    gal = gal.transform(-1.0, 0.0, 0.0, 1.0) if flip else gal
    gal = gal.rotate(rot * galsim.radians)
    gal = gal.rotate(90 * galsim.degrees) if rot90 else gal
    return gal.shear(g1=g1, g2=g2)


def _whitened(objs: list, psf, seeds: list[int], size: int, scale: float) -> np.ndarray:
    """GalSim draws of ``objs`` through ``psf`` with their HST noise whitened (per-stamp seeds)."""
    clean = np.empty((len(objs), size, size), np.float32)
    for j, g in enumerate(objs):
        final = galsim.Convolve(g, psf)
        im = final.drawImage(nx=size, ny=size, scale=scale)
        im.whitenNoise(final.noise.copy(rng=galsim.BaseDeviate(seeds[j])))
        clean[j] = im.array
    return clean


def _draw_groups(group_ids: np.ndarray, layout, indices: list[int], galaxies: dict, hst_var: dict,
                 sec, pop: Population, seed: int, psf, renderer, size: int, scale: float):
    """Noiseless stamps (B * k, H, W) of the groups, and their per-stamp draw labels."""
    k = len(layout)
    rows = np.array([indices[int(g) % len(indices)] for g in group_ids], dtype=np.int64)
    draws = [_group_draw(seed, sec, pop, int(g)) for g in group_ids]
    objs, white_seeds = [], []
    for j, gid in enumerate(group_ids):
        rot, flip, g1, g2 = draws[j]
        for r90, sign in layout:
            objs.append(_lensed(galaxies[int(rows[j])], flip, rot, r90, sign * g1, sign * g2))
            if sec["whiten"]:  # +g / -g twins of one orientation share the whitening seed
                rng = galaxy_rng(seed, "mock_noise", int(gid), NOISE_EXTRA, r90, WHITEN_WORD)
                white_seeds.append(int(rng.integers(1, 2**31)))
    clean = (_whitened(objs, psf, white_seeds, size, scale) if sec["whiten"]
             else renderer.render(objs))
    rep = lambda a: np.repeat(np.asarray(a), k)  # noqa: E731 - one value per group -> per stamp
    sgn = np.array([s for _, s in layout] * group_ids.size, dtype=np.int8)
    residual = rep([hst_var[int(r)] for r in rows]) * (0.0 if sec["whiten"] else 1.0)
    labels = {
        "id": (rep(group_ids) * k + np.tile(np.arange(k), group_ids.size)).astype(np.int64),
        "pair_id": rep(group_ids).astype(np.int64),
        "rot90": np.array([r for r, _ in layout] * group_ids.size, dtype=np.int8),
        "shear_sign": sgn,
        "g1": rep([d[2] for d in draws]) * sgn, "g2": rep([d[3] for d in draws]) * sgn,
        "cat_index": rep(rows), "rotation": rep([d[0] for d in draws]),
        "flip": rep([d[1] for d in draws]).astype(np.int8),
        "flux": rep([galaxies[int(r)].flux for r in rows]), "hst_noise_var": residual,
    }
    return clean, labels


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
    layout = cosmos_layout(config)
    k = len(layout)
    rots = sorted({r for r, _ in layout})
    pop = Population.from_config(config)
    cat = open_catalog(sec["dir"], sec["file_name"])
    indices = _catalog_rows(cat, sec)
    psf = build_target_psf({**real["psf"], "sim": config["sim"]["psf"]})
    renderer = make_renderer(psf, size, scale)
    fwhm = psf_fwhm_arcsec(psf, scale)
    galaxies, hst_var = _real_galaxies(cat, indices, sec, seed, psf)
    ident = np.array([int(x) if str(x).isdigit() else -1 for x in cat.ident], dtype=np.int64)
    attrs = {"catalog": str(Path(sec["dir"]) / sec["file_name"]), "n_galaxies": len(galaxies),
             "n_rejected": 0, "is_mock": False, "renderer": type(renderer).__name__,
             "whitened": bool(sec["whiten"]), "group_size": k, "n_total": n,
             PSF_FLUX_ATTR: psf_flux_in_stamp(psf, size, scale)}
    shear = (f"uniform |g_i| <= {pop.shear_max}" if pop.shear_distribution == "uniform"
             else f"g = ({pop.g1}, {pop.g2})")
    groups = np.arange(n // k, dtype=np.int64)
    source = (f"real HST galaxies ({attrs['catalog']}, {len(galaxies)} galaxies, each in ~"
              f"{groups.size / len(galaxies):.1f} groups of {k} stamps (rot90 / +-g twins) with "
              f"random rotation{' and flips' if sec['flips'] else ''}, applied shear {shear} and "
              f"fresh noise) through the target PSF, GalSim {galsim.__version__}")
    with StampWriter(out, n, (size, size), domain="real", pixel_scale=scale, source=source,
                     config=config, seed=seed, psf=draw_psf_image(psf, size, scale),
                     extra_attrs=attrs) as writer, \
            tqdm(total=n, unit="stamp", disable=not progress, desc="prepare-real cosmos") as bar:
        for start in range(0, groups.size, GROUPS_PER_BATCH):
            batch = groups[start:start + GROUPS_PER_BATCH]
            clean, labels = _draw_groups(batch, layout, indices, galaxies, hst_var, sec, pop,
                                         seed, psf, renderer, size, scale)
            images = clean
            if sigma > 0:  # one field per group and orientation, shared by its +g / -g twins
                rngs = [galaxy_rng(seed, "mock_noise", int(g), NOISE_EXTRA, r)
                        for g in batch for r in rots]
                fields, _ = correlated_noise(rngs, (size, size), sigma, real["noise"], scale)
                which = [j * len(rots) + rots.index(r) for j in range(batch.size) for r, _ in layout]
                images = clean + fields[which]
            power = np.sqrt(np.sum(clean.astype(np.float64) ** 2, axis=(1, 2)))
            m = images.shape[0]
            labels.update({
                "ident": ident[labels["cat_index"]], "psf_fwhm": np.full(m, fwhm),
                "noise_sigma": np.full(m, sigma),
                "snr": power / sigma if sigma > 0 else np.full(m, np.inf),
            })
            writer.write(images, labels)
            bar.update(m)
    logger.info("cosmos target: %d stamps (%d groups of %d) of %d real galaxies -> %s", n,
                groups.size, k, len(galaxies), out)
    return Path(out)
