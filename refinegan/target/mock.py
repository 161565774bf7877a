"""The mock target: the sim's galaxy population plus the effects simulations miss, with known truth.

The default "real" set of a run is this mock, so the pipeline runs anywhere; it is *not* real
data (docs/real_data.md says how to point a run at real data). Each effect is switchable in the
config section ``real.mock`` (target PSF and noise in ``real.psf`` / ``real.noise``):

- knots: star-forming clumps, ``galsim.RandomKnots`` following the galaxy's light and shape;
- bulge: an extra de Vaucouleurs bulge, offset from the centre and misaligned with the disk;
- PSF: Kolmogorov atmosphere convolved with ``galsim.OpticalPSF`` (obscuration, struts,
  aberrations), drawn once into the k-space renderer and reused for every stamp;
- correlated noise: a coadd of dithered white-noise frames, each resampled by a Lanczos kernel at
  a random sub-pixel shift (or ``galsim.getCOSMOSNoise`` at the working scale);
- cosmic rays (``/mask`` bit 1) and hot pixels (bit 2);
- faint neighbours, lensed by the same shear but not rotated with the galaxy.

Layout, labels and pairs follow refinegan.sim.simulate (``pair_id``, ``rot90``, ``shear_sign``; the
+g/-g stamps of one orientation share noise, cosmic rays and hot pixels). Random streams are the
population's ``mock`` (galaxy parameters), ``mock_noise`` (noise fields) and ``mock_effects``
(effects), seeded by ``real.seed`` or the master seed: never the sim's streams.
"""

from __future__ import annotations

import json
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
from ..seeds import MOCK_EFFECT_WORDS, galaxy_rng
from ..sim.population import Population, build_galaxy, sample_population
from ..sim.render import KSpaceRenderer, make_renderer
from ..sim.simulate import draw_psf_image, group_layout, psf_flux_in_stamp
from .observe import build_target_psf, correlated_noise, psf_fwhm_arcsec

__all__ = ["MockParams", "KnottedScene",
           "add_cosmic_rays", "add_hot_pixels", "mock_groups", "prepare_mock", "write_mock_file"]

logger = logging.getLogger(__name__)

GROUPS_PER_BATCH = 64  # galaxies per FFT batch, as in simulate
MASK_COSMIC_RAY = 1  # /mask bit of a cosmic-ray pixel
MASK_HOT_PIXEL = 2  # /mask bit of a hot pixel
NEIGHBOUR_HLR_RANGE = (0.2, 0.6)  # arcsec, uniform
NEIGHBOUR_SHAPE_SIGMA = 0.2  # per-component ellipticity sigma of neighbours
NEIGHBOUR_MAX_SHAPE = 0.6
BULGE_SHAPE_FRACTION = 0.5  # extra bulge |e| = this x the disk's |e|
_ROT90 = np.array([[0.0, -1.0], [1.0, 0.0]])  # counter-clockwise, as GSObject.rotate


@dataclass(frozen=True)
class MockParams:
    """What the mock needs from the config (arcsec, counts; effect sections as plain dicts)."""

    n: int
    seed: int
    stamp_size: int
    pixel_scale: float
    rot90: bool
    shear_sign: bool
    psf: dict
    noise: dict
    effects: dict

    @classmethod
    def from_config(cls, config: dict) -> MockParams:
        real = config["real"]
        pairs = real["mock"]["pairs"]
        rot90 = config["sim"]["pairs"]["rot90"] if pairs["rot90"] is None else pairs["rot90"]
        sign = config["sim"]["pairs"]["shear_sign"] if pairs["shear_sign"] is None else pairs["shear_sign"]
        p = cls(n=real["n"], seed=real["seed"] or config["seed"], stamp_size=config["stamp"]["size"],
                pixel_scale=config["stamp"]["pixel_scale"], rot90=bool(rot90), shear_sign=bool(sign),
                psf={**real["psf"], "sim": dict(config["sim"]["psf"])}, noise=dict(real["noise"]),
                effects={k: dict(v) for k, v in real["mock"].items() if k != "pairs"})
        k = len(p.layout)
        on = [e for e in ("knots", "bulge") if p.on(e)]  # a disabled effect takes no flux
        fmax = sum(p.effects[e]["fraction_max"] for e in on)
        if fmax >= 1:
            raise ConfigError(f"{' + '.join(f'real.mock.{e}.fraction_max' for e in on)} = "
                              f"{fmax:g} must be below 1 (the disk keeps the rest of the flux)")
        if p.n % k:
            raise ConfigError(f"real.n = {p.n} must be a multiple of {k} (mock pairs rot90={rot90}, "
                              f"shear_sign={sign} make groups of {k} stamps)")
        return p

    @property
    def layout(self) -> list[tuple[int, int]]:
        return group_layout(self.rot90, self.shear_sign)

    def on(self, effect: str) -> bool:
        return bool(self.effects[effect]["enabled"])


