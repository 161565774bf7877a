"""Pixel units of stamp files (the ``units`` attribute of ``/images``): one definition.

The sims, the mock, cosmos and refined sets are in ``counts``, the sims' counts per pixel. A user
source (``real.fits`` / ``real.hdf5``) keeps the unit its input declares (FITS ``BUNIT``, an HDF5
``units`` attribute), normalised by astropy.units where it parses (``electron/s`` ->
``electron / s``; ``count``, ``counts``, ``ct`` -> ``counts``) and kept as written otherwise
(``normalised``). Its ``flux_scale`` (default null = no change; a number, 1 included) multiplies the pixels into the sims'
counts: with any other value the stamps are in ``counts``. An input that declares no unit is
taken to be in counts (docs/real_data.md says why); the ``/images`` attributes ``input_units``
(empty then) and ``flux_scale`` record what was done. `same_units` is the test compare applies
before it measures anything.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["COUNTS", "PixelUnits", "normalise_unit", "same_units", "pixel_units", "scale_pixels"]

logger = logging.getLogger(__name__)

COUNTS = "counts"  # the sims' unit: counts per pixel
_COUNT_WORDS = ("count", "counts", "ct", "cts")  # spellings of it (any case)
# Common spellings astropy does not parse (HST's ELECTRONS/S, COUNTS/S): tried lower-cased, with
# these words replaced, when the string as written does not parse.
_ALIASES = {"counts": "count", "cts": "count", "electrons": "electron", "e-": "electron",
            "sec": "s"}


def _parse(text: str):
    """The astropy unit of ``text``, or None where astropy cannot parse it (warnings silenced)."""
    from astropy import units as u

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. astropy's note on several slashes
        try:
            return u.Unit(text, parse_strict="raise")
        except (ValueError, TypeError):
            return None


def _to_unit(text: str):
    """`_parse` of ``text``, else of its lower-cased words through `_ALIASES`; ``counts`` = ct."""
    text = text.strip()
    if text.lower() in _COUNT_WORDS:
        text = "ct"
    unit = _parse(text)
    if unit is None:
        unit = _parse(re.sub(r"[A-Za-z][A-Za-z-]*",
                             lambda m: _ALIASES.get(m.group(0).lower(), m.group(0).lower()), text))
    return unit


def normalise_unit(raw: str) -> str:
    """A unit string as ``/images`` stores it: ``counts`` for the sims' unit and its spellings,
    astropy's generic form where it parses (``electron/s`` -> ``electron / s``), else ``raw``
    stripped."""
    from astropy import units as u

    unit = _to_unit(raw)
    if unit is None or not raw.strip():
        return raw.strip()
    return COUNTS if unit == u.ct else unit.to_string()


def same_units(a: str, b: str) -> bool:
    """Whether pixels in unit ``a`` and in unit ``b`` can be compared without a conversion:
    equal strings, or units astropy parses to the same unit (scale included)."""
    if a == b:
        return True
    ua, ub = _to_unit(a), _to_unit(b)
    return ua is not None and ub is not None and ua == ub


@dataclass(frozen=True)
class PixelUnits:
    """The unit of a user source's stamps and how it came about.

    Attributes
    ----------
    units : str
        The unit of ``/images`` (`normalise_unit`; ``counts`` once a ``flux_scale`` is set).
    input_units : str
        The unit the input declared, as written; empty when it declared none.
    flux_scale : float
        The factor the input's pixels were multiplied by (1 = unchanged).
    """

    units: str
    input_units: str
    flux_scale: float

    def image_attrs(self) -> dict:
        """The attributes of ``/images``: ``units``, ``input_units``, ``flux_scale``."""
        return {"units": self.units, "input_units": self.input_units,
                "flux_scale": float(self.flux_scale)}


def scale_pixels(data: np.ndarray, flux_scale: float | None) -> np.ndarray:
    """``data`` times ``flux_scale`` in float64 (``data`` itself when the scale is None or 1)."""
    if flux_scale is None or flux_scale == 1:
        return data
    return np.asarray(data, dtype=np.float64) * float(flux_scale)


def pixel_units(declared: str | None, flux_scale: float | None, where: str,
                key: str) -> PixelUnits:
    """The `PixelUnits` of stamps whose input declared ``declared`` (None or empty: nothing) and
    were multiplied by ``flux_scale`` (the config ``key``): a number (1 included) says the
    result is in the sims' counts, None that the pixels are as the input declares them.
    ``where`` names the input in the log."""
    raw = "" if declared is None else str(declared).strip()
    if flux_scale is not None:
        units = COUNTS
        logger.info("%s: pixels in %r x %s = %g -> the sims' counts", where, raw or "(no unit)",
                    key, flux_scale)
    elif raw:
        units = normalise_unit(raw)
    else:
        units = COUNTS
        logger.warning("%s declares no pixel unit: taken to be the sims' counts (set %s to "
                       "convert)", where, key)
    return PixelUnits(units, raw, 1.0 if flux_scale is None else float(flux_scale))
