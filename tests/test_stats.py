"""Known-answer tests of the per-image statistics (refinegan.compare.stats)."""

import galsim
import numpy as np
import pytest
from numpy.testing import assert_allclose

from refinegan.compare.stats import (
    FLAG_HSM,
    FLAG_NOISE,
    FLAG_NONFINITE,
    autocorrelation,
    half_light_radius,
    hsm_moments,
    image_stats,
    power_spectrum,
    radial_bins,
)
from refinegan.noise import MaskParams, noise_moments, source_mask

SCALE = 0.2


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize(("sigma_arcsec", "g1", "g2"), [(0.4, 0.0, 0.0), (0.5, 0.2, -0.1),
                                                         (0.3, -0.05, 0.3)])
def test_hsm_elliptical_gaussian(size, sigma_arcsec, g1, g2):
    """Adaptive moments of an elliptical Gaussian are its own shape and size.

    GalSim's shear conserves area, so det(M)^(1/4) = sigma / pixel_scale. Drawn with
    method='no_pixel' (sampled at pixel centres, no pixel convolution), a Gaussian of sigma >= 1.5
    pixels aliases at the exp(-2 pi^2 sigma^2) < 1e-19 level; HSM converges to 1e-6; so rtol 1e-4.
    """
    gal = galsim.Gaussian(sigma=sigma_arcsec, flux=1000.0).shear(g1=g1, g2=g2)
    img = gal.drawImage(nx=size, ny=size, scale=SCALE, method="no_pixel", offset=(0.3, -0.2))
    out = hsm_moments(img.array[None])
    assert out["hsm_status"][0] == 0
    assert_allclose(out["hsm_sigma"][0], sigma_arcsec / SCALE, rtol=1e-4)
    assert_allclose([out["hsm_g1"][0], out["hsm_g2"][0]], [g1, g2], atol=1e-4)
    assert_allclose([out["hsm_dx"][0], out["hsm_dy"][0]], [0.3, -0.2], atol=1e-4)
    assert_allclose(out["hsm_flux"][0], 1000.0, rtol=1e-3)


def test_hsm_failure_is_flagged_not_dropped(rng):
    good = galsim.Gaussian(sigma=0.4, flux=1000).drawImage(nx=32, ny=32, scale=SCALE).array
    images = np.stack([good, np.zeros((32, 32)), good])
    out, power, acf = image_stats(images + rng.normal(0, 1e-3, images.shape))
    assert len(out["hsm_sigma"]) == 3
    assert out["hsm_status"][1] != 0 and np.isnan(out["hsm_sigma"][1])
    assert out["flags"][1] & FLAG_HSM and not out["flags"][0] & FLAG_HSM
    assert np.isfinite(out["hsm_sigma"][[0, 2]]).all()


def test_nonfinite_and_too_few_noise_pixels_flagged():
    img = np.zeros((2, 16, 16))
    img[0, 3, 3] = np.nan
    img[1] = 1000.0 * galsim.Gaussian(sigma=2.0).drawImage(nx=16, ny=16, scale=SCALE).array
    out, _, _ = image_stats(img, params=MaskParams(min_noise_pixels=64))
    assert out["flags"][0] & FLAG_NONFINITE
    assert out["flags"][1] & FLAG_NOISE and np.isnan(out["noise_std"][1])


def test_source_mask_covers_galaxy_not_noise(rng):
    gal = galsim.Exponential(half_light_radius=0.6, flux=5000.0)
    img = gal.drawImage(nx=48, ny=48, scale=SCALE).array + rng.normal(0, 5.0, (48, 48))
    noise = rng.normal(0, 5.0, (200, 48, 48))
    m = source_mask(np.concatenate([img[None], noise]))
    assert m[0, 24, 24] and m[0, 22:27, 22:27].all()
    assert not m[0, :4].any()
    assert m[1:].mean() < 0.02  # noise peaks are not sources (min_area_pix)


@pytest.mark.parametrize("kind", ["gauss", "laplace"])
def test_noise_moments_known_distributions(rng, kind):
    """Std, skewness and excess kurtosis: Gaussian (sigma, 0, 0); Laplace(b) (sqrt2 b, 0, 3).

    400 stamps of 32x32 pixels: the pooled skew has error sqrt(6/N_pix) ~ 0.006, the excess
    kurtosis sqrt(24/N) ~ 0.012 (Gaussian) and ~0.1 (Laplace, heavy tails); tolerances 5 sigma.
    """
    shape = (400, 32, 32)
    x = rng.normal(0, 3.0, shape) if kind == "gauss" else rng.laplace(0, 3.0 / np.sqrt(2), shape)
    out = noise_moments(x, np.zeros(shape, bool))
    assert_allclose(np.mean(out["noise_std"]), 3.0, rtol=0.01)
    assert abs(np.mean(out["noise_skew"])) < 0.03
    expected_kurt = 0.0 if kind == "gauss" else 3.0
    # per-stamp kurtosis estimates are biased low for heavy tails at N=1024 (~ -6/N relative)
    assert abs(np.mean(out["noise_kurt"]) - expected_kurt) < (0.06 if kind == "gauss" else 0.4)