def add_cosmic_rays(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, spec: dict,
                    unit: float) -> int:
    """Add Poisson(mean_count) straight tracks in place (values in ``unit`` counts); return count."""
    count = int(rng.poisson(spec["mean_count"]))
    h, w = image.shape
    for _ in range(count):
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        angle, length = rng.uniform(0, np.pi), rng.uniform(1, spec["length_max"])
        t = np.arange(0, length, 0.5)
        ys = np.clip(np.floor(y0 + t * np.sin(angle)).astype(int), 0, h - 1)
        xs = np.clip(np.floor(x0 + t * np.cos(angle)).astype(int), 0, w - 1)
        pix = np.unique(ys * w + xs)
        amp = rng.uniform(spec["amplitude_min"], spec["amplitude_max"], size=pix.size) * unit
        image.flat[pix] += amp.astype(image.dtype)
        mask.flat[pix] |= MASK_COSMIC_RAY
    return count


def add_hot_pixels(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, spec: dict,
                   unit: float) -> int:
    """Add Poisson(mean_count) hot pixels in place; return the count."""
    count = int(rng.poisson(spec["mean_count"]))
    pix = rng.integers(0, image.size, size=count)
    amp = rng.uniform(spec["amplitude_min"], spec["amplitude_max"], size=count) * unit
    image.flat[pix] += amp.astype(image.dtype)
    mask.flat[pix] |= MASK_HOT_PIXEL
    return count


class KnottedScene:
    """A GSObject plus point-like knots, drawn in k space by one matrix product.

    `refinegan.sim.render.KSpaceRenderer` only calls ``_drawKImage(kimage)`` on what it draws.
    GalSim evaluates each of the N delta functions of ``RandomKnots`` over the whole k grid in
    turn; here exp(-i k.x) is separable, so all N knots are one (M x N) @ (N x M/2+1) product,
    equal to GalSim's (tests/test_mock.py) and about 20x faster for 20 knots. ``obj``: all but
    the knots; ``points`` (N, 2): knot (x, y) in arcsec, already transformed (shape, rotation,
    shear); ``flux_each``: counts per knot.
    """

    def __init__(self, obj: galsim.GSObject, points: np.ndarray, flux_each: float) -> None:
        self.obj, self.points, self.flux_each = obj, np.asarray(points, float), float(flux_each)

    def _drawKImage(self, kimage: galsim.Image) -> None:  # noqa: N802 - GalSim's name
        self.obj._drawKImage(kimage)
        b, dk = kimage.bounds, kimage.scale
        kx, ky = np.arange(b.xmin, b.xmax + 1) * dk, np.arange(b.ymin, b.ymax + 1) * dk
        rows = np.exp(-1j * np.outer(ky, self.points[:, 1])) * self.flux_each  # (M, N)
        cols = np.exp(-1j * np.outer(self.points[:, 0], kx))  # (N, M/2+1)
        kimage.array[:] += rows @ cols

    def to_gsobject(self) -> galsim.GSObject:
        """The same scene as a plain GalSim profile (for GalSim's own drawImage)."""
        deltas = [galsim.DeltaFunction(flux=self.flux_each).shift(x, y) for x, y in self.points]
        return galsim.Add([self.obj, *deltas])


