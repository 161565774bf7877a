"""The compare stage end to end on tiny GalSim sets, and its error paths."""

import h5py
import numpy as np
import pytest
from compare_helpers import make_pairs, write_set

from refinegan.compare.compare import compare
from refinegan.compare.measure import Measurement
from refinegan.compare.params import CompareParams
from refinegan.compare.samples import Samples
from refinegan.compare.store import read_tree
from refinegan.compare.tables import label_drift
from refinegan.config import load_config
from refinegan.errors import ConfigError, ContractError
from refinegan.io import write_stamps

FAST = ["compare.morphology_n=8", "compare.cnn_seeds=1", "compare.cnn_epochs=1",
        "compare.cnn_channels=2", "compare.n_bootstrap=10", "compare.gb_max_iter=5",
        "compare.gb_seeds=2", "compare.energy_n=50", "compare.plot_stamps=3"]
G = (0.02, 0.02)


@pytest.fixture
def config():
    return load_config(None, FAST)


@pytest.fixture
def files(tmp_path):
    """10 galaxies each (the gradient-boosting classifiers' minimum, compare.verdicts):
    sim (exponentials, Gaussian PSF), refined = the sims drawn with (1 + 0.01) g (same noise),
    real = Gaussians with more noise (labels and pairs, like the mock)."""
    im, lab, psf = make_pairs(10, g=G, noise=2.0, profile="exp", method="auto", seed=1, e_int=0.05)
    sim = write_set(tmp_path / "sim.h5", im, lab, psf, "sim")
    imr, _, _ = make_pairs(10, g=G, noise=2.0, profile="exp", method="auto", seed=1, e_int=0.05,
                           bias=0.01)
    ref = write_set(tmp_path / "refined.h5", imr, lab, psf, "refined", parent=sim)
    imq, labq, _ = make_pairs(10, g=G, noise=4.0, profile="gauss", method="auto", seed=2)
    real = write_set(tmp_path / "real.h5", imq, labq, psf, "real")
    return {"sim": sim, "refined": ref, "real": real, "labels": lab, "images": im, "psf": psf}


def test_compare_end_to_end(tmp_path, files, config, caplog):
    out = tmp_path / "res" / "compare.h5"
    caplog.set_level("INFO", logger="refinegan.compare.compare")
    result = compare(config, [files["sim"]], [files["refined"]], files["real"], out,
                     progress=False)
    assert out.exists() and not (tmp_path / "res" / "compare.h5.tmp").exists()
    with h5py.File(out) as f:
        assert f.attrs["n_sim"] == 40 and f.attrs["morphology_n"] == 8
        assert "sha256" not in f.attrs["inputs"] and len(f.attrs["inputs"]) > 64
        for path in ("stats/sim/hsm_g1", "stats/real/noise_std", "stats/refined/morph_c",
                     "stats/sim/morph_index", "spectra/k", "spectra/real/mean", "acf/sim",
                     "histogram/edges", "distances/w1", "distances/gap_closed_w1",
                     "distances/energy", "distances/energy_noise", "distances/energy_morph",
                     "classifier/gb_all/auc", "classifier/cnn_pixels/auc",
                     "classifier/gb_morph/auc", "labels/e1/p95_abs", "calibration/sim/m",
                     "failures/sim/hsm", "failures/real/morph",
                     "calibration/paired/dm", "calibration/transfer/abs_dm_refined_real"):
            assert path in f, path
        assert f["stats/sim/hsm_sigma"].attrs["units"] == "pixels"
        assert f["spectra/real/mean"].attrs["units"] == "counts^2"
        assert f["stats/real/noise_std"].attrs["units"] == "counts"
        # each stamp's galaxy group, for errors clustered on groups (bench/panel.py)
        assert f["stats/sim/group"].dtype == np.int64
        np.testing.assert_array_equal(f["stats/sim/group"][()], files["labels"]["pair_id"])
        tree = read_tree(f)
    d = tree["distances"]
    assert d["w1"].shape == d["w1_err"].shape == (len(d["names"]), 3)
    assert np.isfinite(d["w1_err"][: len(d["names"]) - 7, :2]).all()  # scalar stats, sim/refined
    # the refined set is the sim set with a 1% shear bias: paired dm = 0.01 (same noise)
    dm = tree["calibration"]["paired"]["dm"]
    np.testing.assert_allclose(dm, 0.01, atol=1e-3)
    # the real file carries the same PSF here, so the target-PSF calibration agrees exactly
    np.testing.assert_array_equal(tree["calibration"]["refined_target_psf"]["m"],
                                  tree["calibration"]["refined"]["m"])
    assert "abs_dm_refined_real" in tree["calibration"]["transfer_target_psf"]
    # closer_by on the paired sets' common selection: exactly the difference of the two |dm|
    t = tree["calibration"]["transfer"]
    np.testing.assert_allclose(t["closer_by_refined"],
                               t["abs_dm_sim_real"] - t["abs_dm_refined_real"], atol=1e-12)
    assert np.all(t["closer_by_refined_err"] > 0) and "closer_by_psf_matched" not in t
    # morphology (8 of 32 stamps) on the same galaxies for sim and refined
    np.testing.assert_array_equal(tree["stats"]["sim"]["morph_index"],
                                  tree["stats"]["refined"]["morph_index"])
    # noise sigma 2 (sim) vs 4 (real) shows up in the statistics and the classifier
    assert np.nanmedian(tree["stats"]["real"]["noise_std"]) == pytest.approx(4.0, rel=0.1)
    assert tree["classifier"]["gb_noise"]["auc"][0] > 0.9
    # ... and in the noise-family energy distance; refined has the sims' noise: no gap closed
    en = d["energy_noise"]
    assert en[0] > 5 * en[2] and abs(d["gap_closed_energy_noise"]) < 0.1
    for name in ("stamps", "histograms", "pixels", "noise_power", "calibration", "psf", "classifier"):
        assert (tmp_path / "res" / "plots" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "res" / "plots" / f"{name}.rst").read_text().strip()
    assert any("calibration transfer" in r.message for r in caplog.records)
    assert set(result) >= {"stats", "distances", "classifier", "calibration", "labels"}