def test_power_spectrum_white_noise_is_flat(rng):
    """E P(k) = sigma^2 at every k for white noise; each annulus within 4 standard errors."""
    x = rng.normal(0, 3.0, (400, 32, 32))
    k, p = power_spectrum(x, np.zeros(x.shape, bool), nbins=8)
    mean, err = p.mean(axis=0), p.std(axis=0, ddof=1) / np.sqrt(len(p))
    assert np.all(np.abs(mean - 9.0) < 4 * err + 0.02)  # + the -1/N_pix of mean subtraction
    assert err.max() < 0.3  # the test has power to fail
    assert_allclose(k, (np.arange(8) + 0.5) / 16)


def _cosmos_noise_stamps(n, size, seed):
    try:
        cn = galsim.getCOSMOSNoise(rng=galsim.BaseDeviate(seed), cosmos_scale=SCALE)
    except OSError as err:  # pragma: no cover - GalSim ships the file
        pytest.skip(f"GalSim COSMOS noise file unavailable: {err}")
    # big fields cut into stamps: one FFT per field instead of one per stamp (stationary noise,
    # so a cut-out has the same correlation as a stamp of its own)
    per_side = 8
    out = []
    while len(out) < n:
        field = galsim.ImageD(per_side * size, per_side * size, scale=SCALE)
        field.addNoise(cn)
        a = field.array.reshape(per_side, size, per_side, size).swapaxes(1, 2)
        out.extend(a.reshape(-1, size, size))
    return cn, np.array(out[:n])


def test_cosmos_noise_spectrum_matches_its_correlation():
    """getCOSMOSNoise with cosmos_scale = the pixel scale is strongly correlated.

    Known answer: GalSim's correlation function xi (cn.drawImage). Autocorrelation at lags (1,0),
    (0,1), (1,1) within 0.01 (statistical error ~0.0015 for 200 stamps). Power spectrum: the
    expectation of our estimator is the Bartlett-weighted transform sum xi(d)(1-|dx|/W)(1-|dy|/H)
    cos(2 pi k.d); within 15 % per annulus (at high k it is a small difference of large terms,
    1 - 4 rho_1 + ..., so a 0.4 % error in rho_1 moves it ~10 %). Not flat: P falls > 5x.
    """
    size, lag = 32, 7
    cn, x = _cosmos_noise_stamps(200, size, seed=3)
    none = np.zeros(x.shape, bool)
    acf = autocorrelation(x, none, max_lag=3).mean(axis=0)
    xi = cn.drawImage(galsim.ImageD(2 * lag + 1, 2 * lag + 1, scale=SCALE)).array
    rho = xi / xi[lag, lag]
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        assert abs(acf[3 + dy, 3 + dx] - rho[lag + dy, lag + dx]) < 0.01
    assert rho[lag, lag + 1] > 0.4  # the correlation this test relies on is there
    k, p = power_spectrum(x, none, nbins=8)
    ky, kx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    pred2d = np.zeros((size, size))
    for dy in range(-lag, lag + 1):
        for dx in range(-lag, lag + 1):
            w = (1 - abs(dx) / size) * (1 - abs(dy) / size)
            pred2d += xi[lag + dy, lag + dx] * w * np.cos(2 * np.pi * (kx * dx + ky * dy))
    idx, _ = radial_bins((size, size), 8)
    pred = np.array([pred2d[idx == b].mean() for b in range(8)])
    assert_allclose(p.mean(axis=0), pred, rtol=0.15)
    assert p.mean(axis=0)[0] / p.mean(axis=0)[-1] > 5


def test_white_noise_autocorrelation_is_zero(rng):
    x = rng.normal(0, 1.0, (200, 32, 32))
    acf = autocorrelation(x, np.zeros(x.shape, bool), max_lag=2).mean(axis=0)
    assert acf[2, 2] == 1.0
    off = np.delete(acf.ravel(), 12)
    assert np.abs(off).max() < 0.01  # error ~ 1/sqrt(200 * 1024) ~ 0.002


@pytest.mark.parametrize("sigma_pix", [3.0, 4.0])
def test_half_light_radius_gaussian(sigma_pix):
    """A circular Gaussian's half-light radius is sqrt(2 ln 2) sigma = 1.1774 sigma; the 4-sigma
    aperture holds 1 - exp(-8) of the flux; pixel sampling costs < 2 % at sigma >= 3 pixels."""
    img = galsim.Gaussian(sigma=sigma_pix * SCALE, flux=1000.0).drawImage(
        nx=48, ny=48, scale=SCALE, method="no_pixel", offset=(0.3, -0.2)).array[None]
    h = hsm_moments(img)
    hlr = half_light_radius(img, h["hsm_dx"], h["hsm_dy"], h["hsm_sigma"])
    assert_allclose(hlr, np.sqrt(2 * np.log(2)) * sigma_pix, rtol=0.02)
    assert np.isnan(half_light_radius(img, h["hsm_dx"], h["hsm_dy"], np.array([np.nan])))[0]


def test_flux_counts_bad_pixels_as_sky():
    """A +1000-count hot pixel flagged bad adds nothing to `flux`; unflagged it adds 1000."""
    from refinegan.compare.stats import image_stats

    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 1.0, (3, 32, 32))
    hot = x.copy()
    hot[:, 3, 5] += 1000.0
    bad = np.zeros(x.shape, bool)
    bad[:, 3, 5] = True
    clean = image_stats(x, bad)[0]["flux"]
    flagged = image_stats(hot, bad)[0]["flux"]
    assert np.allclose(flagged, clean)
    assert np.allclose(clean, np.where(bad, 0.0, x).sum(axis=(1, 2)))
    assert np.allclose(image_stats(hot, None)[0]["flux"], x.sum(axis=(1, 2)) + 1000.0)
