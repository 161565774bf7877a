"""The mock target: file contract, determinism, pairs, and one known-answer test per effect."""

import galsim
import numpy as np
import pytest

from refinegan.config import load_config
from refinegan.errors import ConfigError
from refinegan.io import SIM_LABELS, read_stamps
from refinegan.sim.population import Population, sample_population
from refinegan.sim.render import make_renderer
from refinegan.target.mock import (
    MASK_COSMIC_RAY,
    MASK_HOT_PIXEL,
    KnottedScene,
    MockParams,
    build_target_psf,
    correlated_noise,
    mock_groups,
    psf_fwhm_arcsec,
)
from refinegan.target.prepare_real import prepare_real

EFFECTS = ("knots", "bulge", "neighbours", "cosmic_rays", "hot_pixels")
SIZE = 32
N_GROUPS = 24


def _config(*overrides, only=()):
    """Mock config with all effects off except ``only`` (plus the overrides)."""
    items = [f"stamp.size={SIZE}", "real.n=16"]
    items += [f"real.mock.{e}.enabled={'true' if e in only else 'false'}" for e in EFFECTS]
    return load_config(None, items + list(overrides))


@pytest.fixture(scope="module")
def renderer():
    psf = build_target_psf(load_config()["real"]["psf"])
    return make_renderer(psf, SIZE, 0.2)


@pytest.fixture(scope="module")
def round_renderer():
    """Atmosphere only: a PSF with 180-degree symmetry, for the morphology tests."""
    return make_renderer(galsim.Kolmogorov(fwhm=0.6), SIZE, 0.2)


def _groups(config, renderer, n_groups=N_GROUPS):
    p = MockParams.from_config(config)
    return mock_groups(p, Population.from_config(config), renderer,
                       np.arange(n_groups, dtype=np.int64), 0.7)


def _asymmetry(images):
    """Sum |I - I rotated 180 deg about the stamp centre| / sum |I| per stamp."""
    rot = images[:, ::-1, ::-1]
    return np.abs(images - rot).sum(axis=(1, 2)) / np.abs(images).sum(axis=(1, 2))


def test_default_mock_file(tiny_config, tmp_path):
    out = prepare_real(tiny_config, tmp_path / "real.h5")
    s = read_stamps(out)
    assert s.images.shape == (16, 32, 32) and s.images.dtype == np.float32
    assert s.attrs["domain"] == "real" and s.attrs["is_mock"] and s.attrs["n_rejected"] == 0
    assert set(SIM_LABELS) | {"pair_id", "rot90", "shear_sign", "knots_frac", "n_cosmic_rays",
                              "noise_lag1"} <= set(s.labels)
    np.testing.assert_allclose(s.psf.sum(), 1.0, rtol=1e-5)
    assert s.mask is not None and s.mask.shape == s.images.shape
    assert "NOT real data" in s.attrs["source"]
    assert s.labels["noise_lag1"].mean() > 0.08  # lanczos correlation by default


def test_same_config_same_bytes_and_own_seed(tiny_config, tmp_path):
    a = read_stamps(prepare_real(tiny_config, tmp_path / "a.h5"))
    b = read_stamps(prepare_real(tiny_config, tmp_path / "b.h5"))
    assert a.images.tobytes() == b.images.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    for name in a.labels:
        assert a.labels[name].tobytes() == b.labels[name].tobytes()
    cfg = load_config(None, ["stamp.size=32", "real.n=16", "real.seed=7"])
    c = read_stamps(prepare_real(cfg, tmp_path / "c.h5"))
    assert not np.allclose(a.images, c.images)
    # Same ids, different stream from the sim: the mock's galaxies are not the sim's.
    pop = Population.from_config(tiny_config)
    sim = sample_population(pop, tiny_config["seed"], np.arange(4), stream="sim")
    assert not np.allclose(sim["e1_int"], a.labels["e1_int"][::4])


