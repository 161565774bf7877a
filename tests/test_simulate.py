"""Known-answer tests of the simulate stage: shear, flux, noise, SNR, determinism, sharding."""

import galsim
import numpy as np
import pytest
from numpy.testing import assert_allclose

from refinegan import io
from refinegan.config import load_config
from refinegan.errors import ConfigError
from refinegan.sim.simulate import group_layout, shard_groups, simulate

PRINT_VALUES = False  # set True to print the measured values while editing tolerances


def _sim(tmp_path, name, overrides, **kw):
    cfg = load_config(None, overrides)
    path = tmp_path / name
    simulate(cfg, path, **kw)
    return io.read_stamps(path)


def test_shear_recovered_by_hsm_regauss(tmp_path):
    """Noiseless 90-degree pairs, g = (0.02, -0.03), 400 pairs of default-population galaxies.

    Estimator: HSM REGAUSS with the stored /psf image; its distortion e is converted to the
    reduced-shear ellipticity (galsim.Shear), whose mean over a 90-degree pair is g up to
    g*|e|^2 terms of random phase. Tolerance 1e-3 per component: the pair-average residual
    (std of the mean ~1.3e-4) plus REGAUSS's own multiplicative bias on these marginally
    resolved galaxies (about +1 % to +2 % here, i.e. <= 6e-4 at |g| = 0.03).
    Measured: mean g - truth = (+2.4e-4, -4.8e-4).
    """
    g_true = np.array([0.02, -0.03])
    s = _sim(tmp_path, "shear.h5", [
        "sim.n=800", "sim.noise.sigma=0", "sim.pairs.shear_sign=false",
        f"sim.shear.g1={g_true[0]}", f"sim.shear.g2={g_true[1]}",
        "sim.galaxy.shape_sigma=0.2", "sim.galaxy.shape_max=0.6",
    ])
    psf = galsim.Image(s.psf.astype(np.float64), scale=s.pixel_scale)
    g = np.empty((len(s), 2))
    for i, im in enumerate(s.images):
        res = galsim.hsm.EstimateShear(galsim.Image(im.astype(np.float64), scale=s.pixel_scale),
                                       psf, shear_est="REGAUSS", strict=False)
        assert res.error_message == "", f"stamp {i}: {res.error_message}"
        sh = galsim.Shear(e1=res.corrected_e1, e2=res.corrected_e2)
        g[i] = sh.g1, sh.g2
    assert_allclose(s.labels["g1"], g_true[0])
    assert_allclose(s.labels["g2"], g_true[1])
    mean = g.mean(axis=0)
    if PRINT_VALUES:
        print("recovered g - truth:", mean - g_true)
    assert_allclose(mean, g_true, atol=1e-3, rtol=0)
    # Without the applied shear the same estimator finds no shear: the test can tell.
    assert np.all(np.abs(mean) > 0.015)


def test_flux_label_matches_stamp_sum(tmp_path):
    """Compact galaxies (hlr <= 0.4", stamp 64 px = 12.8"): stamp sum = flux within 1 %."""
    s = _sim(tmp_path, "flux.h5", [
        "sim.n=64", "sim.noise.sigma=0", "stamp.size=64", "sim.galaxy.hlr_max=0.4",
        "sim.galaxy.sersic_n_max=2.5",
    ])
    total = s.images.astype(np.float64).sum(axis=(1, 2))
    assert_allclose(total, s.labels["flux"], rtol=0.01)


def test_noise_sigma_and_snr_definition(tmp_path):
    s = _sim(tmp_path, "noise.h5", ["sim.n=16", "sim.noise.sigma=7.5", "stamp.size=64"])
    clean = _sim(tmp_path, "clean.h5", ["sim.n=16", "sim.noise.sigma=0", "stamp.size=64"])
    noise = (s.images - clean.images).astype(np.float64)  # a blank noise stamp per image
    # 16 x 4096 pixels: relative error of a std ~ 1/sqrt(2 * 65536) = 0.3 %; 2 % is ~7 sigma.
    assert_allclose(noise.std(), 7.5, rtol=0.02)
    assert_allclose(s.labels["noise_sigma"], 7.5)
    snr = np.sqrt((clean.images.astype(np.float64) ** 2).sum(axis=(1, 2))) / 7.5
    assert_allclose(s.labels["snr"], snr, rtol=1e-5)
    assert np.all(np.isinf(clean.labels["snr"]))


def test_noise_by_target_snr(tmp_path):
    s = _sim(tmp_path, "snr.h5", ["sim.n=16", "sim.noise.snr=25", "sim.pairs.rot90=false",
                                  "sim.pairs.shear_sign=false"])
    assert_allclose(s.labels["snr"], 25.0, rtol=1e-5)
    assert np.unique(s.labels["noise_sigma"]).size == 16  # one sigma per galaxy


