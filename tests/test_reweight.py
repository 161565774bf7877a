"""Reweighted calibration known answers (refinegan.compare.reweight)."""

import galsim
import numpy as np

from refinegan.compare.calibration import (
    Groups,
    calibrate,
    calibrate_reweighted,
    fit_mc,
    regauss_shapes,
)
from refinegan.compare.reweight import cell_weights, group_covariates


def _population(n: int, log_size: np.ndarray, rng: np.random.Generator, slope: float = -0.06):
    """Synthetic galaxy groups with a size-dependent m(size) = slope / size and shape noise:
    d = 2 g (+/-g twins), d_hat = (1 + m(size)) d + N(0, 0.002), size = exp(log_size)."""
    size = np.exp(log_size)
    g = rng.uniform(0.01, 0.03, size=(n, 2))
    d = 2 * g
    m = slope / size
    d_hat = (1 + m[:, None]) * d + rng.normal(0, 0.002, size=(n, 2))
    gr = Groups(np.arange(n), d_hat, d, np.zeros((n, 2)), np.zeros((n, 2)), 0, 0, True,
                n_stamps=4 * n)
    snr = np.exp(rng.normal(3.0, 0.4, n))  # S/N independent of size and m here
    return gr, np.stack([log_size, np.log(snr)], axis=1), m


def test_reweighted_m_equals_target_m(rng):
    """Known answer: source sizes uniform in log over [0.3, 3] px-ish, target skewed to large
    sizes (where |m| is small). Unweighted, the source's m is many errors from the target's; the
    reweighted m equals the target's within 3 errors (binning leaves a residual well below it)."""
    src, xs, _ = _population(4000, rng.uniform(np.log(1.0), np.log(6.0), 4000), rng)
    tgt, xt, _ = _population(3000, np.log(rng.triangular(1.0, 6.0, 6.0, 3000)), rng)
    m_tgt, _ = fit_mc(tgt)
    cal_t = calibrate(tgt, 200, rng)
    plain = calibrate(src, 200, rng)
    rw = calibrate_reweighted(src, xs, xt, 200, rng, n_bins=8)
    err = np.hypot(rw["m_err"], cal_t["m_err"])
    plain_err = np.hypot(plain["m_err"], cal_t["m_err"])
    assert np.all(np.abs(plain["m"] - m_tgt) > 5 * plain_err), (plain["m"], m_tgt)  # the control
    assert np.all(np.abs(rw["m"] - m_tgt) < 3 * err), (rw["m"], m_tgt, err)
    assert rw["uncovered_fraction"] == 0.0
    assert 0 < rw["effective_n_groups"] < len(src)


def test_cell_weights_identity_and_uncovered():
    """Same distribution -> weights ~1 (exactly 1 when the source is the target); target mass
    outside the source's range is reported as uncovered."""
    x = np.random.default_rng(1).normal(size=(500, 2))
    w, unc = cell_weights(x, x, n_bins=4)
    np.testing.assert_allclose(w, 1.0)
    assert unc == 0.0
    shifted = x + np.array([100.0, 0.0])  # the target lies beyond every source group in x0
    w2, unc2 = cell_weights(x, shifted, n_bins=4)
    assert np.isclose(unc2, 0.75)  # 3 of 4 target quantile bins in x0 have no source group
    nan_row = np.vstack([x, [[np.nan, 0.0]]])
    w3, _ = cell_weights(nan_row, x, n_bins=4)
    assert w3[-1] == 0.0 and np.isclose(w3[:-1].mean(), 1.0)


def test_group_covariates_means_per_group():
    """Per-group mean of the stamps' values, in log, in the order asked."""
    labels = {"pair_id": np.array([5, 5, 2, 2, 9])}
    vals = {"sigma": np.array([1.0, 3.0, 4.0, np.nan, -1.0]), "snr": np.array([10.0] * 5)}
    x = group_covariates(np.array([2, 5, 9]), labels, vals)
    np.testing.assert_allclose(x[:2, 0], np.log([4.0, 2.0]))
    assert np.isnan(x[2, 0])  # a non-positive mean size
    np.testing.assert_allclose(x[:, 1], np.log(10.0))


def test_regauss_snr_is_matched_filter_snr():
    """Known answer: for a round Gaussian galaxy the adaptive-moment S/N reported with the shapes
    equals the matched-filter S/N sqrt(sum I^2) / sigma_noise within 2 %."""
    gal = galsim.Gaussian(sigma=0.6, flux=2000.0)
    psf = galsim.Gaussian(sigma=0.3)
    img = galsim.Convolve(gal, psf).drawImage(nx=48, ny=48, scale=0.2, method="no_pixel").array
    psf_img = psf.drawImage(nx=25, ny=25, scale=0.2, method="no_pixel").array
    sigma_n = 3.0
    sh = regauss_shapes(img[None], psf_img, sigma_n**2)
    expect = np.sqrt(np.sum(img**2)) / sigma_n
    assert abs(sh["snr"][0] / expect - 1) < 0.02, (sh["snr"][0], expect)
    assert abs(sh["sigma"][0] - np.hypot(0.6, 0.3) / 0.2) < 0.02