def test_real_without_labels_skips_its_calibration(tmp_path, files, config):
    imq = np.asarray(h5py.File(files["real"])["images"])
    real = write_set(tmp_path / "nolabels.h5", imq, {}, None, "real")
    cfg = load_config(None, [*FAST, "compare.morphology_n=0", "compare.cnn_seeds=0"])
    res = compare(cfg, [files["sim"]], [files["refined"]], real, tmp_path / "c.h5",
                  plots_dir=tmp_path / "p", progress=False, control_paths=[files["real"]])
    assert "skipped" in res["calibration"]["real"]
    assert "transfer" not in res["calibration"] and "paired" in res["calibration"]
    # the control is the real stamps themselves: W1 0 against real, in every scalar statistic
    w1c = res["distances"]["w1_control"]
    names = list(res["distances"]["names"])
    assert w1c[names.index("noise_std")] == 0.0 and w1c[names.index("hsm_g1")] == 0.0
    assert "control_auc" in res["classifier"]["gb_noise"]
    assert "control" in res["spectra"]


def test_params_defaults_match_schema():
    from dataclasses import asdict

    assert asdict(CompareParams()) == load_config(None, [])["compare"]


def _refined_with(tmp_path, files, labels=None, images=None, domain="refined"):
    lab = dict(files["labels"]) if labels is None else labels
    im = files["images"] if images is None else images
    return write_set(tmp_path / "bad_refined.h5", im, lab, files["psf"], domain,
                     parent=files["sim"])


def test_refined_labels_must_match_sim(tmp_path, files, config):
    lab = dict(files["labels"])
    lab["g1"] = lab["g1"].copy()
    lab["g1"][5] += 0.1
    bad = _refined_with(tmp_path, files, labels=lab)
    with pytest.raises(ContractError, match=r"label 'g1' differs at stamp 5"):
        compare(config, [files["sim"]], [bad], files["real"], tmp_path / "c.h5", progress=False)


def test_refined_count_must_match_sim(tmp_path, files, config):
    lab = {k: v[:28] for k, v in files["labels"].items()}
    bad = _refined_with(tmp_path, files, labels=lab, images=files["images"][:28])
    with pytest.raises(ContractError, match="28 refined stamps but 40 sim stamps"):
        compare(config, [files["sim"]], [bad], files["real"], tmp_path / "c.h5", progress=False)


def test_refined_domain_checked(tmp_path, files, config):
    with pytest.raises(ContractError, match="expected 'refined'"):
        compare(config, [files["sim"]], [files["sim"]], files["real"], tmp_path / "c.h5",
                progress=False)