def _intrinsic(p: MockParams, pop: Population, params: dict, j: int, gid: int):
    """Galaxy j with knots and extra bulge, its neighbours, and its effect labels."""
    rng = galaxy_rng(p.seed, "mock_effects", gid, MOCK_EFFECT_WORDS["intrinsic"])
    eff = p.effects
    # Fixed draw order whatever is switched off: switching one effect never changes another.
    u_k, u_b, u_r, u_phi, u_mis = rng.random(5)
    knot_seed = int(rng.integers(1, 2**31))
    fk = u_k * eff["knots"]["fraction_max"] if p.on("knots") else 0.0
    fb = u_b * eff["bulge"]["fraction_max"] if p.on("bulge") else 0.0
    flux, hlr = float(params["flux"][j]), float(params["hlr"][j])
    shape = galsim.Shear(g1=float(params["e1_int"][j]), g2=float(params["e2_int"][j]))
    gal = build_galaxy(pop, params, j)
    parts = [gal.withScaledFlux(1 - fk - fb)]
    knots = None
    if fk > 0:
        rk = galsim.RandomKnots(eff["knots"]["npoints"], half_light_radius=hlr, flux=fk * flux,
                                rng=galsim.BaseDeviate(knot_seed))
        knots = (rk.points @ shape.getMatrix().T, fk * flux / eff["knots"]["npoints"])
    offset = u_r * eff["bulge"]["offset_max"]
    misalign = (2 * u_mis - 1) * eff["bulge"]["misalign_max"]
    if fb > 0:
        b_shape = galsim.Shear(g=BULGE_SHAPE_FRACTION * shape.g,
                               beta=shape.beta + misalign * galsim.degrees)
        bulge = galsim.DeVaucouleurs(half_light_radius=eff["bulge"]["hlr_ratio"] * hlr, flux=fb * flux)
        ang = 2 * np.pi * u_phi
        parts.append(bulge.shear(b_shape).shift(offset * np.cos(ang), offset * np.sin(ang)))
    central = galsim.Add(parts) if len(parts) > 1 else parts[0]
    nb_spec, neighbours = eff["neighbours"], []
    count = int(rng.poisson(nb_spec["mean_count"]))
    r_max = 0.5 * p.stamp_size * p.pixel_scale * np.sqrt(2)
    for _ in range(count):
        u_d, u_a, u_f, u_h = rng.random(4)
        e1, e2 = np.clip(rng.normal(0, NEIGHBOUR_SHAPE_SIGMA, 2), -NEIGHBOUR_MAX_SHAPE, NEIGHBOUR_MAX_SHAPE)
        if not p.on("neighbours"):
            continue
        d = nb_spec["min_distance"] + u_d * max(r_max - nb_spec["min_distance"], 0.0)
        ratio = nb_spec["flux_ratio_min"] * (nb_spec["flux_ratio_max"] / nb_spec["flux_ratio_min"]) ** u_f
        hlr_nb = NEIGHBOUR_HLR_RANGE[0] + u_h * (NEIGHBOUR_HLR_RANGE[1] - NEIGHBOUR_HLR_RANGE[0])
        nb = galsim.Exponential(half_light_radius=hlr_nb, flux=ratio * flux).shear(g1=e1, g2=e2)
        neighbours.append(nb.shift(d * np.cos(2 * np.pi * u_a), d * np.sin(2 * np.pi * u_a)))
    labels = {"knots_frac": fk, "bulge_extra_frac": fb, "bulge_offset": offset if fb > 0 else 0.0,
              "bulge_misalign": misalign if fb > 0 else 0.0, "n_neighbours": len(neighbours)}
    return central, knots, neighbours, labels


