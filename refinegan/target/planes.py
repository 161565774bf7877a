"""The user's mask and noise planes (``real.fits.mask_bits`` / ``noise_hdu`` / ``noise_kind``,
``real.hdf5.mask_bits`` / ``noise_dataset`` / ``noise_kind``; issue 16 item 8).

- **Mask bits.** A survey mask plane is a bit field: LSST / HSC set DETECTED (and others) on
  every source pixel, so "any non-zero bit is bad" (``mask_bits: null``, the default) rejected a
  whole HSC scene at 91 % bad. ``mask_bits`` selects the bad bits: an integer bitmask, or a list
  of bit numbers and plane names; a name is looked up in the mask's ``MP_<NAME>`` header cards
  (FITS) or attributes (HDF5), which LSST / HSC files carry.
- **Noise planes.** A variance, rms or weight (inverse variance) plane of the pixels' shape gives
  each pixel's noise sigma (`sigma_from_plane`); the stamp's ``noise_sigma`` label is then the
  median of it over the sky pixels (`refinegan.target.sky.plane_sigma`) instead of the estimate.
  A pixel whose variance or rms is not positive and finite, or whose weight is not positive, is
  bad (weight 0 is how coadds mark missing data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputDataError

__all__ = ["NOISE_KINDS", "MAX_MASK_BIT", "resolve_mask_bits", "bad_from_mask", "sigma_from_plane",
           "check_plane_shape"]

NOISE_KINDS = ("variance", "rms", "weight")
MAX_MASK_BIT = 62  # bit numbers 0..62 (a signed 64-bit bitmask)
MASK_PLANE_PREFIX = "MP_"  # LSST / HSC afw: header card MP_<NAME> = bit number


def resolve_mask_bits(bits: int | Sequence[int | str] | None, cards: Mapping | None, where: str,
                      key: str) -> int | None:
    """The bitmask ``bits`` (``key``) selects: None (any non-zero value is bad), an int as given,
    or the OR of 1 << bit over a list of bit numbers and plane names (``MP_<NAME>`` in ``cards``,
    the mask's FITS header or HDF5 attributes). `InputDataError` naming ``where`` and ``key`` for
    a name the mask does not define or a bit number out of 0..`MAX_MASK_BIT`."""
    if bits is None:
        return None
    if isinstance(bits, int | np.integer):
        return int(bits)
    mask = 0
    cards = {} if cards is None else cards
    for item in bits:
        if isinstance(item, str):
            card = MASK_PLANE_PREFIX + item.upper()
            if card not in cards:
                known = sorted(str(k) for k in cards if str(k).upper().startswith(MASK_PLANE_PREFIX))
                raise InputDataError(
                    f"{where}: {key} names the mask plane {item!r} but the mask has no {card} "
                    f"header card / attribute (planes defined: {', '.join(known) or 'none'}); "
                    "give its bit number instead")
            bit = cards[card]
        else:
            bit = item
        if not (isinstance(bit, int | np.integer) and 0 <= int(bit) <= MAX_MASK_BIT):
            raise InputDataError(f"{where}: {key}: bit {item!r} = {bit!r}; expected a bit number "
                                 f"0-{MAX_MASK_BIT}")
        mask |= 1 << int(bit)
    return mask


def bad_from_mask(mask: np.ndarray, bitmask: int | None, where: str, key: str) -> np.ndarray:
    """Bool array of ``mask``'s shape: non-zero where ``bitmask`` is None, else where any of its
    bits is set. A bitmask needs integer mask values (`InputDataError` naming ``where``, ``key``)."""
    mask = np.asarray(mask)
    if bitmask is None:
        return mask != 0
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask) & (mask == np.round(mask))):
            raise InputDataError(f"{where}: {key} selects mask bits but the mask holds non-integer "
                                 f"values ({mask.dtype.name}); expected an integer bit field")
        mask = mask.astype(np.int64)
    elif mask.dtype.kind not in "iub":
        raise InputDataError(f"{where}: {key} selects mask bits but the mask is {mask.dtype.name}; "
                             "expected an integer bit field")
    return (mask.astype(np.int64) & np.int64(bitmask)) != 0


def check_plane_shape(plane_shape: tuple, data_shape: tuple, where: str, key: str) -> None:
    """`InputDataError` naming ``where`` and ``key`` unless the plane has the pixels' shape."""
    if tuple(plane_shape) != tuple(data_shape):
        raise InputDataError(f"{where} ({key}): shape {tuple(plane_shape)} differs from the "
                             f"pixels' {tuple(data_shape)}; expected a plane of the same shape")


def sigma_from_plane(plane: np.ndarray, kind: str) -> np.ndarray:
    """Per-pixel noise sigma of a ``variance`` (unit^2), ``rms`` (unit) or ``weight`` (inverse
    variance, unit^-2) plane, in the pixels' unit (the caller multiplies it by ``flux_scale``
    with the pixels); NaN where the plane marks no valid noise (not finite, or not positive)."""
    p = np.asarray(plane, dtype=np.float64)
    valid = np.isfinite(p) & (p > 0)
    safe = np.where(valid, p, 1.0)
    if kind == "variance":
        sigma = np.sqrt(safe)
    elif kind == "rms":
        sigma = safe
    elif kind == "weight":
        sigma = 1.0 / np.sqrt(safe)
    else:  # pragma: no cover - the schema's enum refuses it first
        raise ValueError(f"noise_kind must be one of {NOISE_KINDS}, got {kind!r}")
    return np.where(valid, sigma, np.nan)
