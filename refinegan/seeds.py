"""Random draws per sim noise realisation, shared by the stamps that share the sim's noise.

The sims' +g / -g twins of one orientation (same ``pair_id`` and ``rot90``) share their noise
field, so that shear pairs cancel the noise response; anything random that refinegan adds to a
stamp afterwards (the PSF matching's whitening noise, the refiner's latent code) must be shared
the same way, and must not depend on how a file is chunked. Each realisation gets its own
``SeedSequence([seed, stream, pair_id, rot90 + 1])`` (files without pairs: ``id``, else the
stamp's index), so training and refine draw the same numbers for the same stamp.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["realisation_keys", "realisation_normals"]


def realisation_keys(labels: Mapping, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two int64 key columns (n,) naming each stamp's noise realisation (module docstring)."""
    if "pair_id" in labels:
        a = np.asarray(labels["pair_id"], dtype=np.int64)
        b = np.asarray(labels["rot90"], dtype=np.int64) + 1 if "rot90" in labels else np.ones(n, np.int64)
    elif "id" in labels:
        a, b = np.asarray(labels["id"], dtype=np.int64), np.zeros(n, np.int64)
    else:
        a, b = np.arange(offset, offset + n, dtype=np.int64), np.zeros(n, np.int64)
    return a, b


def realisation_normals(labels: Mapping, n: int, shape: tuple[int, ...], seed: int, stream: int,
                        offset: int = 0) -> np.ndarray:
    """Standard normal draws (n, *shape), equal for stamps of one noise realisation."""
    a, b = realisation_keys(labels, n, offset)
    out = np.empty((n, *shape))
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i, key in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        if key not in cache:
            ss = np.random.SeedSequence([int(seed), int(stream), key[0] & 0x7FFFFFFFFFFFFFFF, key[1]])
            cache[key] = np.random.default_rng(ss).standard_normal(shape)
        out[i] = cache[key]
    return out
