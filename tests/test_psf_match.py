"""PSF matching (refinegan.refiner.psf_match): known answers against GalSim.

A sheared galaxy drawn through the sim PSF and matched is the same galaxy drawn through the target
PSF; REGAUSS with the matched PSF measures the target-drawn shape; white noise stays white with the
same sigma; the whitening noise is shared by the stamps that share sim noise, and reproducible.
"""

import galsim
import numpy as np
import pytest
from numpy.testing import assert_allclose

from refinegan.compare import calibration as cal
from refinegan.refiner.psf_match import PsfMatch, build_psf_match, embed, psf_flux_gain
from refinegan.sim.simulate import psf_flux_in_stamp

SCALE = 0.2  # arcsec / pixel
SIZE = 48
SIM_PSF = galsim.Moffat(beta=3.0, fwhm=0.7)
# a wider, lopsided target: atmosphere + obscured optics with struts and coma (as the mock's)
TARGET_PSF = galsim.Convolve(galsim.Kolmogorov(fwhm=0.75),
                             galsim.OpticalPSF(lam_over_diam=0.25, obscuration=0.3, nstruts=4,
                                               strut_angle=15 * galsim.degrees, coma1=0.2, astig2=0.15))


def _draw(obj, size=SIZE):
    return obj.drawImage(nx=size, ny=size, scale=SCALE).array.astype(np.float64)


@pytest.fixture(scope="module")
def match():
    return build_psf_match(_draw(SIM_PSF), _draw(TARGET_PSF), (SIZE, SIZE), seed=11)


def _galaxy(g1, g2, hlr=0.5, e=(0.2, -0.1)):
    return galsim.Exponential(half_light_radius=hlr, flux=1e4).shear(e1=e[0], e2=e[1]).shear(g1=g1, g2=g2)


def test_kernel_takes_the_sim_psf_to_the_target_psf(match):
    k = match.kernel
    assert_allclose(k.sum(), 1.0, rtol=1e-12)
    assert np.abs(match.kernel_ft((SIZE, SIZE))).max() <= 1.0 + 1e-12
    got = match.apply_psf(_draw(SIM_PSF))
    target = _draw(TARGET_PSF)
    assert_allclose(got.sum(), 1.0, rtol=1e-6)
    assert np.abs(got - target / target.sum()).max() < 2e-3 * target.max()
    assert match.summary(target)["psf_residual"] < 2e-3


def test_matched_galaxy_is_the_galaxy_through_the_target_psf(match):
    """Noiseless: K * (gal x sim PSF) = gal x target PSF, pixel by pixel.

    Up to the light the PSF images lose beyond the stamp (3 % for this target, 0.03 % for the
    Moffat): the kernel maps the unit-sum PSF images, so the matched stamp is brighter by their
    ratio of enclosed flux than a stamp drawn through the untruncated target PSF.
    """
    enclosed = _draw(SIM_PSF).sum() / _draw(TARGET_PSF).sum()
    for g1, g2 in ((0.02, -0.02), (-0.05, 0.03)):
        gal = _galaxy(g1, g2)
        sim = _draw(galsim.Convolve(gal, SIM_PSF))
        want = _draw(galsim.Convolve(gal, TARGET_PSF)) * enclosed
        got = match.apply(sim[None], np.zeros(1), {"id": np.array([0])})[0]
        assert_allclose(got.sum(), sim.sum(), rtol=1e-5)  # flux kept exactly (circular)
        assert np.abs(got - want).max() < 2e-3 * want.max()
        # and differs from the sim stamp by much more than that
        assert np.abs(sim - want).max() > 0.1 * want.max()


def test_regauss_on_matched_stamps_measures_the_target_shape(match):
    """REGAUSS with K * psf on the matched stamp = REGAUSS with the target PSF on the target stamp."""
    gal = _galaxy(0.03, -0.02)
    sim = _draw(galsim.Convolve(gal, SIM_PSF))
    tgt = _draw(galsim.Convolve(gal, TARGET_PSF))
    got = match.apply(sim[None], np.zeros(1), {"id": np.array([0])})
    a = cal.regauss_shapes(got.astype(np.float32), match.apply_psf(_draw(SIM_PSF)))
    b = cal.regauss_shapes(tgt[None].astype(np.float32), _draw(TARGET_PSF).astype(np.float32))
    assert a["status"][0] == 0 and b["status"][0] == 0
    assert_allclose([a["eps1"][0], a["eps2"][0]], [b["eps1"][0], b["eps2"][0]], atol=1e-3)


