"""statmorph wrapper: known orderings, centre-segment choice, failures flagged."""

import galsim
import numpy as np
from numpy.testing import assert_allclose

from refinegan.compare.morphology import FLAG_NO_SEGMENT, centre_segment, morphology

SCALE = 0.2
SIZE = 48


def _sersic(n, hlr=0.6, flux=2e4, noise=2.0, seed=1):
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux)
    psf = galsim.Gaussian(fwhm=0.3)
    img = galsim.Convolve(gal, psf).drawImage(nx=SIZE, ny=SIZE, scale=SCALE).array
    return img + np.random.default_rng(seed).normal(0, noise, img.shape)


def test_sersic_n1_vs_n4_order():
    """A de Vaucouleurs (n=4) profile is more concentrated and has a higher Gini than an
    exponential (n=1) of the same half-light radius (Lotz+2004; Conselice 2003 C ~ 2.7 vs 5 for
    untruncated profiles). The n=1 r50 is the half-light radius within 10 % (0.6" = 3 pixels,
    broadened by a 0.3" PSF: sqrt(3^2 + 0.64^2) ~ 3.07)."""
    images = np.stack([_sersic(1.0), _sersic(4.0)])
    out = morphology(images, np.array([2.0, 2.0]))
    assert (out["morph_flag"] <= 1).all()
    c1, c4 = out["morph_c"]
    g1, g4 = out["morph_gini"]
    assert c4 > c1 + 0.5
    assert g4 > g1 + 0.05
    assert out["morph_m20"][1] < out["morph_m20"][0]  # brighter core: M20 more negative
    assert_allclose(out["morph_r50"][0], 3.07, rtol=0.10)


def test_blank_stamp_is_flagged_not_raised(rng):
    """Pure noise: nothing (or only a noise peak) to measure; flagged, NaN, batch continues."""
    images = np.stack([rng.normal(0, 1.0, (SIZE, SIZE)), _sersic(1.0, noise=1.0)])
    out = morphology(images, np.array([1.0, 1.0]), threshold_sigma=5.0, n_pixels=20)
    assert out["morph_flag"][0] == FLAG_NO_SEGMENT and np.isnan(out["morph_c"][0])
    assert np.isfinite(out["morph_c"][1])
    assert out["morph_n_warnings"].shape == (2,)


def test_zero_noise_std_is_flagged():
    out = morphology(_sersic(1.0)[None], np.array([0.0]))
    assert out["morph_flag"][0] == FLAG_NO_SEGMENT


def test_centre_segment_not_label_one():
    """A neighbour in the lower-left corner gets photutils label 1; the galaxy is the segment
    under the centre and the neighbour is masked."""
    img = _sersic(1.0, hlr=0.4)
    nb = galsim.Gaussian(sigma=0.3, flux=2e4).drawImage(nx=SIZE, ny=SIZE, scale=SCALE,
                                                        offset=(-17, -17)).array
    segmap, other = centre_segment(img + nb, 2.0)
    assert segmap[SIZE // 2, SIZE // 2] == 1
    assert not segmap[7, 7] and other[7, 7]


def test_processes_give_identical_results():
    images = np.stack([_sersic(1.0, seed=s) for s in range(3)])
    sigma = np.full(3, 2.0)
    one = morphology(images, sigma)
    two = morphology(images, sigma, processes=2)
    for key, value in one.items():
        np.testing.assert_array_equal(two[key], value)
