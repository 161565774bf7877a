"""Noise-sigma + asinh normalisation: round trip, sigma sources and their errors."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from refinegan.errors import ContractError
from refinegan.noise import border_sigma
from refinegan.refiner.normalize import NORM_VERSION, Normalization, stamp_sigmas


@pytest.mark.parametrize("softening", [0.5, 1.0, 3.0])
def test_round_trip_numpy_and_torch(rng, softening):
    x = rng.normal(0, 5, (6, 16, 16)) + rng.uniform(0, 500, (6, 1, 1))
    sigma = rng.uniform(1, 10, 6)
    norm = Normalization(softening=softening)
    z = norm.forward(x, sigma)
    assert_allclose(z, np.arcsinh(x / (softening * sigma[:, None, None])), rtol=1e-12)
    assert_allclose(norm.inverse(z, sigma), x, rtol=1e-10, atol=1e-10)
    zt = norm.forward(torch.from_numpy(x)[:, None], torch.from_numpy(sigma))  # (N, 1, H, W)
    assert_allclose(zt[:, 0].numpy(), z, rtol=1e-12)
    assert_allclose(norm.inverse(zt, torch.from_numpy(sigma))[:, 0].numpy(), x, rtol=1e-10, atol=1e-10)


def test_noise_is_unit_scale_in_both_domains(rng):
    """Dividing by each stamp's own sigma makes pure noise of any sigma look alike."""
    norm = Normalization()
    for sigma in (0.1, 10.0):
        z = norm.forward(rng.normal(0, sigma, (4, 64, 64)), np.full(4, sigma))
        assert 0.78 < z.std() < 0.82  # std of asinh(N(0, 1)) is 0.797


@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_border_sigma_estimates_gaussian_noise(rng, sigma):
    images = rng.normal(0, sigma, (50, 48, 48))
    images[:, 16:32, 16:32] += 100.0  # a bright "galaxy" inside the frame is ignored
    est = border_sigma(images, border_px=4)
    assert_allclose(np.median(est), sigma, rtol=0.05)


def test_sigma_sources(rng):
    images = rng.normal(0, 2.0, (8, 32, 32))
    labels = {"noise_sigma": np.full(8, 7.0)}
    assert_allclose(stamp_sigmas(images, labels, "label"), 7.0)
    assert_allclose(stamp_sigmas(images, labels, "auto"), 7.0)
    assert_allclose(np.median(stamp_sigmas(images, labels, "estimate")), 2.0, rtol=0.1)
    # auto falls back to the estimate when the label says noiseless
    assert_allclose(np.median(stamp_sigmas(images, {"noise_sigma": np.zeros(8)}, "auto")), 2.0, rtol=0.1)


def test_missing_label_is_refused(rng):
    with pytest.raises(ContractError, match=r"f\.h5: normalization uses /labels/noise_sigma"):
        stamp_sigmas(rng.normal(size=(2, 16, 16)), {}, "label", where="f.h5")


def test_noiseless_stamps_are_refused():
    with pytest.raises(ContractError, match=r"noise sigma \(border estimate\) must be finite and > 0.*stamp 0"):
        stamp_sigmas(np.zeros((3, 16, 16)), {}, "auto", where="f.h5")
    with pytest.raises(ContractError, match=r"noise sigma \(label noise_sigma\) must be.*stamp 1"):
        stamp_sigmas(np.ones((3, 16, 16)), {"noise_sigma": np.array([1.0, -1.0, 1.0])}, "label")


def test_dict_round_trip_and_version_check():
    norm = Normalization(softening=2.0, sigma_source="estimate", border_px=3)
    assert Normalization.from_dict(norm.to_dict()) == norm
    bad = norm.to_dict() | {"version": NORM_VERSION + 1}
    with pytest.raises(ContractError, match=r"m\.pt: normalization version 2 is not the one"):
        Normalization.from_dict(bad, where="m.pt")
    with pytest.raises(ContractError, match=r"unknown normalization field\(s\) \['kind'\]"):
        Normalization.from_dict(norm.to_dict() | {"kind": "log"})


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"softening": 0.0}, "softening must be > 0, got 0.0"),
    ({"sigma_source": "header"}, "sigma_source must be one of"),
    ({"border_px": 0}, "border_px must be >= 1, got 0"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ContractError, match=match):
        Normalization(**kwargs)