def mock_groups(p: MockParams, pop: Population, renderer, group_ids: np.ndarray, psf_fwhm: float,
                params: dict | None = None, noise_stream: str = "mock_noise"
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stamps (n_groups * k, H, W), mask and labels of the given mock galaxy groups.

    ``params``: the galaxies' `sample_population` parameters [default: the mock's own, stream
    ``mock``]; ``noise_stream``: the `refinegan.seeds.STREAMS` entry of the noise fields
    [default: ``mock_noise``]. The paired twin (`refinegan.target.twin`) passes the sims' galaxies
    and its own noise stream; the effects' draws stay on ``mock_effects``, keyed by group id.
    """
    layout, k = p.layout, len(p.layout)
    if params is None:
        params = sample_population(pop, p.seed, group_ids, stream="mock")
    scenes, extra = [], []
    fast_knots = isinstance(renderer, KSpaceRenderer)
    for j, gid in enumerate(group_ids):
        central, knots, neighbours, lab = _intrinsic(p, pop, params, j, int(gid))
        extra.append(lab)
        g1, g2 = params["g1"][j], params["g2"][j]
        for rot, sign in layout:
            c = central.rotate(90 * galsim.degrees) if rot else central
            scene = galsim.Add([c, *neighbours]) if neighbours else c
            shear = galsim.Shear(g1=sign * g1, g2=sign * g2)
            scene = scene.shear(shear)
            if knots is not None:  # positions follow the rotation and the lensing shear
                matrix = shear.getMatrix() @ (_ROT90 if rot else np.eye(2))
                scene = KnottedScene(scene, knots[0] @ matrix.T, knots[1])
                scene = scene if fast_knots else scene.to_gsobject()
            scenes.append(scene)
    clean = renderer.render(scenes)  # (B*k, H, W)
    size = clean.shape[-1]
    sigma = float(p.noise["sigma"])
    images, mask = clean.copy(), np.zeros(clean.shape, dtype=np.uint8)
    rots = sorted({r for r, _ in layout})
    lag1 = np.zeros(clean.shape[0])
    if sigma > 0:
        rngs = [galaxy_rng(p.seed, noise_stream, gid, rot) for gid in group_ids for rot in rots]
        fields, lag = correlated_noise(rngs, (size, size), sigma, p.noise, p.pixel_scale)
    n_cr, n_hot = np.zeros(clean.shape[0], np.int32), np.zeros(clean.shape[0], np.int32)
    unit = sigma if sigma > 0 else 1.0
    for j, gid in enumerate(group_ids):
        for ri, rot in enumerate(rots):
            members = [j * k + i for i, (r, _) in enumerate(layout) if r == rot]
            if sigma > 0:
                images[members] += fields[j * len(rots) + ri]
                lag1[members] = lag[j * len(rots) + ri]
            det_rng = galaxy_rng(p.seed, "mock_effects", gid, MOCK_EFFECT_WORDS["cosmic_rays"], rot)
            delta, dmask = np.zeros((size, size), np.float32), np.zeros((size, size), np.uint8)
            cr = add_cosmic_rays(delta, dmask, det_rng, p.effects["cosmic_rays"], unit) \
                if p.on("cosmic_rays") else 0
            hot_rng = galaxy_rng(p.seed, "mock_effects", gid, MOCK_EFFECT_WORDS["hot_pixels"], rot)
            hot = add_hot_pixels(delta, dmask, hot_rng, p.effects["hot_pixels"], unit) \
                if p.on("hot_pixels") else 0
            images[members] += delta
            mask[members] |= dmask
            n_cr[members], n_hot[members] = cr, hot
    rot = np.array([r for r, _ in layout] * group_ids.size, dtype=np.int8)
    sgn = np.array([s for _, s in layout] * group_ids.size, dtype=np.int8)
    rep = lambda a: np.repeat(np.asarray(a), k)  # noqa: E731 - one value per group -> per stamp
    power = np.sqrt(np.sum(clean.astype(np.float64) ** 2, axis=(1, 2)))
    labels = {
        "id": (rep(group_ids) * k + np.tile(np.arange(k), group_ids.size)).astype(np.int64),
        "pair_id": rep(group_ids).astype(np.int64), "rot90": rot, "shear_sign": sgn,
        "g1": rep(params["g1"]) * sgn, "g2": rep(params["g2"]) * sgn,
        "e1_int": rep(params["e1_int"]) * np.where(rot == 1, -1.0, 1.0),
        "e2_int": rep(params["e2_int"]) * np.where(rot == 1, -1.0, 1.0),
        "flux": rep(params["flux"]), "hlr": rep(params["hlr"]), "sersic_n": rep(params["sersic_n"]),
        "psf_fwhm": np.full(clean.shape[0], psf_fwhm), "noise_sigma": np.full(clean.shape[0], sigma),
        "snr": power / sigma if sigma > 0 else np.full(clean.shape[0], np.inf),
        "noise_lag1": lag1, "n_cosmic_rays": n_cr, "n_hot_pixels": n_hot,
    }
    for name in ("knots_frac", "bulge_extra_frac", "bulge_offset", "bulge_misalign", "n_neighbours"):
        labels[name] = rep([e[name] for e in extra])
    labels["n_neighbours"] = labels["n_neighbours"].astype(np.int32)
    if pop.kind == "parametric" and pop.galaxy_type == "bulge_disk":
        labels["bulge_frac"] = rep(params["bulge_frac"])
    if pop.kind == "cosmos":
        labels["cosmos_index"] = rep(params["cosmos_index"])
    return images, mask, labels


def prepare_mock(config: RunConfig | dict, out: str | os.PathLike, progress: bool = False,
                 method: str = "kspace") -> Path:
    """Write the mock target (``real.source: mock``) to ``out``; see the module docstring.

    Parameters
    ----------
    config : RunConfig or dict
        Run configuration: a `RunConfig`, or a dict (validated once, defaults filled).
    out : str or Path
        Output stamp file, domain ``real``, written atomically.
    progress : bool
        Show a progress bar [default: False].
    method : {'kspace', 'galsim'}
        Renderer, as in refinegan.sim.simulate.simulate.
    """
    config = RunConfig.of(config)
    p = MockParams.from_config(config)

    def draw(pop, renderer, batch, fwhm):
        return mock_groups(p, pop, renderer, batch, fwhm)

    return write_mock_file(config, p, out, progress, method, draw, "mock target",
                           "sim population, effects", "prepare-real mock")


def write_mock_file(config: RunConfig, p: MockParams, out: str | os.PathLike, progress: bool,
                    method: str, draw, what: str, drawn_from: str, desc: str,
                    extra_attrs: dict | None = None) -> Path:
    """The mock's file writer, shared with the paired twin (`refinegan.target.twin`).

    ``draw(pop, renderer, group_ids, psf_fwhm)`` returns (images, mask, labels) of a batch of
    galaxy groups (`mock_groups`); ``what`` names the target in the source, bar and log,
    ``drawn_from`` says what its galaxies are, ``desc`` labels the progress bar; ``extra_attrs``
    go beside the mock's attributes.
    """
    pop = Population.from_config(config)
    psf = build_target_psf(p.psf)
    renderer = make_renderer(psf, p.stamp_size, p.pixel_scale, method)
    fwhm = psf_fwhm_arcsec(psf, p.pixel_scale)
    k = len(p.layout)
    groups = np.arange(p.n // k, dtype=np.int64)
    effects = {**{name: p.on(name) for name in p.effects}, "optical_psf": bool(p.psf["optical"]),
               "noise_correlation": p.noise["correlation"]}
    attrs = {"group_size": k, "n_total": p.n, "renderer": type(renderer).__name__,
             "mock_effects": json.dumps(effects, sort_keys=True), "is_mock": True,
             "n_rejected": 0, PSF_FLUX_ATTR: psf_flux_in_stamp(psf, p.stamp_size, p.pixel_scale),
             **(extra_attrs or {})}
    source = (f"refinegan {what} (NOT real data; known truth): {drawn_from} "
              f"{', '.join(name for name, v in effects.items() if v is True)}, "
              f"noise {p.noise['correlation']} sigma={p.noise['sigma']}, GalSim {galsim.__version__}")
    with StampWriter(out, p.n, (p.stamp_size, p.stamp_size), domain="real",
                     pixel_scale=p.pixel_scale, source=source, config=config, seed=p.seed,
                     psf=draw_psf_image(psf, p.stamp_size, p.pixel_scale), with_mask=True,
                     extra_attrs=attrs) as writer, \
            tqdm(total=p.n, unit="stamp", disable=not progress, desc=desc) as bar:
        for start in range(0, groups.size, GROUPS_PER_BATCH):
            batch = groups[start:start + GROUPS_PER_BATCH]
            images, mask, labels = draw(pop, renderer, batch, fwhm)
            writer.write(images, labels, mask)
            bar.update(images.shape[0])
    logger.info("%s: %d stamps, psf fwhm %.3f\", effects %s -> %s", what, p.n, fwhm, effects, out)
    return Path(out)
