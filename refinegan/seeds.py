"""Every random stream of refinegan, in one registry, and the draws keyed by galaxy and realisation.

A stream is the second word of a ``numpy.random.SeedSequence([seed, stream, ...])`` of the master
``seed``, so no two parts of the pipeline ever share random numbers, and each part's draws do not
depend on what the others draw. `STREAMS` names them all; a test checks they are distinct.

- per galaxy (`galaxy_rng`): ``SeedSequence([seed, stream, galaxy id, *words])``. The extra words
  of the target streams are named in `MOCK_EFFECT_WORDS` and `MOCK_NOISE_WORDS`;
- per stage (`stream_sequence`): training (R's and D's weights, batches, history), the noise put
  on masked target pixels, compare (its default is the ``compare.seed_offset`` key);
- per sim noise realisation (`realisation_normals`): the sims' +g / -g twins of one orientation
  (same ``pair_id`` and ``rot90``) share their noise field, so that shear pairs cancel the noise
  response; anything random that refinegan adds to a stamp afterwards (the PSF matching's
  whitening noise, the refiner's latent code) is shared the same way, and does not depend on how a
  file is chunked. Each realisation gets ``SeedSequence([seed, stream, pair_id, rot90 + 1])``
  (files without pairs: ``id``, else the stamp's index), so training and refine draw the same
  numbers for the same stamp.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["STREAMS", "MOCK_EFFECT_WORDS", "MOCK_NOISE_WORDS", "stream_sequence",
           "galaxy_rng", "realisation_keys", "realisation_normals",
           "NOISE_FIELDS_ATTR", "NOISE_FIELDS", "sim_noise_fields"]

STREAMS = {
    "sim": 1,  # sim galaxy parameters (per galaxy group)
    "sim_noise": 2,  # sim noise fields (per group and rotation)
    "train": 4,  # training: R and D weights, batch indices, history buffer
    "compare": 5,  # compare's subsamples, splits and bootstraps (default of compare.seed_offset)
    "mask_fill": 6,  # noise put on masked target pixels for training
    "psf_match": 7,  # the PSF matching's whitening noise (per sim noise realisation)
    "latent": 8,  # R's latent codes (per sim noise realisation)
    "noise_match": 9,  # the noise matching's added Gaussian field (per sim noise realisation)
    "compare_r_only": 10,  # compare's draws for the psf_matched set (R's own contribution)
    "mock": 11,  # target galaxy parameters (per group)
    "mock_noise": 12,  # target noise fields
    "mock_effects": 13,  # target effects: knots, bulges, neighbours, artefacts, COSMOS draws
    "twin_noise": 14,  # the paired twin target's noise fields (per sim group and rotation)
    "noise_match_calibration": 15,  # Gaussian fields measuring the noise matching's sky-selection bias
    "noise_match_class": 16,  # the noise matching's covariance class (per sim noise realisation)
    "harm_check": 17,  # the training's harm check: its classifiers' weights and batches
    "compare_closer": 18,  # compare's bootstrap of how much closer to the target's m than the sims
}
# Extra words after the galaxy id on the target streams (`galaxy_rng`).
MOCK_EFFECT_WORDS = {"intrinsic": 1, "cosmic_rays": 2, "hot_pixels": 3, "cosmos_draw": 4}
MOCK_NOISE_WORDS = {"cosmos": 5}  # the mock's own noise fields use the rotation (0, 1) here


def stream_sequence(seed: int, stream: str, *words: int) -> np.random.SeedSequence:
    """``SeedSequence([seed, STREAMS[stream], *words])``."""
    return np.random.SeedSequence([int(seed), STREAMS[stream], *(int(w) for w in words)])


def galaxy_rng(seed: int, stream: str, galaxy_id: int, *extra: int) -> np.random.Generator:
    """The random stream of one galaxy: a function of (seed, stream, id, extra) only."""
    return np.random.default_rng(stream_sequence(seed, stream, galaxy_id, *extra))


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


def realisation_normals(labels: Mapping, n: int, shape: tuple[int, ...], seed: int, stream: str,
                        offset: int = 0) -> np.ndarray:
    """Standard normal draws (n, *shape), equal for stamps of one noise realisation, from the
    `STREAMS` entry ``stream``."""
    a, b = realisation_keys(labels, n, offset)
    out = np.empty((n, *shape))
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i, key in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        if key not in cache:
            ss = stream_sequence(seed, stream, key[0] & 0x7FFFFFFFFFFFFFFF, key[1])
            cache[key] = np.random.default_rng(ss).standard_normal(shape)
        out[i] = cache[key]
    return out


# The attribute saying a sims file's noise is `sim_noise_fields` of its labels and seed (so noise
# matching can take it out and put the target's in its place).
NOISE_FIELDS_ATTR, NOISE_FIELDS = "noise_fields", "sim_noise_fields v1"


def sim_noise_fields(pair_id: np.ndarray, rot90: np.ndarray, sigma: np.ndarray, seed: int,
                     shape: tuple[int, int]) -> np.ndarray:
    """The sims' noise (N, H, W) float32, counts: ``float32(sigma) * field`` with one standard
    normal field per galaxy group and rotation (``SeedSequence([seed, sim_noise, pair_id,
    rot90])``), shared by the +g / -g stamps of one orientation.

    What `refinegan.sim.simulate.simulate_groups` adds to the noiseless stamps, bit for bit; so the noise of a sims file
    can be taken out again from its labels and seed (`refinegan.refiner.noise_match` replaces it
    with the target's).
    """
    pair_id = np.asarray(pair_id, dtype=np.int64)
    rot90 = np.asarray(rot90, dtype=np.int64)
    sigma = np.asarray(sigma, dtype=np.float64)
    out = np.zeros((pair_id.size, *shape), dtype=np.float32)
    last, field = None, None  # a group's stamps are adjacent: keep the last field only
    for i, key in enumerate(zip(pair_id.tolist(), rot90.tolist(), strict=True)):
        if sigma[i] <= 0:
            continue
        if key != last:
            last = key
            field = galaxy_rng(seed, "sim_noise", *key).standard_normal(shape, dtype=np.float32)
        out[i] = np.float32(sigma[i]) * field
    return out