def test_white_noise_stays_white_with_its_sigma(match):
    n, sigma = 400, 3.0
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, sigma, (n, SIZE, SIZE))
    out = match.apply(noise, np.full(n, sigma), {"id": np.arange(n)})
    assert_allclose(out.std(), sigma, rtol=0.01)
    for ax in (1, 2):
        lag1 = (out * np.roll(out, 1, axis=ax)).mean() / out.var()
        assert abs(lag1) < 0.01
    # without the whitening field the matched noise would be strongly correlated and quieter
    conv = np.fft.ifft2(np.fft.fft2(noise) * match.kernel_ft((SIZE, SIZE))).real
    assert conv.std() < 0.8 * sigma
    assert (conv * np.roll(conv, 1, axis=2)).mean() / conv.var() > 0.3


def test_whitening_noise_is_shared_by_twins_and_reproducible(match):
    labels = {"pair_id": np.array([5, 5, 5, 5, 6]), "rot90": np.array([0, 0, 1, 1, 0])}
    z = np.zeros((5, SIZE, SIZE))
    a = match.apply(z, np.ones(5), labels)
    b = match.apply(z, np.ones(5), labels)
    assert np.array_equal(a, b)
    assert np.array_equal(a[0], a[1]) and np.array_equal(a[2], a[3])  # +/-g twins share it
    assert not np.allclose(a[0], a[2]) and not np.allclose(a[0], a[4])
    # chunked calls (refine) give the bytes of one call (train)
    c = np.concatenate([match.apply(z[:2], np.ones(2), {k: v[:2] for k, v in labels.items()}),
                        match.apply(z[2:], np.ones(3), {k: v[2:] for k, v in labels.items()}, offset=2)])
    assert np.array_equal(a, c)
    other = PsfMatch(match.kernel, 12, match.sim_psf).apply(z, np.ones(5), labels)
    assert not np.allclose(a, other)


def test_round_trip_and_other_grids(match):
    again = PsfMatch.from_dict(match.to_dict())
    assert np.array_equal(again.kernel, match.kernel) and again.seed == match.seed
    assert PsfMatch.from_dict(None) is None
    # a smaller PSF image is widened to the kernel's grid; the stamp grid may differ
    small = _draw(SIM_PSF, 25)
    assert match.apply_psf(small).shape == (SIZE, SIZE)
    assert_allclose(embed(embed(small, (SIZE, SIZE)), (25, 25)), small)
    out = match.apply(np.zeros((2, 64, 64)), np.ones(2), {"id": np.arange(2)})
    assert out.shape == (2, 64, 64)


def test_bad_psfs_are_refused():
    with pytest.raises(ValueError, match="target PSF must be one finite"):
        build_psf_match(_draw(SIM_PSF), np.full((3, 5, 5), 0.04), (SIZE, SIZE), 0)
    with pytest.raises(ValueError, match="sim PSF must be one finite"):
        build_psf_match(np.zeros((5, 5)), _draw(TARGET_PSF), (SIZE, SIZE), 0)


def test_a_target_psf_narrower_than_the_sims_in_any_direction_is_refused():
    """Matching can only widen (issue 16: a Moffat 0.7" sim PSF against a 0.29" HSC PSF was
    matched with 98 % of its modes clipped and training went on)."""
    from refinegan.errors import TrainingError
    from refinegan.refiner.data import check_psf_wider

    sim = _draw(galsim.Moffat(beta=3.0, fwhm=0.7))
    wide = _draw(galsim.Kolmogorov(fwhm=0.9))
    check_psf_wider(sim, wide, "sim.h5", "real.h5")
    check_psf_wider(sim, sim, "sim.h5", "real.h5")  # the same PSF: the identity kernel
    for target in (galsim.Kolmogorov(fwhm=0.3),  # narrower everywhere
                   galsim.Moffat(beta=3.0, fwhm=0.75).shear(g1=0.3)):  # narrower along y only
        with pytest.raises(TrainingError, match=r"the target's PSF \(real.h5: HSM sigma .* px\) is "
                                                r"narrower than the sims' \(sim.h5: .*sim.psf.fwhm"):
            check_psf_wider(sim, _draw(target), "sim.h5", "real.h5")