def test_pairs_share_noise_and_detector_effects(renderer):
    cfg = _config("real.mock.cosmic_rays.mean_count=2", only=("cosmic_rays", "hot_pixels"))
    images, mask, lab = _groups(cfg, renderer, 4)
    clean, _, _ = _groups(_config("real.noise.sigma=0"), renderer, 4)
    assert list(lab["rot90"][:4]) == [0, 0, 1, 1] and list(lab["shear_sign"][:4]) == [1, -1, 1, -1]
    np.testing.assert_allclose(images[0::2] - images[1::2], clean[0::2] - clean[1::2], atol=1e-3)
    assert np.array_equal(mask[0::2], mask[1::2])
    assert not np.allclose(images[0] - clean[0], images[2] - clean[2])  # orientations differ


def test_pairs_follow_config():
    p = MockParams.from_config(load_config(None, ["real.n=6", "real.mock.pairs.rot90=false"]))
    assert p.layout == [(0, 1), (0, -1)]
    with pytest.raises(ConfigError, match=r"real.n = 6 must be a multiple of 4"):
        MockParams.from_config(load_config(None, ["real.n=6"]))
    with pytest.raises(ConfigError, match=r"fraction_max = 1.2 must be below 1"):
        MockParams.from_config(load_config(None, ["real.mock.knots.fraction_max=0.9",
                                                  "real.mock.bulge.fraction_max=0.3"]))
    # a disabled effect takes no flux, so its fraction_max does not count
    p = MockParams.from_config(load_config(None, ["real.mock.knots.enabled=false",
                                                  "real.mock.bulge.fraction_max=0.9"]))
    assert not p.on("knots") and p.effects["bulge"]["fraction_max"] == 0.9
    p = MockParams.from_config(load_config(None, ["real.mock.knots.fraction_max=0.9",
                                                  "real.mock.bulge.enabled=false"]))
    assert not p.on("bulge") and p.effects["knots"]["fraction_max"] == 0.9


@pytest.mark.parametrize("kind", ["lanczos", "white"])
def test_correlated_noise_lag1_and_power_spectrum(kind):
    spec = load_config(None, [f"real.noise.correlation={kind}"])["real"]["noise"]
    rngs = [np.random.default_rng(i) for i in range(64)]
    f, lag1 = correlated_noise(rngs, (SIZE, SIZE), 10.0, spec, 0.2)
    np.testing.assert_allclose(f.std(), 10.0, rtol=0.03)
    meas = 0.5 * (np.mean(f[:, :, 1:] * f[:, :, :-1]) + np.mean(f[:, 1:] * f[:, :-1])) / f.var()
    power = np.mean(np.abs(np.fft.fft2(f)) ** 2, axis=0)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE)))
    ratio = power[(k > 0) & (k < 0.15)].mean() / power[k > 0.4].mean()
    if kind == "lanczos":
        assert meas > 0.09 and lag1.mean() > 0.09
        np.testing.assert_allclose(meas, lag1.mean(), atol=0.02)
        assert ratio > 1.5  # non-flat: resampling suppresses high-k power
    else:
        assert abs(meas) < 0.02 and np.all(lag1 == 0)
        assert 0.85 < ratio < 1.15


def test_cosmos_noise_option():
    spec = load_config(None, ["real.noise.correlation=cosmos"])["real"]["noise"]
    f, lag1 = correlated_noise([np.random.default_rng(1)], (SIZE, SIZE), 5.0, spec, 0.2)
    assert f.shape == (1, SIZE, SIZE) and 3.5 < f.std() < 6.5 and lag1[0] > 0.05
    # not periodic over the stamp, as no coadd's noise is (GalSim's FFT drawing wraps around):
    # the first and last columns (rows) are not neighbours
    f, lag1 = correlated_noise([np.random.default_rng(i) for i in range(600)], (SIZE, SIZE), 5.0,
                               spec, 0.2)
    f = f.astype(np.float64)
    var = f.var()
    lag_x = (f[:, :, 1:] * f[:, :, :-1]).mean() / var
    wrap_x, wrap_y = (f[:, :, 0] * f[:, :, -1]).mean() / var, (f[:, 0] * f[:, -1]).mean() / var
    assert abs(lag_x - lag1.mean()) < 0.03 and lag_x > 0.4
    assert abs(wrap_x) < 0.05 and abs(wrap_y) < 0.05, (wrap_x, wrap_y)  # wrapped: 0.48


