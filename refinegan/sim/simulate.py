"""The ``simulate`` stage: GalSim postage stamps of parametric galaxies, with their labels.

Layout of a run of ``sim.n`` stamps: galaxies ("groups") are indexed by ``pair_id``; each group
holds 1, 2 or 4 stamps of the same galaxy, ordered ``rot90`` in (0, 1) then ``shear_sign`` in
(+1, -1). The stamp ``id`` is ``pair_id * group_size + k``. Everything random about a group comes
from ``SeedSequence([seed, stream, pair_id])`` (`refinegan.seeds.galaxy_rng`), so a stamp's bytes do not
depend on how the run is sharded. Shards split the run on group boundaries.

Noise: white Gaussian, sigma ``sim.noise.sigma`` counts, or, when ``sim.noise.snr`` is set,
sigma = sqrt(sum I0^2) / snr with I0 the group's (rot90=0, +g) noiseless stamp. The two shear
signs of one orientation share their noise field (same pixels), so +g/-g differences measure
the response with the noise cancelled; the two orientations get independent fields.

SNR label: ``snr = sqrt(sum_pixels I^2) / noise_sigma`` of the noiseless stamp I (GalSim's
``addNoiseSNR`` convention: the matched-filter SNR for white noise); ``inf`` when noiseless.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import galsim
import numpy as np
from tqdm.auto import tqdm

from ..config import RunConfig
from ..errors import ConfigError
from ..io import PSF_FLUX_ATTR, StampWriter
from ..seeds import NOISE_FIELDS, NOISE_FIELDS_ATTR, sim_noise_fields
from .population import Population, build_galaxy, sample_population
from .render import make_renderer

__all__ = ["SimParams", "build_psf", "draw_psf_image", "psf_flux_in_stamp", "group_layout", "shard_groups",
           "simulate_groups", "simulate"]

logger = logging.getLogger(__name__)

GROUPS_PER_BATCH = 64  # galaxies rendered per FFT batch (memory ~ 64*4 stamps of M^2 complex64)


@dataclass(frozen=True)
class SimParams:
    """What the simulate stage needs from the config (units: arcsec, counts)."""

    n: int
    seed: int
    stamp_size: int
    pixel_scale: float
    noise_sigma: float
    noise_snr: float | None
    rot90: bool
    shear_sign: bool
    psf_type: str
    psf_fwhm: float
    psf_beta: float
    psf_e1: float
    psf_e2: float

    @classmethod
    def from_config(cls, config: dict) -> SimParams:
        sim = config["sim"]
        return cls(
            n=sim["n"], seed=config["seed"], stamp_size=config["stamp"]["size"],
            pixel_scale=config["stamp"]["pixel_scale"], noise_sigma=sim["noise"]["sigma"],
            noise_snr=sim["noise"]["snr"], rot90=sim["pairs"]["rot90"],
            shear_sign=sim["pairs"]["shear_sign"], psf_type=sim["psf"]["type"],
            psf_fwhm=sim["psf"]["fwhm"], psf_beta=sim["psf"]["beta"],
            psf_e1=sim["psf"]["e1"], psf_e2=sim["psf"]["e2"],
        )

    @property
    def layout(self) -> list[tuple[int, int]]:
        return group_layout(self.rot90, self.shear_sign)

    @property
    def n_groups(self) -> int:
        return self.n // len(self.layout)


def group_layout(rot90: bool, shear_sign: bool) -> list[tuple[int, int]]:
    """(rot90, shear_sign) of each stamp in a group, in file order."""
    return [(r, s) for r in ((0, 1) if rot90 else (0,)) for s in ((1, -1) if shear_sign else (1,))]


def build_psf(psf_type: str, fwhm: float, beta: float = 3.0, e1: float = 0.0, e2: float = 0.0):
    """The simulation PSF as a GalSim profile (fwhm in arcsec; e in reduced-shear convention)."""
    if psf_type == "moffat":
        psf = galsim.Moffat(beta=beta, fwhm=fwhm)
    elif psf_type == "kolmogorov":
        psf = galsim.Kolmogorov(fwhm=fwhm)
    else:
        raise ConfigError(f"sim.psf.type must be 'moffat' or 'kolmogorov', got {psf_type!r}")
    if e1 or e2:
        psf = psf.shear(g1=e1, g2=e2)
    return psf


def draw_psf_image(psf: galsim.GSObject, stamp_size: int, pixel_scale: float) -> np.ndarray:
    """The PSF (with pixel response) as drawn into a stamp, unit sum, float64 (H, W)."""
    im = psf.drawImage(nx=stamp_size, ny=stamp_size, scale=pixel_scale).array
    return im / im.sum()


def psf_flux_in_stamp(psf: galsim.GSObject, stamp_size: int, pixel_scale: float) -> float:
    """The share of the PSF's flux (with pixel response) that falls inside a centred stamp: the
    file attribute `refinegan.io.PSF_FLUX_ATTR`, which PSF matching reads (K's sum is the
    target's over the sims', `refinegan.refiner.psf_match`)."""
    im = psf.drawImage(nx=stamp_size, ny=stamp_size, scale=pixel_scale).array
    return float(im.sum() / psf.flux)


def shard_groups(n_groups: int, shard: int, nshards: int) -> np.ndarray:
    """Group ids of shard ``shard`` of ``nshards`` (contiguous, sizes differ by at most 1)."""
    if nshards < 1:
        raise ConfigError(f"nshards must be >= 1, got {nshards}")
    if not 0 <= shard < nshards:
        raise ConfigError(f"shard must be in [0, {nshards}), got {shard}")
    if nshards > n_groups:
        raise ConfigError(f"{nshards} shards exceed the {n_groups} galaxy groups of the run (groups "
                          f"are never split): some shards would be empty; use at most {n_groups}")
    return np.array_split(np.arange(n_groups, dtype=np.int64), nshards)[shard]


def simulate_groups(p: SimParams, pop: Population, renderer, group_ids: np.ndarray
                    ) -> tuple[np.ndarray, dict]:
    """Stamps (n_groups * group_size, H, W) and labels of the given galaxy groups."""
    layout = p.layout
    k = len(layout)
    params = sample_population(pop, p.seed, group_ids, stream="sim")
    galaxies = []
    for j in range(group_ids.size):
        gal = build_galaxy(pop, params, j)
        g1, g2 = params["g1"][j], params["g2"][j]
        for rot, sign in layout:
            g = gal.rotate(90 * galsim.degrees) if rot else gal
            galaxies.append(g.shear(g1=sign * g1, g2=sign * g2))
    clean = renderer.render(galaxies)  # (B*k, H, W)
    size = clean.shape[-1]
    power = np.sqrt(np.sum(clean.astype(np.float64) ** 2, axis=(1, 2)))  # sqrt(sum I^2)
    sigma = np.full(clean.shape[0], p.noise_sigma, dtype=np.float64)
    if p.noise_snr is not None:
        sigma = np.repeat(power[::k] / p.noise_snr, k)
    rot = np.array([r for r, _ in layout] * group_ids.size, dtype=np.int8)
    images = clean
    if np.any(sigma > 0):
        images = clean + sim_noise_fields(np.repeat(group_ids, k), rot, sigma, p.seed, (size, size))
    sgn = np.array([s for _, s in layout] * group_ids.size, dtype=np.int8)
    rep = lambda a: np.repeat(a, k)  # noqa: E731 - one value per group -> per stamp
    e_sign = np.where(rot == 1, -1.0, 1.0)  # a 90-degree rotation negates e
    with np.errstate(divide="ignore"):
        snr = np.where(sigma > 0, power / np.where(sigma > 0, sigma, 1.0), np.inf)
    labels = {
        "id": (rep(group_ids) * k + np.tile(np.arange(k), group_ids.size)).astype(np.int64),
        "pair_id": rep(group_ids).astype(np.int64),
        "rot90": rot,
        "shear_sign": sgn,
        "g1": rep(params["g1"]) * sgn,
        "g2": rep(params["g2"]) * sgn,
        "e1_int": rep(params["e1_int"]) * e_sign,
        "e2_int": rep(params["e2_int"]) * e_sign,
        "flux": rep(params["flux"]),
        "hlr": rep(params["hlr"]),
        "sersic_n": rep(params["sersic_n"]),
        "psf_fwhm": np.full(images.shape[0], p.psf_fwhm),
        "noise_sigma": sigma,
        "snr": snr,
    }
    if pop.kind == "parametric" and pop.galaxy_type == "bulge_disk":
        labels["bulge_frac"] = rep(params["bulge_frac"])
    if pop.kind == "cosmos":
        labels["cosmos_index"] = rep(params["cosmos_index"])
    return images, labels


def _source_line(p: SimParams, pop: Population) -> str:
    gal = f"COSMOS parametric fits ({pop.cosmos_file})" if pop.kind == "cosmos" else pop.galaxy_type
    noise = f"snr={p.noise_snr}" if p.noise_snr is not None else f"sigma={p.noise_sigma}"
    return (f"GalSim {galsim.__version__} simulation: {gal} galaxies, {p.psf_type} PSF "
            f"fwhm={p.psf_fwhm}\", white Gaussian noise {noise}")


def simulate(config: RunConfig | dict, out: str | os.PathLike, shard: int = 0, nshards: int = 1,
             progress: bool = False, method: str = "kspace") -> Path:
    """Draw shard ``shard`` of ``nshards`` of the simulation described by ``config`` into ``out``.

    Parameters
    ----------
    config : RunConfig or dict
        Run configuration: a `RunConfig`, or a dict (validated once, defaults filled).
    out : str or Path
        Output stamp file (written atomically).
    shard, nshards : int
        Which part of the run to draw [default: the whole run].
    progress : bool
        Show a progress bar [default: False].
    method : {'kspace', 'galsim'}
        Batched k-space drawing (fast, see refinegan.sim.render) or GalSim's drawImage per galaxy.

    Returns
    -------
    Path of the written file.
    """
    config = RunConfig.of(config)
    p = SimParams.from_config(config)
    pop = Population.from_config(config)
    groups = shard_groups(p.n_groups, shard, nshards)
    k = len(p.layout)
    psf = build_psf(p.psf_type, p.psf_fwhm, p.psf_beta, p.psf_e1, p.psf_e2)
    renderer = make_renderer(psf, p.stamp_size, p.pixel_scale, method)
    attrs = {"shard": shard, "nshards": nshards, "n_total": p.n, "group_size": k,
             "renderer": type(renderer).__name__, NOISE_FIELDS_ATTR: NOISE_FIELDS,
             PSF_FLUX_ATTR: psf_flux_in_stamp(psf, p.stamp_size, p.pixel_scale)}
    with StampWriter(
        out, groups.size * k, (p.stamp_size, p.stamp_size), domain="sim",
        pixel_scale=p.pixel_scale, source=_source_line(p, pop), config=config, seed=p.seed,
        psf=draw_psf_image(psf, p.stamp_size, p.pixel_scale), extra_attrs=attrs,
    ) as writer, tqdm(total=groups.size * k, unit="stamp", disable=not progress,
                      desc=f"simulate shard {shard}/{nshards}") as bar:
        for start in range(0, groups.size, GROUPS_PER_BATCH):
            batch = groups[start:start + GROUPS_PER_BATCH]
            images, labels = simulate_groups(p, pop, renderer, batch)
            writer.write(images, labels)
            bar.update(images.shape[0])
    logger.info("simulated %d stamps (shard %d/%d) -> %s", groups.size * k, shard, nshards, out)
    return Path(out)
