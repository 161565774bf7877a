"""The shared noise estimates (refinegan.noise) against known answers, and the one definition each
stage uses."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

from refinegan import noise
from refinegan.noise import (
    COMPARE_MASK,
    CUTOUT_MASK,
    MAD_TO_SIGMA,
    MaskParams,
    border_pixels,
    border_sigma,
    frame_mask,
    robust_sigma,
    sky_mask,
    source_mask,
)


def test_mad_to_sigma_is_the_gaussian_factor():
    from scipy import stats

    assert abs(MAD_TO_SIGMA - 1 / stats.norm.ppf(0.75)) < 3e-6


@pytest.mark.parametrize("shape,width,n", [((32, 32), 4, 32 * 32 - 24 * 24), ((48, 40), 2, 48 * 40 - 44 * 36),
                                           ((7, 7), 4, 49), ((16, 16), 0, 0)])
def test_frame_mask_counts_the_pixels_within_width_of_the_edge(shape, width, n):
    m = frame_mask(shape, width)
    assert m.shape == shape and int(m.sum()) == n
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dist = np.minimum.reduce([yy, xx, shape[0] - 1 - yy, shape[1] - 1 - xx])
    assert np.array_equal(m, dist < width)


def test_robust_sigma_of_gaussian_noise_and_of_an_outlier(rng):
    x = rng.normal(3.0, 2.0, size=(64, 20_000))
    assert_allclose(robust_sigma(x), 2.0, rtol=0.03)
    x[:, :100] = 1e6  # 0.5 % outliers move the MAD by ~0.6 %, a std by a factor 1e4
    assert_allclose(robust_sigma(x), 2.0, rtol=0.04)


def test_border_sigma_uses_only_the_frame(rng):
    img = rng.normal(0, 1.5, size=(200, 32, 32))
    img[:, 4:-4, 4:-4] += 1e5  # a bright interior does not reach the frame estimate
    assert_allclose(np.median(border_sigma(img, 4)), 1.5, rtol=0.02)
    assert border_pixels(img, 4).shape == (200, 32 * 32 - 24 * 24)


def _gaussian_blob(shape, sigma_pix, flux):
    yy, xx = np.mgrid[: shape[0], : shape[1]] - (np.array(shape)[:, None, None] - 1) / 2
    g = np.exp(-0.5 * (xx**2 + yy**2) / sigma_pix**2)
    return flux * g / g.sum()


def test_source_mask_covers_the_galaxy_and_little_of_the_noise(rng):
    noise_img = rng.normal(0, 1.0, size=(40, 48, 48))
    gal = noise_img + _gaussian_blob((48, 48), 2.5, 3000.0)
    m = source_mask(gal)
    centre = m[:, 20:28, 20:28]
    assert centre.all()
    assert source_mask(noise_img).mean() < 0.02  # pure noise: a few dilated peaks at most


def test_source_mask_of_noiseless_stamps_masks_above_a_fraction_of_the_peak():
    img = np.zeros((1, 32, 32))
    img[0, 13:19, 13:19] = 5.0  # compact: the smoothed frame is exactly 0, so sigma is 0
    m = source_mask(img, MaskParams(dilate_pix=0))
    assert m[0, 13:19, 13:19].all() and not m[0, :6].any()
    smooth = ndimage.gaussian_filter(img, (0, 1, 1))
    assert np.array_equal(m, smooth > noise.NOISELESS_PEAK_FRACTION * smooth.max())


def test_connectivity_4_and_8_differ_on_a_diagonal_pair():
    det_like = np.zeros((1, 32, 32))
    # two 3-pixel diagonal chains touching at corners: 8-connected one region of 6, 4-connected 6 of 1
    for k in range(6):
        det_like[0, 10 + k, 10 + k] = 100.0
    p8 = MaskParams(threshold_sigma=50.0, smooth_pix=1e-6, dilate_pix=0, min_area_pix=5, connectivity=8)
    p4 = MaskParams(threshold_sigma=50.0, smooth_pix=1e-6, dilate_pix=0, min_area_pix=5, connectivity=4)
    rng = np.random.default_rng(1)
    img = det_like + rng.normal(0, 1e-3, det_like.shape)
    assert source_mask(img, p8).sum() >= 6 and source_mask(img, p4).sum() == 0


def test_sky_mask_falls_back_to_the_frame_when_the_galaxy_fills_the_stamp(rng):
    img = rng.normal(0, 1.0, size=(3, 24, 24))
    img[0] += _gaussian_blob((24, 24), 30.0, 2e6)  # covers everything
    sky, few = sky_mask(img, border_px=4)
    assert list(few) == [True, False, False]
    assert np.array_equal(sky[0], frame_mask((24, 24), 4))
    assert np.array_equal(sky[1:], ~source_mask(img[1:]))


def test_the_cutout_recipe_is_compares_with_its_sigma_on_the_sky():
    assert COMPARE_MASK == MaskParams()
    # the cutouts' sky estimate uses compare's recipe, its sigma on the sky found so far
    assert CUTOUT_MASK == MaskParams(sigma_region="good")
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        MaskParams(connectivity=6)
    with pytest.raises(ValueError, match="sigma_region"):
        MaskParams(sigma_region="edge")


def test_every_stage_uses_the_shared_definitions():
    """Training, compare and the cutouts read the noise through refinegan.noise only."""
    from refinegan.compare import stats
    from refinegan.refiner import monitor, normalize, trainer
    from refinegan.target import cutouts, sky

    assert stats.source_mask is noise.source_mask and stats.noise_moments is noise.noise_moments
    assert normalize.border_sigma is noise.border_sigma and monitor.border_sigma is noise.border_sigma
    assert trainer.source_mask is noise.source_mask and sky.source_mask is noise.source_mask
    for mod in (stats, normalize, cutouts, sky, monitor):
        assert "MAD_TO_SIGMA" not in vars(mod), mod.__name__


def test_robust_sigma_about_a_known_centre(rng):
    x = rng.normal(0.0, 2.0, 50_000)
    assert_allclose(robust_sigma(x, center=0.0), 2.0, rtol=0.03)
    # about the wrong centre the MAD grows: |N(0, 2) - 2| has median 2.0 * 1.01...
    assert robust_sigma(x + 2.0, center=0.0) > 1.3 * robust_sigma(x + 2.0)
