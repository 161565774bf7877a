"""The paired twin target (refinegan.target.twin) and its paired calibration in compare
(refinegan.compare.twin), against known answers.

Known answers: with every mock effect off, the sims' PSF and white noise of the sims' sigma, the
twin is the sims' own stamps with fresh noise, so (a) twin - sim is pure noise of std sqrt(2)
sigma, (b) m_twin - m_sim, paired over the same galaxy groups, is 0 within its error, and the
pairing cancels the galaxy-to-galaxy response scatter: its error is several times below the
unpaired one; (c) a twin drawn with (1 + 0.01) g and labelled g gives m_twin - m_sim =
0.01 (1 + m_sim).

Measured here (1024 stamps, 256 groups, 32x32, seed 20261125), high SNR (sigma = 1 count,
median SNR ~370): paired error 0.0029 / 0.0022 vs unpaired 0.013 / 0.016 (m1 / m2). At the
default noise (sigma = 10, median SNR ~37) the pixel noise dominates each group's response
(sim-twin correlation of the per-group response ~0), so pairing gains nothing there: paired
0.022 / 0.037 vs unpaired 0.024 / 0.038 (docs/compare.md).
"""

import h5py
import numpy as np
import pytest

from refinegan.compare.calibration import calibrate, group_means, regauss_shapes
from refinegan.compare.params import CompareParams
from refinegan.compare.twin import load_twin, twin_calibration, twin_rng
from refinegan.config import load_config, twin_enabled
from refinegan.errors import ConfigError, ContractError
from refinegan.io import StampSet, read_many, read_stamps, write_stamps
from refinegan.sim.simulate import simulate
from refinegan.target.prepare_real import prepare_real
from refinegan.target.twin import COPIED_LABELS, prepare_twin

EFFECTS = ("knots", "bulge", "neighbours", "cosmic_rays", "hot_pixels")
OFF = [f"real.mock.{e}.enabled=false" for e in EFFECTS]
SIGMA = 1.0  # counts: high SNR, where the galaxies' response scatter dominates the m error


def _plain_twin_config(n: int, sigma: float, *more: str):
    """Every mock effect off, the sims' PSF, white noise of the sims' sigma."""
    return load_config(None, ["stamp.size=32", f"sim.n={n}", "shards=1", *OFF,
                              "real.psf.optical=false", "real.psf.use_sim_psf=true",
                              "real.noise.correlation=white", f"real.noise.sigma={sigma}",
                              f"sim.noise.sigma={sigma}", *more])


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """sims, their plain twin and the twin with an injected (1 + 0.01) g, 1024 stamps each."""
    tmp = tmp_path_factory.mktemp("twin")
    cfg = _plain_twin_config(1024, SIGMA)
    sim = read_stamps(simulate(cfg, tmp / "sim.h5"))
    twin = read_stamps(prepare_twin(cfg, tmp / "twin.h5"))
    biased = read_stamps(prepare_twin(cfg, tmp / "twin_bias.h5", shear_scale=1.01))
    p = CompareParams(n_bootstrap=200)
    shapes = regauss_shapes(sim.images, sim.psf, SIGMA**2, sim.mask)
    groups = group_means(shapes["eps1"], shapes["eps2"], shapes["status"] == 0, sim.labels)
    sim_cal = calibrate(groups, p.n_bootstrap, np.random.default_rng(1))

    def run(t: StampSet) -> dict:  # the sims as their own (identity) refined set
        return twin_calibration(t, sim, shapes, sim_cal, sim, shapes, sim_cal, p,
                                twin_rng(cfg.seed, p))

    return {"cfg": cfg, "sim": sim, "twin": twin, "plain": run(twin), "biased": run(biased),
            "sim_cal": sim_cal}


def test_plain_twin_is_the_sims_with_fresh_noise(plain):
    sim, twin = plain["sim"], plain["twin"]
    np.testing.assert_array_equal(twin.psf, sim.psf)
    diff = twin.images.astype(np.float64) - sim.images
    # independent white noise of sigma on both: the galaxies cancel, std sqrt(2) sigma
    np.testing.assert_allclose(diff.std(), np.sqrt(2) * SIGMA, rtol=0.01)
    assert abs(diff.mean()) < 5 * np.sqrt(2) * SIGMA / np.sqrt(diff.size)
    assert twin.attrs["is_twin"] and twin.attrs["domain"] == "real"


def test_plain_twin_paired_m_is_zero_and_much_tighter_than_unpaired(plain):
    res = plain["plain"]["twin_sim_paired"]
    dm, err, unpaired = res["dm"], res["dm_err"], res["dm_err_unpaired"]
    print("twin - sim paired dm", dm, "+-", err, "unpaired error", unpaired)
    assert res["n_groups"] >= 250
    assert np.all(np.abs(dm) < 3 * err), (dm, err)
    assert np.all(err * 3 < unpaired), (err, unpaired)
    np.testing.assert_allclose(unpaired, np.hypot(plain["sim_cal"]["m_err"],
                                                  plain["plain"]["twin"]["m_err"]))


