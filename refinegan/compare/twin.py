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

The twin is one of the paired sets of `refinegan.compare.calibration.calibrate_sets` (with sim,
refined and psf_matched): they are fitted on the galaxy groups measured in all of them, so a
group whose twin stamp fails REGAUSS is dropped from the sims' and refined fits too, and m_sim,
m_refined and m_twin are measured on one selection. In ``compare.mode: calibration`` the twin is
streamed like the other files (`refinegan.compare.stream`).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import ContractError
from ..io import StampSet, read_stamps
from .calibration import ShapeSet, regauss_shapes
from .measure import truncate
from .params import CompareParams
from .stats import sky_noise_std

__all__ = ["PAIRED_LABELS", "load_twin", "twin_shape_set"]

logger = logging.getLogger(__name__)

# Labels a twin must share with the sims, stamp by stamp (matched by ``id``).
PAIRED_LABELS = ("pair_id", "rot90", "shear_sign", "g1", "g2", "e1_int", "e2_int", "flux", "hlr")


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


def twin_shape_set(twin: StampSet, p: CompareParams) -> ShapeSet:
    """The twin's REGAUSS shapes (its own ``/psf``, its measured sky noise variance) for
    `refinegan.compare.calibration.calibrate_sets`, which pairs it with the sims and refined."""
    bad = None if twin.mask is None else twin.mask != 0
    blocks = [slice(i, i + p.chunk_stamps) for i in range(0, len(twin), p.chunk_stamps)]
    noise_std = np.concatenate([  # exactly measure()'s noise_std, without the other statistics
        sky_noise_std(twin.images[sl], None if bad is None else bad[sl], p.mask) for sl in blocks])
    return ShapeSet(regauss_shapes(twin.images, twin.psf, noise_std**2, twin.mask), twin.labels)
