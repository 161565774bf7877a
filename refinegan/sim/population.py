"""The galaxy population: per-galaxy parameters drawn from (seed, stream, galaxy id) alone.

Shared by the simulation and the mock target (which draws the same population with its own
stream, so its galaxies differ from the sim's but follow the same distributions).

Conventions
-----------
- Ellipticities (``e1_int``, ``e2_int``, PSF ``e1``/``e2``) use the reduced-shear convention
  |e| = (a - b) / (a + b), the same as GalSim's ``shear(g1=, g2=)``; then an applied shear g
  adds to e to first order and <e> = g for an isotropic population.
- ``hlr`` is the half-light radius in arcsec of the circular profile before intrinsic
  ellipticity and lensing (GalSim's shear conserves area, so it is the sqrt(ab) radius);
  for bulge + disk it is the half-light radius of the sum, found by root finding on the
  analytic enclosed-flux profiles.
- ``sersic_n`` is the drawn (grid-rounded) index; for bulge + disk it is NaN (see
  ``bulge_frac`` instead).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import galsim
import numpy as np
from scipy import optimize, special

from ..errors import ConfigError, InputDataError
from ..seeds import galaxy_rng

__all__ = ["Population", "sample_population", "build_galaxy", "draw_shear"]

DEV_N = 4.0  # de Vaucouleurs bulge index
EXP_N = 1.0  # exponential disk index


@dataclass(frozen=True)
class Population:
    """Parameter distributions of the galaxies (config section ``sim.galaxy`` etc.).

    Build with `Population.from_config`. Units: arcsec for radii, counts for flux.
    """

    kind: str  # "parametric" or "cosmos"
    galaxy_type: str  # "sersic" or "bulge_disk"
    n_min: float
    n_max: float
    n_step: float
    hlr_median: float
    hlr_sigma_ln: float
    hlr_min: float
    hlr_max: float
    flux_min: float
    flux_max: float
    bulge_frac_max: float
    bulge_hlr_ratio: float
    shape_sigma: float
    shape_max: float
    shear_distribution: str
    g1: float
    g2: float
    shear_max: float
    cosmos_dir: str
    cosmos_file: str
    cosmos_flux_scale: float

    @classmethod
    def from_config(cls, config: dict) -> Population:
        sim = config["sim"]
        gal = sim["galaxy"]
        return cls(
            kind=sim["population"],
            galaxy_type=gal["type"],
            n_min=gal["sersic_n_min"],
            n_max=gal["sersic_n_max"],
            n_step=gal["sersic_n_step"],
            hlr_median=gal["hlr_median"],
            hlr_sigma_ln=gal["hlr_sigma_ln"],
            hlr_min=gal["hlr_min"],
            hlr_max=gal["hlr_max"],
            flux_min=gal["flux_min"],
            flux_max=gal["flux_max"],
            bulge_frac_max=gal["bulge_frac_max"],
            bulge_hlr_ratio=gal["bulge_hlr_ratio"],
            shape_sigma=gal["shape_sigma"],
            shape_max=gal["shape_max"],
            shear_distribution=sim["shear"]["distribution"],
            g1=sim["shear"]["g1"],
            g2=sim["shear"]["g2"],
            shear_max=sim["shear"]["max"],
            cosmos_dir=sim["cosmos"]["dir"],
            cosmos_file=sim["cosmos"]["file_name"],
            cosmos_flux_scale=sim["cosmos"]["flux_scale"],
        )


def _draw_shape(rng: np.random.Generator, sigma: float, e_max: float) -> tuple[float, float]:
    """Gaussian ellipticity per component, redrawn until |e| < e_max."""
    for _ in range(1000):
        e1, e2 = rng.normal(0.0, sigma, size=2) if sigma > 0 else (0.0, 0.0)
        if e1 * e1 + e2 * e2 < e_max * e_max:
            return float(e1), float(e2)
    raise ConfigError(f"sim.galaxy.shape_max={e_max} rejects nearly all shapes of sigma {sigma}")


def draw_shear(pop: Population, rng: np.random.Generator) -> tuple[float, float]:
    """The applied shear (g1, g2) of one galaxy (``sim.shear``): the constant (g1, g2), drawing
    nothing, or each component uniform in [-max, max] (two draws from ``rng``)."""
    if pop.shear_distribution == "uniform":
        g1, g2 = rng.uniform(-pop.shear_max, pop.shear_max, size=2)
        return float(g1), float(g2)
    return float(pop.g1), float(pop.g2)


def _sersic_b(n: float) -> float:
    """b_n with gamma(2n, b_n) = Gamma(2n) / 2 (half light inside the effective radius)."""
    return float(special.gammaincinv(2 * n, 0.5))


def _enclosed(r: float, hlr: float, n: float) -> float:
    """Fraction of a Sersic profile's flux inside radius r."""
    return float(special.gammainc(2 * n, _sersic_b(n) * (r / hlr) ** (1.0 / n)))


def composite_hlr(disk_hlr: float, bulge_hlr: float, bulge_frac: float) -> float:
    """Half-light radius of exponential disk + de Vaucouleurs bulge (arcsec)."""
    if bulge_frac <= 0:
        return disk_hlr
    if bulge_frac >= 1:
        return bulge_hlr

    def f(r):
        return (1 - bulge_frac) * _enclosed(r, disk_hlr, EXP_N) + bulge_frac * _enclosed(
            r, bulge_hlr, DEV_N
        ) - 0.5

    lo, hi = min(disk_hlr, bulge_hlr), max(disk_hlr, bulge_hlr)
    return float(optimize.brentq(f, lo * 0.999, hi * 1.001, xtol=1e-8))


