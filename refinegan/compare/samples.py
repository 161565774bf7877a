"""`Samples`: everything compare's tables read (the stamp sets, their measurements, galaxy groups,
the real set's half split and the asinh pixel scale), and the three pairs each table compares.

Every table has three columns, `refinegan.compare.params.PAIRS`: (sim, real), (refined, real)
and the floor (real half A, real half B: disjoint halves of whole galaxy groups, ``half_b``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..io import StampSet
from .measure import Measurement

__all__ = ["Samples", "asinh_scale", "triples"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Samples:
    """The compare inputs every table reads; built once, never written to.

    Attributes
    ----------
    sets : mapping of str -> StampSet
        ``sim``, ``refined``, ``real`` and optionally ``control`` (stamps (N_d, H, W), counts).
    meas : mapping of str -> Measurement
        The per-image statistics of each set (same keys).
    groups : mapping of str -> ndarray (N_d,)
        Galaxy group of each stamp (`refinegan.compare.measure.groups_of`).
    half_b : ndarray (N_real,) of bool
        True for the real stamps in half B of the real-vs-real floor (whole groups).
    scale : float
        Counts; pixels enter histograms, pixel distances and the CNN as asinh(x / scale).
    """

    sets: Mapping[str, StampSet]
    meas: Mapping[str, Measurement]
    groups: Mapping[str, np.ndarray]
    half_b: np.ndarray
    scale: float

    @property
    def has_morph(self) -> bool:
        """Whether statmorph ran (on the same subsample for sim and refined)."""
        return self.meas["sim"].has_morph

    @property
    def has_control(self) -> bool:
        """Whether a noise-only control set was given."""
        return "control" in self.meas

    def real_half(self, name: str) -> np.ndarray:
        """``half_b`` restricted to the real stamps that statistic ``name`` was measured on."""
        real = self.meas["real"]
        if name in real.scalars:
            return self.half_b
        return self.half_b[real.morph_index]


def asinh_scale(real: Measurement, real_set: StampSet) -> float:
    """The pixel scale for asinh(x / scale), counts: the real set's median noise std.

    Falls back to the std of all real pixels (or 1) when no stamp has usable noise pixels.
    """
    scale = float(np.nanmedian(real.scalars["noise_std"]))
    if not (np.isfinite(scale) and scale > 0):
        scale = float(np.nanstd(real_set.images)) or 1.0
        logger.warning("real set has no usable noise pixels; pixel scale for asinh = %.3g", scale)
    return scale


def triples(a_sim, a_ref, a_real, half_b_real):
    """The three (A, B) pairs of every table: (sim, real), (refined, real), (real A, real B).

    ``a_*`` are arrays whose first axis is the stamp; ``half_b_real`` (len(a_real),) bool.
    """
    return ((a_sim, a_real), (a_ref, a_real), (a_real[~half_b_real], a_real[half_b_real]))