def test_knots_raise_asymmetry(round_renderer):
    off, _, lab = _groups(_config("real.noise.sigma=0"), round_renderer)
    on, _, lab_on = _groups(_config("real.noise.sigma=0", "real.mock.knots.fraction_max=0.6",
                                    only=("knots",)), round_renderer)
    a_off, a_on = _asymmetry(off).mean(), _asymmetry(on).mean()
    assert a_off < 0.01 and a_on > 0.05
    assert np.all(lab["knots_frac"] == 0) and lab_on["knots_frac"].max() > 0.3
    # Flux kept (up to what falls outside the 32-pixel stamp, less for the compact knots).
    np.testing.assert_allclose(on.sum(axis=(1, 2)), off.sum(axis=(1, 2)), rtol=0.1)


def test_offset_bulge_raises_asymmetry(round_renderer):
    off, _, _ = _groups(_config("real.noise.sigma=0"), round_renderer)
    on, _, lab = _groups(_config("real.noise.sigma=0", "real.mock.bulge.offset_max=0.4",
                                 only=("bulge",)), round_renderer)
    assert _asymmetry(on).mean() > _asymmetry(off).mean() + 0.02
    assert lab["bulge_offset"].max() > 0.2 and np.abs(lab["bulge_misalign"]).max() > 10


def test_cosmic_rays_positive_tail_and_mask(renderer):
    clean, _, _ = _groups(_config("real.noise.sigma=0"), renderer)
    off, m_off, _ = _groups(_config(), renderer)
    on, m_on, lab = _groups(_config("real.mock.cosmic_rays.mean_count=2", only=("cosmic_rays",)),
                            renderer)
    r_off, r_on = (off - clean).ravel(), (on - clean).ravel()  # noise (+ cosmic rays)
    skew = lambda r: np.mean((r - r.mean()) ** 3) / r.std() ** 3  # noqa: E731
    assert np.mean(r_off > 8 * 10.0) < 1e-5 and np.mean(r_on > 8 * 10.0) > 1e-3  # > 8 sigma
    assert abs(skew(r_off)) < 0.1 and skew(r_on) > 1.0
    assert m_off.sum() == 0 and np.all(m_on <= MASK_COSMIC_RAY) and (m_on > 0).sum() > 0
    has = lab["n_cosmic_rays"] > 0
    assert np.array_equal(has, (m_on > 0).any(axis=(1, 2)))
    assert np.all((on - off)[m_on > 0] >= 10 * 10.0 - 1e-3)  # amplitude_min x sigma


def test_hot_pixels_in_mask(renderer):
    on, m_on, lab = _groups(_config("real.mock.hot_pixels.mean_count=3", only=("hot_pixels",)),
                            renderer, 8)
    assert np.all(np.isin(m_on, (0, MASK_HOT_PIXEL)))
    np.testing.assert_array_equal((m_on > 0).sum(axis=(1, 2)) <= lab["n_hot_pixels"], True)
    assert lab["n_hot_pixels"].sum() > 5


def test_neighbours_add_flux_away_from_centre(renderer):
    cfg = ("real.noise.sigma=0", "real.mock.neighbours.mean_count=3")
    off, _, _ = _groups(_config(*cfg), renderer)
    on, _, lab = _groups(_config(*cfg, only=("neighbours",)), renderer)
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    outer = np.hypot(x, y) > 8
    assert lab["n_neighbours"].sum() > 10
    extra = (on - off)[:, outer].sum(axis=1)
    assert np.all(extra[lab["n_neighbours"] == 0] == 0) and extra[lab["n_neighbours"] > 0].mean() > 0


def _moments(psf, scale=0.2, n=64):
    im = psf.drawImage(nx=n, ny=n, scale=scale)
    return galsim.hsm.FindAdaptiveMom(im)