def test_injected_shear_bias_is_recovered_paired(plain):
    res = plain["biased"]
    expected = 0.01 * (1 + plain["sim_cal"]["m"])  # (1 + m) 1.01 g = (1 + m + 0.01 (1 + m)) g
    dm, err = res["twin_sim_paired"]["dm"], res["twin_sim_paired"]["dm_err"]
    print("injected 1.01 g: twin - sim dm", dm, "+-", err, "expected", expected)
    assert np.all(np.abs(dm - expected) < 3 * err), (dm, err, expected)
    assert np.all(err < 0.004)  # resolved: 0.01 is more than 2.5 sigma from 0
    # the two twins share their noise fields (same stream, same ids): their difference is the
    # injected bias almost exactly (measured 2e-5 off)
    shift = dm - plain["plain"]["twin_sim_paired"]["dm"]
    np.testing.assert_allclose(shift, expected, rtol=0, atol=5e-4)
    # refined = the sims: m_refined - m_twin is minus m_twin - m_sim, group for group
    tp = res["transfer_paired"]
    np.testing.assert_allclose(tp["dm"], -dm, rtol=0, atol=1e-12)
    assert np.all(tp["dm_err"] > 0) and not np.any(tp["meets_bar"])
    # the twin's own m is the sims' moved by the injected 1 %
    np.testing.assert_allclose(res["twin"]["m"], plain["sim_cal"]["m"] + expected, atol=0.05)


def test_twin_labels_are_the_sims_all_shards(tmp_path):
    """With the mock's effects on (knots, bulges, neighbours, artefacts, lanczos noise), the
    twin of a sharded run carries every shard's stamps, with the sims' labels exactly."""
    cfg = load_config(None, ["stamp.size=32", "sim.n=64", "shards=2", "real.n=16"])
    shards = [simulate(cfg, tmp_path / f"shard-{i}.h5", shard=i, nshards=2) for i in range(2)]
    sim = read_many(shards)
    twin = read_stamps(prepare_twin(cfg, tmp_path / "twin.h5"))
    assert len(twin) == 64 and twin.mask is not None
    for name in COPIED_LABELS:
        assert twin.labels[name].dtype == sim.labels[name].dtype, name
        assert twin.labels[name].tobytes() == sim.labels[name].tobytes(), name
    assert np.ptp(twin.labels["knots_frac"]) > 0  # the mock's effects are on
    assert twin.labels["noise_lag1"].mean() > 0.08  # and its correlated noise
    assert load_twin(tmp_path / "twin.h5", sim, None) is not None  # compare accepts it
    # the twin's effects are the mock's on the same group ids (mock_effects streams), its
    # noise its own: not the mock's noise, not the sims'
    real = read_stamps(prepare_real(cfg, tmp_path / "real.h5"))
    np.testing.assert_array_equal(twin.labels["knots_frac"][:16], real.labels["knots_frac"])
    np.testing.assert_array_equal(twin.labels["n_cosmic_rays"][:16], real.labels["n_cosmic_rays"])


def test_twin_noise_is_not_the_sims_nor_the_mocks(tmp_path):
    cfg = _plain_twin_config(16, 10.0, "real.n=16", "real.mock.pairs.rot90=true")
    sim = read_stamps(simulate(cfg, tmp_path / "sim.h5"))
    twin = read_stamps(prepare_twin(cfg, tmp_path / "twin.h5"))
    noiseless = read_stamps(prepare_twin(cfg.with_overrides(["real.noise.sigma=0"]),
                                         tmp_path / "clean.h5"))
    mock = read_stamps(prepare_real(cfg, tmp_path / "real.h5"))
    mock_clean = read_stamps(prepare_real(cfg.with_overrides(["real.noise.sigma=0"]),
                                          tmp_path / "real_clean.h5"))
    n_twin = twin.images - noiseless.images
    n_sim = sim.images - noiseless.images
    n_mock = mock.images - mock_clean.images
    for other in (n_sim, n_mock):
        r = np.corrcoef(n_twin.ravel(), other.ravel())[0, 1]
        assert abs(r) < 0.02, r
    np.testing.assert_allclose(n_twin.std(), 10.0, rtol=0.03)


def test_same_config_same_bytes(tmp_path):
    cfg = load_config(None, ["stamp.size=32", "sim.n=32", "real.n=16"])
    a = read_stamps(prepare_twin(cfg, tmp_path / "a.h5"))
    b = read_stamps(prepare_twin(cfg, tmp_path / "b.h5"))
    assert a.images.tobytes() == b.images.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.psf.tobytes() == b.psf.tobytes() and sorted(a.labels) == sorted(b.labels)
    for name in a.labels:
        assert a.labels[name].tobytes() == b.labels[name].tobytes(), name