def test_training_stops_when_the_psf_match_leaves_a_large_residual(tmp_path, rng):
    from refiner_helpers import PLAIN_REFINER, psf_image, write_set

    from refinegan.config import load_config
    from refinegan.errors import TrainingError
    from refinegan.io import write_stamps
    from refinegan.refiner.train import train

    sim, _, _ = write_set(tmp_path / "sim.h5", 16, 24, rng)
    real = tmp_path / "real.h5"
    yy, xx = np.mgrid[:24, :24] - 12.0
    narrow = np.exp(-(xx**2 + yy**2) / (2 * 0.8**2))  # sigma 0.8 px: narrower than the sims'
    assert narrow.sum() > 0 and psf_image(24).max() < narrow.max() / narrow.sum()
    write_stamps(real, rng.normal(size=(16, 24, 24)).astype(np.float32), {}, domain="real",
                 pixel_scale=0.2, source="t", config={}, seed=1, psf=narrow)
    cfg = load_config(None, [*PLAIN_REFINER, "stamp.size=24", "train.psf_match=true",
                             "train.steps=1", "train.batch_size=4", "train.device=cpu"])
    with pytest.raises(TrainingError, match=r"PSF matching is impossible: .*sim.psf.fwhm"):
        train(cfg, [sim], real, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_match_that_leaves_a_large_residual_stops_with_its_size():
    """A target the sims' PSF cannot reach by widening (a ring from a box PSF, whose transform
    has zeros): 82 % of the modes clip and K * psf_sim misses by 0.13 of the peak."""
    from refinegan.errors import TrainingError
    from refinegan.io import StampSet
    from refinegan.refiner.data import PSF_RESIDUAL_MAX, psf_match_for

    yy, xx = np.mgrid[:24, :24] - 12.0
    box = np.zeros((24, 24))
    box[10:15, 10:15] = 1.0
    ring = np.exp(-((np.hypot(xx, yy) - 4.0) ** 2) / 2)
    images = np.zeros((2, 24, 24), np.float32)
    sim = StampSet(images, {}, box / box.sum(), None, {"pixel_scale": 0.2})
    real = StampSet(images, {}, ring / ring.sum(), None, {"pixel_scale": 0.2})
    with pytest.raises(TrainingError, match=rf"sim.h5 -> real.h5 fails: .* reaches 0.1\d+ of the "
                                            rf"target's peak \(bound {PSF_RESIDUAL_MAX:g}"):
        psf_match_for(sim, "sim.h5", real, "real.h5", seed=1)


def test_psf_flux_in_stamp_known_answer():
    """A Gaussian of sigma 4 pixels in a 16 x 16 stamp centred on it: drawn with the pixel
    response, each pixel holds the profile's integral over it, so the stamp holds
    F^2 = (2 Phi(8 / 4) - 1)^2 = 0.9111 of the flux; a stamp far larger than the PSF holds all of
    it; the answer is a share, whatever the profile's flux."""
    from scipy.stats import norm

    f = 2 * norm.cdf(8 / 4) - 1
    gauss = galsim.Gaussian(sigma=4 * SCALE)
    assert_allclose(psf_flux_in_stamp(gauss, 16, SCALE), f**2, rtol=1e-5)
    assert_allclose(psf_flux_in_stamp(gauss, 256, SCALE), 1.0, rtol=1e-6)
    assert_allclose(psf_flux_in_stamp(gauss.withFlux(7.0), 16, SCALE), f**2, rtol=1e-5)


def test_psf_flux_gain_rules():
    assert psf_flux_gain(0.9997, 0.956)[0] == 0.956 / 0.9997
    assert "K's sum 0.9563" in psf_flux_gain(0.9997, 0.956)[1]
    for fs, ft in ((None, 0.95), (0.99, None)):
        gain, why = psf_flux_gain(fs, ft)
        assert gain == 1.0 and "not recorded" in why
    assert psf_flux_gain(0.95, 0.99)[0] == 1.0  # matching does not brighten
    with pytest.raises(ValueError, match="target's psf_flux_in_stamp must be in"):
        psf_flux_gain(0.99, 1.5)
    with pytest.raises(ValueError, match=r"gain must be in \(0, 1\]"):
        build_psf_match(_draw(SIM_PSF), _draw(TARGET_PSF), (SIZE, SIZE), seed=1, gain=1.2)


def test_matched_galaxy_with_the_flux_gain_is_the_galaxy_through_the_untruncated_target_psf():
    """With K's sum = the target PSF's in-stamp flux over the sims' (the files' attributes), the
    matched stamp is the galaxy drawn through the untruncated target PSF, flux included (without
    it, `test_matched_galaxy_is_the_galaxy_through_the_target_psf`, it is brighter by the ratio);
    white noise still comes out white with its sigma; the gain survives refiner.pt."""
    gain, _ = psf_flux_gain(psf_flux_in_stamp(SIM_PSF, SIZE, SCALE),
                            psf_flux_in_stamp(TARGET_PSF, SIZE, SCALE))
    assert 0.95 < gain < 0.99
    m = build_psf_match(_draw(SIM_PSF), _draw(TARGET_PSF), (SIZE, SIZE), seed=11, gain=gain)
    assert_allclose(m.kernel.sum(), 1.0, rtol=1e-12)  # stored unit-sum; K~(0) is the gain
    assert_allclose(m.kernel_ft((SIZE, SIZE))[0, 0].real, gain, rtol=1e-12)
    gal = _galaxy(0.02, -0.02)
    sim = _draw(galsim.Convolve(gal, SIM_PSF))
    want = _draw(galsim.Convolve(gal, TARGET_PSF))
    got = m.apply(sim[None], np.zeros(1), {"id": np.array([0])})[0]
    assert np.abs(got - want).max() < 2e-3 * want.max()
    assert_allclose(got.sum() / want.sum(), 1.0, atol=3e-3)
    assert abs(got.sum() / sim.sum() - gain) < 1e-5
    assert_allclose(m.apply_psf(_draw(SIM_PSF)).sum(), 1.0, rtol=1e-6)  # /psf stays unit-sum
    n, sigma = 400, 3.0
    out = m.apply(np.random.default_rng(0).normal(0.0, sigma, (n, SIZE, SIZE)), np.full(n, sigma),
                  {"id": np.arange(n)})
    assert_allclose(out.std(), sigma, rtol=0.01)
    assert abs((out * np.roll(out, 1, axis=2)).mean() / out.var()) < 0.01
    assert PsfMatch.from_dict(m.to_dict()).gain == gain
    old = {k: v for k, v in m.to_dict().items() if k != "gain"}  # a refiner.pt of before the gain
    assert PsfMatch.from_dict(old).gain == 1.0


def test_psf_match_for_reads_the_gain_from_the_files(caplog):
    from refinegan.io import PSF_FLUX_ATTR, StampSet
    from refinegan.refiner.data import psf_match_for

    images = np.zeros((2, SIZE, SIZE), np.float32)
    sim_psf, tgt_psf = _draw(SIM_PSF), _draw(TARGET_PSF)
    sim = StampSet(images, {}, sim_psf / sim_psf.sum(), None, {PSF_FLUX_ATTR: 0.9997})
    real = StampSet(images, {}, tgt_psf / tgt_psf.sum(), None, {PSF_FLUX_ATTR: 0.95})
    with caplog.at_level("INFO", logger="refinegan.refiner.data"):
        m = psf_match_for(sim, "sim.h5", real, "real.h5", seed=1)
    assert m.gain == 0.95 / 0.9997 and "K's sum 0.9503" in caplog.text
    real.attrs.clear()  # a user's cutouts: nothing recorded, unit-sum K as before
    assert psf_match_for(sim, "sim.h5", real, "real.h5", seed=1).gain == 1.0