def test_optical_psf_changes_second_moments():
    spec = load_config()["real"]["psf"]
    atmos = _moments(build_target_psf({**spec, "optical": False}))
    full = _moments(build_target_psf(spec))
    assert full.moments_sigma > 1.03 * atmos.moments_sigma  # optical widens
    big = _moments(build_target_psf({**spec, "lam_over_diam": 0.6}))
    assert big.moments_sigma > full.moments_sigma
    # Noll Z5 (astig1) elongates along 45 degrees (e2), Z6 (astig2) along the axes (e1); both
    # need defocus (an astigmatic PSF is round at best focus).
    zero = {**spec, "defocus": 0.15, "coma1": 0.0, "astig1": 0.0}
    e_pos = _moments(build_target_psf({**zero, "astig1": 0.1})).observed_shape
    e_neg = _moments(build_target_psf({**zero, "astig1": -0.1})).observed_shape
    assert e_pos.e2 * e_neg.e2 < 0 and abs(e_pos.e2) > 0.05 and abs(e_pos.e1) < abs(e_pos.e2) / 3
    e_axes = _moments(build_target_psf({**zero, "astig2": 0.1})).observed_shape
    assert abs(e_axes.e1) > 0.05 and abs(e_axes.e2) < abs(e_axes.e1) / 3
    assert abs(_moments(build_target_psf({**zero, "defocus": 0.0})).observed_shape.e) < 1e-3
    assert psf_fwhm_arcsec(build_target_psf(spec), 0.2) > psf_fwhm_arcsec(
        build_target_psf({**spec, "optical": False}), 0.2)


def test_knotted_scene_matches_galsim_random_knots(renderer):
    """The matrix-product knots equal GalSim's RandomKnots through shape, rotation and shear."""
    base = galsim.Sersic(n=1.5, half_light_radius=0.5, flux=800.0).shear(g1=0.2, g2=-0.1)
    rk = galsim.RandomKnots(20, half_light_radius=0.5, flux=200.0, rng=galsim.BaseDeviate(5))
    e, g = galsim.Shear(g1=0.2, g2=-0.1), galsim.Shear(g1=0.03, g2=0.01)
    plain = galsim.Add([base, rk.shear(e)]).rotate(90 * galsim.degrees).shear(g)
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    matrix = g.getMatrix() @ rot @ e.getMatrix()
    fast = KnottedScene(base.rotate(90 * galsim.degrees).shear(g), rk.points @ matrix.T, 10.0)
    a, b = renderer.render([plain, fast])
    np.testing.assert_allclose(b, a, atol=1e-5 * a.max())
    c = renderer.render([fast.to_gsobject()])[0]
    np.testing.assert_allclose(c, a, atol=1e-5 * a.max())


def test_pairs_measure_a_shear_response(renderer):
    """Known truth: +g/-g pairs of the (noise-free) mock respond to the applied g1."""
    cfg = _config("real.noise.sigma=0", only=("knots", "bulge"))
    images, _, lab = _groups(cfg, renderer, 12)
    g1 = np.array([galsim.hsm.FindAdaptiveMom(galsim.Image(im, scale=0.2)).observed_shape.g1
                   for im in images]).reshape(-1, 4)
    response = (g1[:, 0] - g1[:, 1] + g1[:, 2] - g1[:, 3]) / (4 * lab["g1"][0])
    # Adaptive moments without PSF correction: diluted by the PSF, so below 1 but clearly positive.
    assert 0.3 < response.mean() < 1.0 and response.std() < 0.5


def test_use_sim_psf_gives_the_sims_psf(tmp_path):
    """Noise-only control: sim PSF, no optics; the mock's /psf then equals the sim's PSF image."""
    from refinegan.sim.simulate import build_psf, draw_psf_image

    cfg = _config("real.psf.use_sim_psf=true", "real.psf.optical=false")
    out = prepare_real(cfg, tmp_path / "control.h5")
    sim = cfg["sim"]["psf"]
    want = draw_psf_image(build_psf(sim["type"], sim["fwhm"], sim["beta"]), SIZE, 0.2)
    np.testing.assert_allclose(read_stamps(out).psf, want, atol=1e-6)