def test_real_stamp_shape_checked(tmp_path, files, config):
    im, lab, psf = make_pairs(2, size=24)
    real = write_set(tmp_path / "small_real.h5", im, lab, psf, "real")
    with pytest.raises(ContractError, match=r"stamp shape \(24, 24\) differs"):
        compare(config, [files["sim"]], [files["refined"]], real, tmp_path / "c.h5",
                progress=False)


def test_unknown_compare_key():
    with pytest.raises(ConfigError, match="unknown compare key"):
        CompareParams.from_config({"compare": {"morphology": 5}})
    with pytest.raises(ConfigError, match="compare.bogus"):
        load_config(None, ["compare.bogus=1"])


def test_cli_compare_error_exit_code(tmp_path, files):
    from refinegan.cli import main

    rc = main(["compare", "--sim", str(files["sim"]), "--refined", str(files["sim"]),
               "--real", str(files["real"]), "--out", str(tmp_path / "c.h5"), "--no-progress"])
    assert rc == 2


def test_pipeline_inputs_identity_refiner(tmp_path):
    """On the pipeline's own sims and mock target, an identity "refiner" (the sims copied as a
    refined set) changes nothing: drift 0, dm = dc = 0, gap closed 0 for every statistic."""
    from refinegan.io import read_stamps, write_stamps
    from refinegan.sim.simulate import simulate
    from refinegan.target.prepare_real import prepare_real

    cfg = load_config(None, [*FAST, "stamp.size=32", "sim.n=64", "real.n=64", "compare.energy_n=1000",
                             "compare.morphology_n=0", "compare.cnn_seeds=0"])
    sim = simulate(cfg, tmp_path / "sim.h5") or tmp_path / "sim.h5"
    real = prepare_real(cfg, tmp_path / "real.h5")
    s = read_stamps(sim)
    ref = write_stamps(tmp_path / "ref.h5", s.images, s.labels, domain="refined",
                       pixel_scale=s.pixel_scale, source="identity", config=cfg, seed=1,
                       psf=s.psf, extra_attrs={"parent": str(sim), "model_sha256": "0" * 64})
    res = compare(cfg, [sim], [ref], real, tmp_path / "c.h5", progress=False)
    assert res["labels"]["e1"]["p95_abs"] == 0 and res["labels"]["flux_rel"]["p95_abs"] == 0
    np.testing.assert_array_equal(res["calibration"]["paired"]["dm"][0], 0.0)
    assert np.all(res["calibration"]["paired"]["dc"] == 0)
    d = res["distances"]
    finite = np.isfinite(d["gap_closed_w1"])
    assert finite.sum() > 10 and np.all(d["gap_closed_w1"][finite] == 0)
    assert d["gap_closed_energy"] == d["gap_closed_energy_noise"] == 0
    assert "m" in res["calibration"]["real"]  # the mock carries its true shear and pairs


def test_noiseless_sims_flagged_not_fatal(tmp_path, config):
    """Noiseless sims: no noise pixels to measure (flagged, NaN), everything else still runs."""
    im, lab, psf = make_pairs(4, g=G, noise=0.0)
    sim = write_set(tmp_path / "sim.h5", im, lab, psf, "sim")
    ref = write_set(tmp_path / "ref.h5", im, lab, psf, "refined", parent=sim)
    imq, labq, _ = make_pairs(4, g=G, noise=3.0, seed=2)
    real = write_set(tmp_path / "real.h5", imq, labq, psf, "real")
    cfg = load_config(None, [*FAST, "compare.morphology_n=0", "compare.cnn_seeds=0"])
    res = compare(cfg, [sim], [ref], real, tmp_path / "c.h5", progress=False)
    assert res["failures"]["sim"]["noise"] == 16 and res["failures"]["real"]["noise"] == 0
    assert abs(res["calibration"]["sim"]["m"][0]) < 1e-4  # REGAUSS exact on these Gaussians


def test_cli_compare_runs(tmp_path, files):
    from refinegan.cli import main

    sets = [f"--set={kv}" for kv in (*FAST, "compare.morphology_n=0", "compare.cnn_seeds=0")]
    rc = main(["compare", "--sim", str(files["sim"]), "--refined", str(files["refined"]),
               "--real", str(files["real"]), "--out", str(tmp_path / "c.h5"),
               "--plots", str(tmp_path / "figs"), "--no-progress", *sets])
    assert rc == 0
    assert (tmp_path / "c.h5").exists() and (tmp_path / "figs" / "calibration.png").exists()