def test_twin_enabled_auto_is_on_for_the_mock_only():
    assert twin_enabled(load_config(None, []))
    assert not twin_enabled(load_config(None, ["compare.twin=false"]))
    hdf5 = ["real.source=hdf5", "real.hdf5.path=x.h5"]
    assert not twin_enabled(load_config(None, hdf5))
    assert twin_enabled(load_config(None, [*hdf5, "compare.twin=true"]))


def test_bad_shear_scale_refused(tmp_path):
    with pytest.raises(ConfigError, match="shear_scale must be a positive number"):
        prepare_twin(load_config(None, ["stamp.size=32", "sim.n=16"]), tmp_path / "t.h5",
                     shear_scale=0.0)


def test_a_twin_of_other_sims_is_refused(tmp_path):
    cfg = load_config(None, ["stamp.size=32", "sim.n=16", "real.n=16"])
    sim = read_stamps(simulate(cfg, tmp_path / "sim.h5"))
    other = prepare_twin(cfg.with_overrides(["seed=3"]), tmp_path / "other.h5")
    with pytest.raises(ContractError, match=r"other\.h5: label 'e1_int' .* not the sims' twin"):
        load_twin(other, sim, None)
    s = read_stamps(other)
    no_psf = write_stamps(tmp_path / "nopsf.h5", s.images, s.labels, domain="real",
                          pixel_scale=s.pixel_scale, source="test", config={}, seed=1)
    with pytest.raises(ContractError, match=r"nopsf\.h5: the twin has no /psf"):
        load_twin(no_psf, sim, None)
    no_ids = write_stamps(tmp_path / "noid.h5", s.images, {"g1": s.labels["g1"]}, domain="real",
                          pixel_scale=s.pixel_scale, source="test", config={}, seed=1, psf=s.psf)
    with pytest.raises(ContractError, match=r"noid\.h5: the twin has no label id, label pair_id"):
        load_twin(no_ids, sim, None)


def test_compare_with_twin_adds_only_its_datasets(tmp_path):
    """compare --twin writes calibration/twin, transfer_paired and twin_sim_paired; every other
    dataset is the same as without the twin (the twin draws from its own generator)."""
    from refinegan.cli import main
    from refinegan.compare.compare import compare

    fast = ["stamp.size=32", "sim.n=64", "real.n=64", "compare.morphology_n=0",
            "compare.cnn_seeds=0", "compare.n_bootstrap=10", "compare.gb_max_iter=5",
            "compare.gb_seeds=2", "compare.energy_n=50", "compare.plot_stamps=3"]
    cfg = load_config(None, fast)
    sim = simulate(cfg, tmp_path / "sim.h5")
    real = prepare_real(cfg, tmp_path / "real.h5")
    twin = prepare_twin(cfg, tmp_path / "twin.h5")
    s = read_stamps(sim)
    ref = write_stamps(tmp_path / "ref.h5", s.images, s.labels, domain="refined",
                       pixel_scale=s.pixel_scale, source="identity", config=cfg, seed=1,
                       psf=s.psf, extra_attrs={"parent": str(sim), "model_sha256": "0" * 64})
    compare(cfg, [sim], [ref], real, tmp_path / "plain.h5", plots_dir=tmp_path / "p1",
            progress=False)
    rc = main(["compare", "--sim", str(sim), "--refined", str(ref), "--real", str(real),
               "--twin", str(twin), "--out", str(tmp_path / "twin.h5c"), "--plots",
               str(tmp_path / "p2"), "--no-progress", *[f"--set={kv}" for kv in fast]])
    assert rc == 0
    with h5py.File(tmp_path / "plain.h5") as a, h5py.File(tmp_path / "twin.h5c") as b:
        names_a, names_b = [], []
        a.visit(names_a.append)
        b.visit(names_b.append)
        new = sorted(set(names_b) - set(names_a))
        assert {"calibration/twin/m", "calibration/twin/m_err", "calibration/transfer_paired/dm",
                "calibration/transfer_paired/dm_err", "calibration/twin_sim_paired/dm"} <= set(new)
        assert all(n.split("/")[1] in ("twin", "transfer_paired", "twin_sim_paired") for n in new)
        for name in names_a:
            if isinstance(a[name], h5py.Dataset):
                assert a[name][()].tobytes() == b[name][()].tobytes(), name
        assert b["calibration/transfer_paired/dm"].shape == (2,)
        # the refined set is the sims: m_refined - m_twin = -(m_twin - m_sim) exactly
        np.testing.assert_allclose(b["calibration/transfer_paired/dm"][()],
                                   -b["calibration/twin_sim_paired/dm"][()], atol=1e-12)
        assert b.attrs["n_twin"] == 64 and "twin" in b.attrs["inputs"]
    from refinegan.compare.store import read_tree, summary_lines

    with h5py.File(tmp_path / "twin.h5c") as f:
        lines = summary_lines(read_tree(f))
    assert any(line.startswith("paired refined-twin dm=") for line in lines)
    assert any(line.startswith("calibration twin") for line in lines)
