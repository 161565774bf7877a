"""Re-observing the sims in blocks (refinegan.refiner.reobserve.Reobserve.apply): the same bytes
as one pass, at a memory bounded by the block, not by the number of stamps."""

import tracemalloc

import galsim
import numpy as np
import pytest

from refinegan.refiner.noise_match import build_noise_match
from refinegan.refiner.psf_match import build_psf_match
from refinegan.refiner.reobserve import Reobserve
from refinegan.seeds import sim_noise_fields

SIZE = 24
SEED = 5


def _psf(fwhm):
    return galsim.Gaussian(fwhm=fwhm).drawImage(nx=SIZE, ny=SIZE, scale=0.2).array


def _two_spreads(n, rng):
    """Target noise whose stamps differ (half white, half smoothed): noise matching gets a bank."""
    white = rng.normal(size=(n, SIZE, SIZE)) * 5.0
    smooth = (white + np.roll(white, 1, axis=1) + np.roll(white, 1, axis=2)) / np.sqrt(3.0)
    return np.where((np.arange(n) % 2 == 0)[:, None, None], white, smooth)


@pytest.fixture(scope="module")
def reob_and_sims():
    rng = np.random.default_rng(3)
    nmatch = build_noise_match(_two_spreads(2000, rng), seed=SEED)
    assert nmatch.bank is not None  # the per-stamp class draw is chunked too
    pmatch = build_psf_match(_psf(0.5), _psf(0.8), (SIZE, SIZE), seed=SEED)
    n = 48
    labels = {"pair_id": np.arange(n) // 4, "rot90": (np.arange(n) // 2) % 2,
              "noise_sigma": np.full(n, 2.0, np.float32)}
    galaxy = np.zeros((SIZE, SIZE))
    galaxy[SIZE // 2 - 2:SIZE // 2 + 2, SIZE // 2 - 2:SIZE // 2 + 2] = 100.0
    images = (galaxy + sim_noise_fields(labels["pair_id"], labels["rot90"], labels["noise_sigma"],
                                        7, (SIZE, SIZE))).astype(np.float32)
    return Reobserve(pmatch, nmatch, 7, "sims"), images, labels


@pytest.mark.parametrize("chunk", [1, 5, 16, 47])
def test_blocks_give_the_bytes_of_one_pass(reob_and_sims, chunk):
    reob, images, labels = reob_and_sims
    assert reob.replaces_noise
    one, s_one = reob.apply(images, labels["noise_sigma"], labels, chunk=len(images))
    out, s_out = reob.apply(images, labels["noise_sigma"], labels, chunk=chunk)
    assert out.dtype == np.float32 and out.shape == images.shape
    assert np.array_equal(out, one) and np.array_equal(s_out, s_one)
    # a slice with its offset, as refine's chunks call it, is the same stamps again
    part, _ = reob.apply(images[20:], labels["noise_sigma"][20:],
                         {k: v[20:] for k, v in labels.items()}, offset=20, chunk=chunk)
    assert np.array_equal(part, one[20:])
    # twins share the re-observed noise, other orientations do not
    assert np.array_equal(out[0] - out[1], np.zeros_like(out[0]))
    assert not np.array_equal(out[0], out[2])


def test_memory_is_bounded_by_the_block_not_the_stamps():
    """1,024 stamps in blocks of 64: the peak numpy allocation is the output plus ~64 stamps'
    temporaries, several times below one pass (the noise fields' complex (2H, 2W) grids)."""
    nmatch = build_noise_match(np.random.default_rng(1).normal(size=(500, SIZE, SIZE)) * 5.0,
                               seed=SEED)
    reob = Reobserve(build_psf_match(_psf(0.5), _psf(0.8), (SIZE, SIZE), seed=SEED), nmatch)
    n = 1024
    images = np.zeros((n, SIZE, SIZE), np.float32)
    labels = {"pair_id": np.arange(n) // 4, "rot90": (np.arange(n) // 2) % 2}
    sigma = np.ones(n)

    def peak(chunk):
        tracemalloc.start()
        reob.apply(images, sigma, labels, chunk=chunk)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    per_stamp = (2 * SIZE) ** 2 * 16  # one complex128 padded grid
    blocks, whole = peak(64), peak(n)
    assert whole > 3 * n * per_stamp  # one pass holds several padded grids for every stamp
    assert blocks < n * SIZE * SIZE * 12 + 64 * 12 * per_stamp
    assert whole > 4 * blocks