def _measurement(n: int, **scalars) -> Measurement:
    base = {k: np.full(n, 2.0) for k in ("hsm_flux", "flux", "hsm_g1", "hsm_g2", "hsm_sigma",
                                         "hlr_pix", "hsm_dx", "hsm_dy")}
    return Measurement({**base, **scalars}, np.zeros((n, 2)), np.zeros((n, 7, 7)))


def test_measurement_is_typed_and_never_written_to():
    """values() reads scalars (N,) or statmorph (M,); with_morphology returns a new object."""
    import dataclasses

    m = Measurement({"flux": np.array([1, 2, 3])}, np.zeros((3, 2)), np.zeros((3, 7, 7)))
    assert m.values("flux").dtype == np.float64 and len(m) == 3 and not m.has_morph
    with pytest.raises(KeyError, match="'morph_c' was not measured"):
        m.values("morph_c")
    m2 = m.with_morphology({"morph_c": np.array([2.5])}, np.array([1]))
    assert m2.has_morph and not m.has_morph and m2.scalars is m.scalars
    np.testing.assert_array_equal(m2.values("morph_c"), [2.5])
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.morph = {}
    data = Samples({}, {"sim": m2, "real": m2}, {}, np.array([True, False, True]), 1.0)
    assert data.has_morph and not data.has_control
    np.testing.assert_array_equal(data.real_half("flux"), [True, False, True])
    np.testing.assert_array_equal(data.real_half("morph_c"), [False])  # the statmorph subsample


def test_label_drift_known_answer():
    """Refined flux 10% up, centroid moved (0.3, 0.4) px: drift 0.1 and 0.5; REGAUSS drift only
    when both sets' shapes are passed in."""
    n = 5
    sim = _measurement(n)
    ref = _measurement(n, hsm_flux=np.full(n, 2.2), hsm_dx=np.full(n, 2.3),
                       hsm_dy=np.full(n, 2.4))
    d = label_drift(sim, ref)
    assert d["flux_rel"]["median_abs"] == pytest.approx(0.1, rel=1e-12)
    assert d["centroid_pix"]["p95_abs"] == pytest.approx(0.5, rel=1e-12)
    assert d["e1"]["p95_abs"] == 0 and d["e1"]["n"] == n
    assert "eps1_regauss" not in d
    assert "eps1_regauss" not in label_drift(sim, ref, {"eps1": np.zeros(n), "eps2": np.zeros(n)})
    d = label_drift(sim, ref, {"eps1": np.full(n, 0.1), "eps2": np.full(n, np.nan)},
                    {"eps1": np.full(n, 0.15), "eps2": np.zeros(n)})
    assert d["eps1_regauss"]["mean"] == pytest.approx(0.05, rel=1e-12)
    assert d["eps2_regauss"]["n"] == 0 and d["eps2_regauss"]["n_failed"] == n


def _matched(path, images, labels, psf, parent, **attrs):
    """A psf_matched file (refine --matching-only writes these): domain refined, matching_only 1."""
    from refinegan.io import write_stamps

    extra = {"parent": str(parent), "model_sha256": "0" * 64, "matching_only": 1} | attrs
    return write_stamps(path, images, labels, domain="refined", pixel_scale=0.2, source="test",
                        config={}, seed=1, psf=psf, extra_attrs=extra)


def _flat(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}/")
        else:
            yield f"{prefix}{k}", v


