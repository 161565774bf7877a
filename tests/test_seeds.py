"""The one registry of random streams (refinegan.seeds)."""

import numpy as np

from refinegan import seeds
from refinegan.config import default_config
from refinegan.seeds import STREAMS, galaxy_rng, realisation_normals, stream_sequence


def test_streams_are_distinct_and_registered_once():
    assert len(set(STREAMS.values())) == len(STREAMS)
    words = list(seeds.MOCK_EFFECT_WORDS.values())
    assert len(set(words)) == len(words)
    # the mock's own noise uses the rotation (0, 1) as its word; COSMOS's word must differ
    assert not set(seeds.MOCK_NOISE_WORDS.values()) & {0, 1}


def test_the_compare_stream_is_the_schema_default_of_its_key():
    assert default_config()["compare"]["seed_offset"] == STREAMS["compare"]


def test_stream_sequences_are_the_documented_seed_sequences():
    a = np.random.default_rng(stream_sequence(7, "train")).random(4)
    b = np.random.default_rng(np.random.SeedSequence([7, 4])).random(4)
    assert np.array_equal(a, b)
    g = galaxy_rng(7, "sim_noise", 12, 1).random(3)
    assert np.array_equal(g, np.random.default_rng(np.random.SeedSequence([7, 2, 12, 1])).random(3))


def test_twins_of_one_realisation_share_their_draws_whatever_the_chunking():
    labels = {"pair_id": np.array([0, 0, 0, 0, 1, 1, 1, 1]), "rot90": np.array([0, 0, 1, 1] * 2)}
    x = realisation_normals(labels, 8, (3,), seed=5, stream="latent")
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[2], x[3]) and not np.array_equal(x[0], x[2])
    part = realisation_normals({k: v[4:] for k, v in labels.items()}, 4, (3,), 5, "latent", offset=4)
    assert np.array_equal(part, x[4:])
    other = realisation_normals(labels, 8, (3,), seed=5, stream="psf_match")
    assert not np.array_equal(other, x)