def test_pairs_layout_and_labels(tmp_path):
    s = _sim(tmp_path, "pairs.h5", ["sim.n=8", "sim.noise.sigma=3"])
    lab = s.labels
    assert_allclose(lab["id"], np.arange(8))
    assert_allclose(lab["pair_id"], [0, 0, 0, 0, 1, 1, 1, 1])
    assert_allclose(lab["rot90"], [0, 0, 1, 1] * 2)
    assert_allclose(lab["shear_sign"], [1, -1, 1, -1] * 2)
    assert_allclose(lab["g1"], 0.02 * lab["shear_sign"])
    assert_allclose(lab["e1_int"][2], -lab["e1_int"][0])
    # +g and -g twins share their noise field; the two orientations do not.
    im = s.images
    clean = _sim(tmp_path, "pairs0.h5", ["sim.n=8", "sim.noise.sigma=0"]).images
    n = im - clean
    assert_allclose(n[0], n[1], atol=1e-4)
    assert not np.allclose(n[0], n[2], atol=1e-2)
    # The rot90 twin of a noiseless galaxy is the stamp rotated by 90 degrees (the shear
    # is zero in component 2 and flips sign in component 1 under rotation: compare g=0).
    z = _sim(tmp_path, "rot.h5", ["sim.n=4", "sim.noise.sigma=0", "sim.shear.g1=0",
                                  "sim.shear.g2=0", "stamp.size=47"]).images
    assert_allclose(np.rot90(z[0]), z[2], atol=1e-3 * z[0].max())


@pytest.mark.parametrize("galaxy_type", ["sersic", "bulge_disk"])
def test_determinism_and_shard_invariance(tmp_path, galaxy_type):
    over = ["sim.n=40", f"sim.galaxy.type={galaxy_type}"]
    full = tmp_path / "full.h5"
    again = tmp_path / "again.h5"
    cfg = load_config(None, over)
    simulate(cfg, full)
    simulate(cfg, again)
    a, b = io.read_stamps(full), io.read_stamps(again)
    assert a.images.tobytes() == b.images.tobytes()
    parts = []
    for i in range(3):
        simulate(cfg, tmp_path / f"shard{i}.h5", shard=i, nshards=3)
        parts.append(tmp_path / f"shard{i}.h5")
    joined = io.read_many(parts)
    assert joined.images.tobytes() == a.images.tobytes()
    for name, values in a.labels.items():
        assert joined.labels[name].tobytes() == values.tobytes(), name
    if galaxy_type == "bulge_disk":
        assert "bulge_frac" in a.labels and np.all(a.labels["hlr"] > 0)
    # A different seed changes the images.
    other = tmp_path / "other.h5"
    simulate(load_config(None, [*over, "seed=7"]), other)
    assert io.read_stamps(other).images.tobytes() != a.images.tobytes()


def test_kspace_matches_galsim_drawimage(tmp_path):
    over = ["sim.n=24", "sim.noise.sigma=0"]
    cfg = load_config(None, over)
    simulate(cfg, tmp_path / "k.h5")
    simulate(cfg, tmp_path / "g.h5", method="galsim")
    k, g = io.read_stamps(tmp_path / "k.h5"), io.read_stamps(tmp_path / "g.h5")
    peak = g.images.max(axis=(1, 2), keepdims=True)
    assert np.abs(k.images - g.images).max() / peak.min() < 1e-3
    assert_allclose(k.images.sum(axis=(1, 2)), g.images.sum(axis=(1, 2)), rtol=3e-3)


def test_file_attributes_and_psf(tmp_path):
    path = tmp_path / "a.h5"
    cfg = load_config(None, ["sim.n=4", "sim.psf.type=kolmogorov", "sim.psf.fwhm=0.8"])
    simulate(cfg, path)
    attrs = io.validate_file(path)
    assert attrs["domain"] == "sim" and attrs["seed"] == cfg["seed"]
    assert attrs["config"]["sim"]["psf"]["type"] == "kolmogorov"
    assert attrs["pixel_scale"] == pytest.approx(0.2)
    with io.open_stamps(path) as sf:
        psf = sf.psf
        assert psf.shape == (48, 48)
        assert_allclose(psf.sum(), 1.0, rtol=1e-5)
        mom = galsim.hsm.FindAdaptiveMom(galsim.Image(psf.astype(np.float64), scale=0.2))
    # Kolmogorov FWHM 0.8": adaptive-moment sigma ~ FWHM / 2.355 broadened by the pixel.
    sigma_arcsec = mom.moments_sigma * 0.2
    assert 0.8 / 2.355 < sigma_arcsec < 0.8 / 2.355 * 1.25


def test_cosmos_population(tmp_path, monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    s = _sim(tmp_path, "cosmos.h5", ["sim.n=8", "sim.population=cosmos", "sim.noise.sigma=0"])
    assert np.all(s.labels["cosmos_index"] >= 0)
    assert np.all(s.labels["flux"] > 0)
    assert np.all(s.images.sum(axis=(1, 2)) <= s.labels["flux"] * 1.003)


def test_cosmos_missing_catalog_message(tmp_path):
    from refinegan.errors import InputDataError

    cfg = load_config(None, ["sim.n=4", "sim.population=cosmos", f"sim.cosmos.dir={tmp_path}"])
    with pytest.raises(InputDataError, match="galsim_download_cosmos"):
        simulate(cfg, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_shard_arguments_checked():
    with pytest.raises(ConfigError, match=r"shard must be in \[0, 2\), got 2"):
        shard_groups(10, 2, 2)
    with pytest.raises(ConfigError, match="nshards must be >= 1"):
        shard_groups(10, 0, 0)
    assert group_layout(False, False) == [(0, 1)]