def test_psf_matched_set_splits_matching_from_r(tmp_path, files, config, caplog):
    """Known answers of R's own contribution. psf_matched = refined (R did nothing beyond the
    matching): paired_r_only dm = dc = 0 exactly, matching's paired dm is the whole refined - sim
    dm, psf_matched's m and W1 are refined's, R closed no gap. psf_matched = sim (the matching
    did nothing): paired_matching dm = 0 and R's dm is the whole dm. Every other number of
    compare is that of a compare without the psf_matched set."""
    imr = np.asarray(h5py.File(files["refined"])["images"])
    lab, psf = files["labels"], files["psf"]
    pm_ref = _matched(tmp_path / "pm_ref.h5", imr, lab, psf, files["sim"])
    pm_sim = _matched(tmp_path / "pm_sim.h5", files["images"], lab, psf, files["sim"])
    args = ([files["sim"]], [files["refined"]], files["real"])
    base = compare(config, *args, tmp_path / "a.h5", progress=False)
    caplog.set_level("INFO", logger="refinegan.compare.compare")
    res = compare(config, *args, tmp_path / "b.h5", progress=False, psf_matched_paths=[pm_ref])
    cal = res["calibration"]
    assert np.all(cal["paired_r_only"]["dm"] == 0) and np.all(cal["paired_r_only"]["dc"] == 0)
    assert np.all(cal["paired_r_only"]["dm_err"] == 0)
    np.testing.assert_array_equal(cal["paired_matching"]["dm"], cal["paired"]["dm"])
    np.testing.assert_allclose(cal["paired_matching"]["dm"], 0.01, atol=1e-3)
    np.testing.assert_array_equal(cal["psf_matched"]["m"], cal["refined"]["m"])
    pm, d = res["distances"]["psf_matched"], res["distances"]
    rows = [list(d["names"]).index(n) for n in pm["names"]]
    np.testing.assert_array_equal(pm["w1"], d["w1"][rows, 1])
    ok = np.isfinite(pm["gap_closed_r_w1"])
    assert ok.sum() > 10 and np.all(pm["gap_closed_r_w1"][ok] == 0)
    for test in ("gb_all", "gb_noise", "gb_morph", "cnn_pixels"):
        c = res["classifier"][test]
        if c["verdict"][1] == "measured":
            assert 0 <= c["psf_matched_auc"] <= 1 and np.isfinite(c["psf_matched_err"])
            # R is the identity here: on the same splits its AUC change is exactly 0 +- 0
            assert c["refined_auc_paired"] == c["psf_matched_auc"], test
            assert c["r_auc_change"] == 0 and c["r_auc_change_err"] == 0, test
            assert np.all(c["r_auc_change_seeds"] == 0), test
        else:  # below the test's minimum for refined: the same galaxies, not measured either
            assert np.isnan(c["psf_matched_auc"]) and np.isnan(c["gap_closed_r"])
    assert res["classifier"]["gb_all"]["verdict"][1] == "measured"
    assert "psf_matched" in res["stats"] and "psf_matched" in res["spectra"]
    np.testing.assert_array_equal(res["stats"]["psf_matched"]["morph_index"],
                                  res["stats"]["sim"]["morph_index"])
    # nothing else moved outside calibration: every number of the compare without psf_matched,
    # bit for bit; in calibration psf_matched is a paired set (one selection), and with no
    # failure of its own the m of every set is the one without it
    got = dict(_flat(res))
    for key, value in _flat(base):
        if not key.startswith("calibration"):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    for d in ("sim", "refined", "real"):
        np.testing.assert_array_equal(res["calibration"][d]["m"], base["calibration"][d]["m"])
    with h5py.File(tmp_path / "b.h5") as f:
        for path in ("calibration/psf_matched/m", "calibration/paired_r_only/dm",
                     "calibration/paired_r_only/dm_err", "distances/psf_matched/energy_morph",
                     "classifier/gb_all/psf_matched_auc", "classifier/gb_all/r_auc_change",
                     "classifier/cnn_pixels/r_auc_change_err", "stats/psf_matched/hsm_g1"):
            assert path in f, path
        assert "psf_matched" in f.attrs["inputs"]
    msgs = [r.message for r in caplog.records]
    assert any(m.startswith("PSF matching did (sim -> psf_matched)") for m in msgs)
    assert any(m.startswith("R did (psf_matched -> refined") and "dm1 0 +- 0" in m for m in msgs)

    res = compare(config, *args, tmp_path / "c.h5", progress=False, psf_matched_paths=[pm_sim])
    cal = res["calibration"]
    assert np.all(cal["paired_matching"]["dm"] == 0)
    np.testing.assert_array_equal(cal["paired_r_only"]["dm"], cal["paired"]["dm"])
    assert res["distances"]["psf_matched"]["gap_closed_matching_energy"] == 0


def test_psf_matched_must_be_r_input_of_the_same_model(tmp_path, files, config):
    lab, psf, im = files["labels"], files["psf"], files["images"]
    cfg = load_config(None, [*FAST, "compare.morphology_n=0", "compare.cnn_seeds=0"])
    args = ([files["sim"]], [files["refined"]], files["real"], tmp_path / "c.h5")
    plain = _matched(tmp_path / "plain.h5", im, lab, psf, files["sim"], matching_only=0)
    with pytest.raises(ContractError, match="plain.h5: not a psf_matched file .*--matching-only"):
        compare(cfg, *args, progress=False, psf_matched_paths=[plain])
    other = _matched(tmp_path / "other.h5", im, lab, psf, files["sim"], model_sha256="1" * 64)
    with pytest.raises(ContractError, match="other.h5: matched by model sha256 '1111"):
        compare(cfg, *args, progress=False, psf_matched_paths=[other])
    short = _matched(tmp_path / "short.h5", im[:8], {k: v[:8] for k, v in lab.items()}, psf,
                     files["sim"])
    with pytest.raises(ContractError, match="8 refined stamps but 40 sim stamps"):
        compare(cfg, *args, progress=False, psf_matched_paths=[short])


