"""The paired twin in compare: m_twin, and m_refined - m_twin on the same galaxies.

The twin (`refinegan prepare-twin`, docs/compare.md) is the target drawn on the sims' own
galaxies: same groups, shapes, sizes, fluxes, shears and rotations, with the target's effects,
PSF and noise. Its m is measured as every other set's (REGAUSS with the file's ``/psf``,
`refinegan.compare.calibration.calibrate`), and the differences are paired: the same galaxy
groups and the same bootstrap draws for both sets, so the galaxies' shape noise cancels and only
the pixel noise and the target's effects are left in the error.

- ``calibration/twin``: m, c of the twin (as ``calibration/sim``);
- ``calibration/transfer_paired``: dm = m_refined - m_twin (`paired_difference` of the twin's and
  the refined groups), with ``dm_err`` over groups and ``dm_err_unpaired`` = the two sets'
  errors in quadrature for scale, ``meets_bar`` = |dm| < ``compare.bar_m``;
- ``calibration/twin_sim_paired``: dm = m_twin - m_sim, the same for the sims.

The twin's random draws come from their own generator ``SeedSequence([seed, seed_offset,
COMPARE_WORDS["twin"]])``, so a compare with a twin draws every other number as one without.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import ContractError
from ..io import StampSet, read_stamps
from ..seeds import COMPARE_WORDS
from .calibration import Groups, calibrate, group_means, paired_difference, regauss_shapes
from .measure import measure, truncate
from .params import CompareParams

__all__ = ["PAIRED_LABELS", "load_twin", "twin_rng", "twin_calibration"]

logger = logging.getLogger(__name__)

# Labels a twin must share with the sims, stamp by stamp (matched by ``id``).
PAIRED_LABELS = ("pair_id", "rot90", "shear_sign", "g1", "g2", "e1_int", "e2_int", "flux", "hlr")


def twin_rng(seed: int, p: CompareParams) -> np.random.Generator:
    """The twin's own generator (module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), p.seed_offset,
                                                         COMPARE_WORDS["twin"]]))


def load_twin(path: str | os.PathLike, sim: StampSet, max_stamps: int | None) -> StampSet:
    """Read the twin file (cut to ``max_stamps`` whole groups) and check it is the sims' twin.

    Raises `ContractError` naming the file when it lacks what calibration needs (``g1``, ``g2``,
    ``pair_id``, ``id``, ``/psf``), its stamps or pixel scale differ from the sims', it shares
    no stamp ``id`` with them, or a `PAIRED_LABELS` label differs at a shared id.
    """
    twin = truncate(read_stamps(path), max_stamps)
    missing = [f"label {k}" for k in ("id", "pair_id", "g1", "g2") if k not in twin.labels]
    missing += ["/psf"] if twin.psf is None else []
    if missing:
        raise ContractError(f"{path}: the twin has no {', '.join(missing)}; a twin target "
                            "(refinegan prepare-twin) carries the sims' labels and its PSF")
    if twin.images.shape[1:] != sim.images.shape[1:]:
        raise ContractError(f"{path}: twin stamp shape {twin.images.shape[1:]} differs from the "
                            f"sims' {sim.images.shape[1:]}")
    if abs(twin.pixel_scale - sim.pixel_scale) > 1e-9:
        raise ContractError(f"{path}: twin pixel_scale {twin.pixel_scale} differs from the sims' "
                            f"{sim.pixel_scale} arcsec")
    if "id" not in sim.labels:
        raise ContractError(f"{path}: the sims have no label 'id' to pair the twin with")
    _, i_sim, i_twin = np.intersect1d(sim.labels["id"], twin.labels["id"], return_indices=True)
    if i_sim.size == 0:
        raise ContractError(f"{path}: no stamp id in common with the sims; make the twin from "
                            "the sims' config (refinegan prepare-twin)")
    for name in PAIRED_LABELS:
        if name not in sim.labels or name not in twin.labels:
            continue
        a, b = np.asarray(sim.labels[name])[i_sim], np.asarray(twin.labels[name])[i_twin]
        diff = a != b
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            diff &= ~(np.isnan(a) & np.isnan(b))
        if diff.any():
            j = int(np.flatnonzero(diff)[0])
            raise ContractError(
                f"{path}: label {name!r} of stamp id {int(sim.labels['id'][i_sim[j]])} is "
                f"{b[j]!r} in the twin but {a[j]!r} in the sims: not the sims' twin (made from "
                "another config or seed?)")
    return twin


def _groups(shapes: dict, labels: dict) -> Groups:
    return group_means(shapes["eps1"], shapes["eps2"], shapes["status"] == 0, labels)


def twin_calibration(twin: StampSet, sim: StampSet, sim_shapes: dict, sim_cal: dict,
                     refined: StampSet | None, refined_shapes: dict | None,
                     refined_cal: dict | None, p: CompareParams,
                     rng: np.random.Generator) -> dict:
    """The twin's entries of compare.h5's ``calibration`` tree (module docstring).

    Parameters
    ----------
    twin : StampSet
        The twin set (`load_twin`).
    sim, refined : StampSet
        The sims and their refined versions (``refined`` may be None: no ``transfer_paired``).
    sim_shapes, refined_shapes : dict
        Their `regauss_shapes` (``eps1``, ``eps2``, ``status`` (N,)), as compare measured them.
    sim_cal, refined_cal : dict
        Their `calibrate` results (``m_err`` for the unpaired error).
    p : CompareParams
        ``n_bootstrap``, ``bar_m`` and the noise mask of the twin's measurement.
    rng : numpy.random.Generator
        Drawn in this order: the twin's bootstrap, ``transfer_paired``, ``twin_sim_paired``.

    Returns
    -------
    dict with ``twin``, ``twin_sim_paired`` and (with refined) ``transfer_paired``.
    """
    noise_std = measure(twin, p).scalars["noise_std"]
    sh = regauss_shapes(twin.images, twin.psf, noise_std**2, twin.mask)
    g_twin = _groups(sh, twin.labels)
    out = {"twin": calibrate(g_twin, p.n_bootstrap, rng)}
    out["twin"].update(regauss_status=sh["status"], eps1=sh["eps1"], eps2=sh["eps2"])
    pairs = [("twin_sim_paired", _groups(sim_shapes, sim.labels), g_twin, sim_cal, out["twin"])]
    if refined is not None and refined_shapes is not None:
        pairs.insert(0, ("transfer_paired", g_twin, _groups(refined_shapes, refined.labels),
                         out["twin"], refined_cal))
    for key, a, b, cal_a, cal_b in pairs:  # dm = m_b - m_a
        res = paired_difference(a, b, p.n_bootstrap, rng)
        res["dm_err_unpaired"] = np.hypot(cal_a["m_err"], cal_b["m_err"])
        res["meets_bar"] = np.abs(res["dm"]) < p.bar_m
        res["bar"] = p.bar_m
        out[key] = res
        logger.info("calibration %s: dm=%s +- %s (unpaired error %s, %d groups)", key, res["dm"],
                    res["dm_err"], res["dm_err_unpaired"], res["n_groups"])
    return out
