"""Noise matching (refinegan.refiner.noise_match) against known answers: the sims re-observed
with the target's Gaussian noise have its power spectrum, level and correlations."""

import numpy as np
import pytest
from scipy import ndimage

from refinegan.compare.stats import autocorrelation, power_spectrum
from refinegan.errors import TrainingError
from refinegan.refiner.noise_match import NoiseMatch, build_noise_match, target_noise_covariance

SIZE = 32
A = 0.2768  # [a, 1, a] x [a, 1, a]: lag-1 correlation 2a / (1 + 2a^2) = 0.48, as COSMOS's


def _correlated(n, sigma, rng, size=SIZE):
    """Noise of std ``sigma`` with lag-1 correlation 0.48 in x and y (not periodic: cut out of a
    larger field, as real coadd noise)."""
    k1 = np.array([A, 1.0, A])
    k = np.outer(k1, k1)
    white = rng.normal(size=(n, size + 2, size + 2))
    field = ndimage.convolve(white, k[None], mode="constant")[:, 1:-1, 1:-1]
    return sigma * field / np.sqrt((k**2).sum())


def _labels(n):
    return {"pair_id": np.arange(n) // 4, "rot90": (np.arange(n) // 2) % 2}


def _stats(x):
    mask = np.zeros(x.shape, bool)
    _, power = power_spectrum(x, mask, nbins=8)
    acf = autocorrelation(x, mask, max_lag=1)
    return power.mean(axis=0), x.std(), acf[:, 1, 2].mean(), acf[:, 2, 1].mean()


def test_matched_sims_have_the_targets_power_level_and_correlations():
    rng = np.random.default_rng(5)
    target = _correlated(2000, 12.0, rng)
    match = build_noise_match(target, seed=3)
    sims = rng.normal(0.0, 1.5, size=(2000, SIZE, SIZE))  # white, below the target everywhere
    sigma = np.full(len(sims), 1.5)
    match.check(sigma)
    out = match.apply(sims, sigma, _labels(len(sims)))
    p_t, s_t, ax_t, ay_t = _stats(target)
    p_m, s_m, ax_m, ay_m = _stats(out.astype(np.float64))
    np.testing.assert_allclose(p_m, p_t, rtol=0.02)  # every radial bin
    np.testing.assert_allclose(s_m, s_t, rtol=0.01)
    np.testing.assert_allclose([ax_m, ay_m], [ax_t, ay_t], rtol=0.01)
    assert 0.44 < ax_t < 0.50  # the target really is COSMOS-like


def test_the_target_covariance_is_measured_on_sky_pixels_only():
    rng = np.random.default_rng(6)
    noise = rng.normal(0.0, 3.0, size=(600, SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    galaxy = 2000 * np.exp(-(xx**2 + yy**2) / (2 * 2.0**2)) / (2 * np.pi * 4.0)
    cov = target_noise_covariance(noise + galaxy)
    assert cov.shape == (2 * SIZE, 2 * SIZE)
    # white noise of variance 9, the galaxy masked away (its covariance would be large at every lag)
    assert abs(cov[0, 0] - 9.0) < 0.1
    assert abs(cov[0, 1]) < 0.1 and abs(cov[1, 0]) < 0.1 and abs(cov[3, 3]) < 0.1


def test_twins_share_the_added_field_and_chunking_changes_nothing():
    rng = np.random.default_rng(7)
    match = build_noise_match(_correlated(200, 12.0, rng), seed=1)
    sims = np.zeros((8, SIZE, SIZE))
    sigma = np.full(8, 1.0)
    lab = _labels(8)
    out = match.apply(sims, sigma, lab)
    assert np.array_equal(out[0], out[1]) and not np.array_equal(out[0], out[2])
    part = match.apply(sims[4:], sigma[4:], {k: v[4:] for k, v in lab.items()}, offset=4)
    assert np.array_equal(part, out[4:])
    again = NoiseMatch.from_dict(match.to_dict()).apply(sims, sigma, lab)
    assert np.array_equal(again, out)


def test_sims_noisier_than_the_target_anywhere_are_refused_with_the_sigma_to_set():
    rng = np.random.default_rng(8)
    match = build_noise_match(_correlated(500, 12.0, rng), seed=1)
    need = match.required_sim_sigma()
    assert 1.5 < need < 2.5  # the correlation leaves little power at high k
    with pytest.raises(TrainingError, match=rf"sim.noise.sigma <= {need:.4g}"):
        match.check(np.full(4, 10.0))
    match.check(np.full(4, 0.9 * need))


def _train_config(*extra):
    from refiner_helpers import PLAIN_REFINER

    from refinegan.config import load_config

    return load_config(None, [*PLAIN_REFINER, "stamp.size=24", "train.batch_size=4",
                              "train.refiner_channels=4", "train.refiner_blocks=1",
                              "train.disc_channels=4", "train.history_size=4", "train.device=cpu",
                              "train.sample_every=0", "train.pretrain_r_steps=0",
                              "train.pretrain_d_steps=0", "train.steps=1", "train.noise_match=true",
                              *extra])


def test_train_and_refine_put_the_targets_noise_on_the_sims(tmp_path, one_torch_thread):
    """With train.noise_match the refined stamps carry the target's noise (R barely moved after
    one step), identically in training and refine; the refined file records the covariance."""
    from refiner_helpers import write_set

    from refinegan.compare.stats import autocorrelation
    from refinegan.io import read_stamps
    from refinegan.noise import sky_mask
    from refinegan.refiner.refine import refine
    from refinegan.refiner.train import train

    rng = np.random.default_rng(9)
    sim, _, _ = write_set(tmp_path / "sim.h5", 400, 24, rng, sigma=0.2)
    real, _, real_im = write_set(tmp_path / "real.h5", 400, 24, rng, domain="real",
                                 noise_field=_correlated(400, 3.0, rng, size=24))
    res = train(_train_config(), [sim], real, tmp_path / "o")
    out = refine(res.model_path, sim, tmp_path / "ref.h5", jit=False)
    ref = read_stamps(out)

    def lag1(x):
        sky, _ = sky_mask(x, 4)
        return np.nanmedian(autocorrelation(x, ~sky, max_lag=1)[:, 1, 2])

    assert abs(lag1(ref.images.astype(np.float64)) - lag1(real_im.astype(np.float64))) < 0.02
    assert lag1(read_stamps(sim).images.astype(np.float64)) < 0.05  # the sims were white
    cov = ref.attrs["noise_match_covariance"]
    assert cov.shape == (17, 17) and abs(cov[8, 8] - 9.0) < 0.5  # the target's variance, 3^2


def test_training_refuses_sims_noisier_than_the_target(tmp_path, one_torch_thread):
    from refiner_helpers import write_set

    from refinegan.refiner.train import train

    rng = np.random.default_rng(10)
    sim, _, _ = write_set(tmp_path / "sim.h5", 40, 24, rng, sigma=3.0)
    real, _, _ = write_set(tmp_path / "real.h5", 40, 24, rng, domain="real",
                           noise_field=_correlated(40, 3.0, rng, size=24))
    with pytest.raises(TrainingError, match=r"noise matching is impossible: .* sim.noise.sigma <= "):
        train(_train_config(), [sim], real, tmp_path / "o")
    assert not (tmp_path / "o").exists()