def test_the_psf_matching_residual_goes_from_the_refined_file_to_compare_h5_and_the_summary(
        tmp_path, files):
    """A refined file whose attributes record the matching residual 0.0123 (bound 0.02): compare.h5
    holds both under /psf_match and summary.html shows them near the top; a refined file without
    the record (here: no PSF matching) gives NaN, says why, and the summary says not recorded."""
    from refinegan.compare.summary import write_summary

    cfg = load_config(None, [*FAST, "compare.morphology_n=0", "compare.cnn_seeds=0"])
    with h5py.File(files["refined"]) as f:
        im, lab = f["images"][()], {k: v[()] for k, v in f["labels"].items()}
    ref = write_stamps(tmp_path / "rec.h5", im, lab, domain="refined", pixel_scale=0.2,
                       source="test refined", config={}, seed=1, psf=files["psf"],
                       extra_attrs={"parent": str(files["sim"]), "model_sha256": "0" * 64,
                                    "psf_match_kernel": np.ones((3, 3)) / 9,
                                    "psf_match_residual": 0.0123, "psf_match_residual_max": 0.02})
    for refined, out in ((ref, tmp_path / "a" / "compare.h5"),
                         (files["refined"], tmp_path / "b" / "compare.h5")):
        compare(cfg, [files["sim"]], [refined], files["real"], out, progress=False)
    with h5py.File(tmp_path / "a" / "compare.h5") as f:
        assert f["psf_match/residual"][()] == 0.0123 and f["psf_match/bound"][()] == 0.02
        assert f["psf_match"].attrs["status"] == "recorded"
        assert f["psf_match/residual"].attrs["units"] == "fraction of the target PSF's peak"
    text = write_summary(tmp_path / "a" / "compare.h5", tmp_path / "a.html").read_text()
    line = "<p>PSF matching residual: 0.0123 of the target PSF&#x27;s peak (bound 0.02)</p>"
    assert line in text and text.index(line) < text.index("<h3>")  # near the top
    with h5py.File(tmp_path / "b" / "compare.h5") as f:
        assert np.isnan(f["psf_match/residual"][()]) and np.isnan(f["psf_match/bound"][()])
        assert f["psf_match"].attrs["status"].startswith("not recorded: the refined set was not")
    text = write_summary(tmp_path / "b" / "compare.h5", tmp_path / "b.html").read_text()
    assert ("<p>PSF matching residual: not recorded (the refined set was not PSF-matched "
            "(train.psf_match off))</p>") in text


def test_cnn_sees_bad_pixels_filled_with_noise(rng):
    """The pixel CNN's input: masked pixels (here +500-count hot pixels on sigma-10 noise) become
    noise of the stamp's sky std, the other pixels stay as they were, a set without a mask is
    untouched, and the fill is the same on every call."""
    from types import SimpleNamespace

    from refinegan.compare.classifiers import cnn_pixels

    n, size = 200, 16
    images = rng.normal(0.0, 10.0, (n, size, size)).astype(np.float32)
    mask = np.zeros((n, size, size), np.int32)
    iy, ix = rng.integers(0, size, n), rng.integers(0, size, n)
    images[np.arange(n), iy, ix] += 500.0
    mask[np.arange(n), iy, ix] = 1
    meas = SimpleNamespace(scalars={"noise_std": np.full(n, 10.0)})
    data = SimpleNamespace(sets={"real": SimpleNamespace(images=images, mask=mask),
                                 "sim": SimpleNamespace(images=images, mask=None)},
                           meas={"real": meas, "sim": meas})
    idx = np.arange(n)
    x = cnn_pixels(data, "real", idx)
    filled = x[mask != 0]
    assert np.abs(filled).max() < 60.0 and 7.0 < filled.std() < 13.0  # noise, not +500
    assert np.array_equal(x[mask == 0], images[mask == 0])
    assert np.array_equal(cnn_pixels(data, "real", idx), x)
    assert np.array_equal(cnn_pixels(data, "sim", idx), images)
    assert images[np.arange(n), iy, ix].min() > 400  # the input is not modified