@functools.cache
def _cosmos_catalog(directory: str, file_name: str) -> galsim.COSMOSCatalog:
    path = Path(directory) / file_name
    if not path.exists():
        raise InputDataError(
            f"COSMOS catalog {path} not found (config sim.cosmos.dir / file_name); the repo ships "
            "the example catalog in data/cosmos, the full sample comes from galsim_download_cosmos"
        )
    try:
        return galsim.COSMOSCatalog(file_name=file_name, dir=directory, use_real=False)
    except (OSError, galsim.GalSimError) as err:
        raise InputDataError(f"cannot read COSMOS parametric fits next to {path}: {err}") from None


def sample_population(pop: Population, seed: int, galaxy_ids: np.ndarray, stream: str = "sim") -> dict:
    """Draw the parameters of each galaxy in ``galaxy_ids``.

    Returns a dict of 1-D arrays (one entry per id): ``sersic_n``, ``hlr`` (arcsec), ``flux``
    (counts), ``e1_int``, ``e2_int``, ``bulge_frac``, ``disk_hlr``, ``g1``, ``g2``
    (applied shear before any +/- pairing), ``cosmos_index`` (-1 unless population cosmos),
    ``rotation`` (radians, cosmos only).
    """
    galaxy_ids = np.asarray(galaxy_ids, dtype=np.int64)
    n = galaxy_ids.size
    out = {k: np.zeros(n) for k in ("sersic_n", "hlr", "flux", "e1_int", "e2_int", "bulge_frac",
                                     "disk_hlr", "g1", "g2", "rotation")}
    out["cosmos_index"] = np.full(n, -1, dtype=np.int64)
    cat = _cosmos_catalog(pop.cosmos_dir, pop.cosmos_file) if pop.kind == "cosmos" else None
    for j, gid in enumerate(galaxy_ids):
        rng = galaxy_rng(seed, stream, gid)
        # Draw order is fixed: adding a parameter at the end never changes earlier ones.
        u_n, u_flux, z_hlr, u_bf = rng.random(), rng.random(), rng.normal(), rng.random()
        e1, e2 = _draw_shape(rng, pop.shape_sigma, pop.shape_max)
        out["g1"][j], out["g2"][j] = draw_shear(pop, rng)
        if cat is not None:
            idx = int(rng.integers(cat.nobjects))
            theta = float(rng.uniform(0, np.pi))
            rec = cat.getParametricRecord(idx)
            use_bulge = bool(rec["use_bulgefit"])
            q, phi = (rec["bulgefit"][3], rec["bulgefit"][7]) if use_bulge else (
                rec["sersicfit"][3], rec["sersicfit"][7])
            shape = galsim.Shear(q=float(q), beta=(float(phi) + theta) * galsim.radians)
            out["cosmos_index"][j], out["rotation"][j] = idx, theta
            out["e1_int"][j], out["e2_int"][j] = shape.g1, shape.g2
            out["sersic_n"][j] = np.nan if use_bulge else float(rec["sersicfit"][2])
            out["hlr"][j] = float(rec["hlr"][0])
            out["disk_hlr"][j] = out["hlr"][j]
            out["flux"][j] = float(rec["flux"][0]) * pop.cosmos_flux_scale
            out["bulge_frac"][j] = np.nan
            continue
        hlr = float(np.clip(pop.hlr_median * np.exp(pop.hlr_sigma_ln * z_hlr), pop.hlr_min, pop.hlr_max))
        out["flux"][j] = pop.flux_min * (pop.flux_max / pop.flux_min) ** u_flux
        out["e1_int"][j], out["e2_int"][j] = e1, e2
        if pop.galaxy_type == "sersic":
            n_s = pop.n_min + u_n * (pop.n_max - pop.n_min)
            if pop.n_step > 0:
                n_s = float(np.clip(np.round(n_s / pop.n_step) * pop.n_step, pop.n_min, pop.n_max))
            out["sersic_n"][j] = round(n_s, 6)
            out["hlr"][j] = out["disk_hlr"][j] = hlr
        else:
            bf = u_bf * pop.bulge_frac_max
            out["sersic_n"][j] = np.nan
            out["bulge_frac"][j] = bf
            out["disk_hlr"][j] = hlr
            out["hlr"][j] = composite_hlr(hlr, hlr * pop.bulge_hlr_ratio, bf)
    return out


def build_galaxy(pop: Population, params: dict, j: int) -> galsim.GSObject:
    """The intrinsic (unlensed, unconvolved) galaxy j of a `sample_population` result."""
    flux = float(params["flux"][j])
    if pop.kind == "cosmos":
        cat = _cosmos_catalog(pop.cosmos_dir, pop.cosmos_file)
        gal = cat.makeGalaxy(int(params["cosmos_index"][j]), gal_type="parametric")
        return gal.rotate(float(params["rotation"][j]) * galsim.radians).withFlux(flux)
    shape = galsim.Shear(g1=float(params["e1_int"][j]), g2=float(params["e2_int"][j]))
    if pop.galaxy_type == "sersic":
        gal = galsim.Sersic(n=float(params["sersic_n"][j]), half_light_radius=float(params["hlr"][j]))
    else:
        bf, disk_hlr = float(params["bulge_frac"][j]), float(params["disk_hlr"][j])
        disk = galsim.Exponential(half_light_radius=disk_hlr)
        bulge = galsim.DeVaucouleurs(half_light_radius=disk_hlr * pop.bulge_hlr_ratio)
        gal = galsim.Add([(1 - bf) * disk, bf * bulge])
    return gal.withFlux(flux).shear(shape)
