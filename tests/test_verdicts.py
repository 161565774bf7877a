"""Verdicts on small targets (refinegan.compare.verdicts): each test's minimum, "not measured"
with its reason below it (compare.h5, summary.html, the log), failed classifiers, and galaxy
groups of augmented copies that never straddle a train / test split."""

import re

import h5py
import numpy as np
import pytest
from astropy.io import fits
from compare_helpers import make_pairs, write_set

from refinegan.compare import distances as dist
from refinegan.compare import verdicts as vd
from refinegan.compare.compare import compare
from refinegan.compare.measure import group_label, groups_of, pick_groups, truncate
from refinegan.compare.store import read_tree, write_tree
from refinegan.compare.summary import write_summary
from refinegan.config import load_config
from refinegan.errors import InputDataError
from refinegan.io import StampSet, read_stamps
from refinegan.target.cutouts import dihedral_copies
from refinegan.target.prepare_real import prepare_real

FAST = ["compare.morphology_n=0", "compare.cnn_seeds=1", "compare.cnn_epochs=1",
        "compare.cnn_channels=2", "compare.n_bootstrap=10", "compare.gb_max_iter=5",
        "compare.gb_seeds=2", "compare.energy_n=50", "compare.plot_stamps=3"]
G = (0.02, 0.02)


# ---------------------------------------------------------------- the failed-classifier rule

@pytest.mark.parametrize("auc, err, failed", [
    (0.1, 0.02, True), (0.1, 0.3, True),  # far below chance, whatever the error
    (0.0, 0.0, True),  # the 16-stamp CNN of issue 16
    (0.44, 0.01, True),  # below 0.45 and 6 errors below 0.5
    (0.44, 0.03, False),  # only 2 errors below 0.5
    (0.48, 0.0, False), (0.48, 0.02, False),  # chance within the margin
    (0.5, 0.1, False), (0.95, 0.01, False), (np.nan, np.nan, False),
])
def test_failed_classifier_rule(auc, err, failed):
    assert vd.failed_classifier(auc, err) is failed


def _clf(auc, err, n_groups):
    k = len(auc)
    return {"auc": np.array(auc, float), "err": np.array(err, float),
            "seed_aucs": np.tile(np.array(auc, float)[:, None], (1, 2)),
            "n": np.full((k, 2), 400), "n_groups": np.array(n_groups), "gap_closed": 0.0}


def test_classifier_verdicts_known_answer(tmp_path):
    """AUC 0.1 (enough galaxies) is a failed classifier, 0.48 a distance; a column below the
    minimum is NaN with the reason; no gap closed from a failed or missing column."""
    result = {"classifier": {
        "gb_all": _clf([0.1, 0.48, 0.5], [0.02, 0.02, 0.03], [[100, 100]] * 3),
        "gb_noise": _clf([0.9, 0.6, 0.5], [0.01, 0.01, 0.02], [[100, 100], [100, 100], [9, 9]]),
        "cnn_pixels": _clf([0.9, 0.6, 0.5], [0.01, 0.01, 0.02], [[100, 49], [100, 49], [24, 25]]),
    }}
    msgs = vd.apply_minimums(result, None)
    gb, noise, cnn = (result["classifier"][k] for k in ("gb_all", "gb_noise", "cnn_pixels"))
    assert gb["verdict"][0].startswith("failed") and list(gb["verdict"][1:]) == ["measured"] * 2
    assert gb["auc"][0] == 0.1 and np.isnan(gb["gap_closed"])  # kept, but no distance from it
    assert list(noise["verdict"][:2]) == ["measured"] * 2
    assert noise["verdict"][2] == ("not measured: gb_noise needs at least 10 distinct galaxies "
                                   "per set; real half A has 9, real half B has 9")
    assert np.isnan(noise["auc"][2]) and np.isnan(noise["seed_aucs"][2]).all()
    np.testing.assert_allclose(noise["gap_closed"], 1 - 0.1 / 0.4)
    assert all(v.startswith("not measured") and "at least 50" in v for v in cnn["verdict"])
    assert np.isnan(cnn["auc"]).all() and np.isnan(cnn["gap_closed"])
    assert len(msgs) == 1 + 1 + 3
    # the summary: a failed classifier and "not measured", never a "yes" from them
    path = tmp_path / "compare.h5"
    dists = {"names": np.array(["noise_std"]), "w1": np.array([[2.0, 0.5, 0.1]]),
             "gap_closed_w1": np.array([0.75])}
    with h5py.File(path, "w") as f:
        write_tree(f, {"distances": dists, **result})
    text = write_summary(path, tmp_path / "s.html").read_text()
    assert "failed classifier (AUC 0.1 ± 0.02)" in text
    assert re.search(r"<td>gb_all AUC refined vs real &lt; sim vs real</td><td>[^<]*</td>"
                     r"<td>lower</td><td>not measured: classifier failed: held-out AUC 0.100", text)
    assert re.search(r"<td>cnn_pixels AUC refined vs real &lt; sim vs real</td><td>n/a vs n/a</td>"
                     r"<td>lower</td><td>not measured: cnn_pixels needs at least 50", text)
    assert "<td>yes</td>" not in text


def test_shortfall_and_calibration_minimum():
    assert vd.shortfall({"sim": 40, "real": 40}, 10, "gb_all") is None
    assert vd.shortfall({"sim": 40, "real": 3}, 10, "t") == ("t needs at least 10 distinct "
                                                            "galaxies per set; real has 3")
    cal = {"sim": {"m": np.array([0.01, 0.0]), "m_err": np.array([0.001] * 2),
                   "c": np.zeros(2), "c_err": np.zeros(2), "n_groups": 40},
           "real": {"m": np.array([0.02, 0.0]), "m_err": np.array([0.001] * 2),
                    "c": np.zeros(2), "c_err": np.zeros(2), "n_groups": 3},
           "refined": {"m": np.array([0.01, 0.0]), "m_err": np.array([0.001] * 2),
                       "c": np.zeros(2), "c_err": np.zeros(2), "n_groups": 40},
           "paired": {"dm": np.zeros(2), "dc": np.zeros(2), "n_groups": 40},
           "transfer": {"abs_dm_refined_real": np.array([0.01, 0.0]),
                        "abs_dm_refined_real_err": np.zeros(2), "meets_bar": np.array([False, True]),
                        "closer_by_refined": np.array([0.01, 0.0]),
                        "closer_by_refined_err": np.full(2, 0.001), "closer_n_groups": 40,
                        "bar": 0.002}}
    vd.apply_minimums({"calibration": cal}, None)
    assert cal["sim"]["verdict"] == "measured" and cal["sim"]["m"][0] == 0.01
    assert cal["real"]["verdict"].startswith("not measured") and np.isnan(cal["real"]["m"]).all()
    assert "it reads real" in cal["transfer"]["verdict"]
    assert np.isnan(cal["transfer"]["abs_dm_refined_real"]).all()
    assert np.isnan(cal["transfer"]["closer_by_refined"]).all()
    assert np.isnan(cal["transfer"]["closer_by_refined_err"]).all()
    assert not cal["transfer"]["meets_bar"].any()


# ---------------------------------------------------------------- small targets end to end

@pytest.fixture
def sim_files(tmp_path):
    """10 sim galaxies (40 stamps, pairs of 4) and their refined copies (the same stamps)."""
    im, lab, psf = make_pairs(10, g=G, noise=2.0, profile="exp", method="auto", seed=1, e_int=0.05)
    sim = write_set(tmp_path / "sim.h5", im, lab, psf, "sim")
    ref = write_set(tmp_path / "refined.h5", im, lab, psf, "refined", parent=sim)
    real_im, _, _ = make_pairs(4, g=G, noise=4.0, profile="gauss", method="auto", seed=2)
    return sim, ref, psf, real_im


def _run_small(tmp_path, sim_files, n_real, caplog):
    sim, ref, psf, real_im = sim_files
    real = write_set(tmp_path / "real.h5", real_im[:n_real], {}, psf, "real")
    caplog.set_level("WARNING", logger="refinegan.compare.verdicts")
    out = tmp_path / "compare.h5"
    compare(load_config(None, FAST), [sim], [ref], real, out, plots_dir=tmp_path / "p",
            progress=False)
    with h5py.File(out) as f:
        tree = read_tree(f)
    text = write_summary(out, tmp_path / "s.html").read_text()
    return tree, text


def _headline_met(text):
    head = text.split("<h3>Headline", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td></tr>",
                      head)
    return [met for goal, met in rows if goal != "reported"]  # a reported number claims nothing


def test_two_real_stamps_nothing_is_measured_and_nothing_is_met(tmp_path, sim_files, caplog):
    tree, text = _run_small(tmp_path, sim_files, 2, caplog)
    # the target at the top: its source attribute, 2 stamps of 2 galaxies (no group label)
    assert "<b>Target:</b> test real<br><b>Real stamps:</b> 2 of <b>2</b> distinct galaxies" in text
    assert text.index("Target:") < text.index("<h3>Headline")
    assert tree["n_real_groups"] == 2 and tree["real_group_label"] == "none"
    # every classifier column and every distance column: NaN with the reason
    for test, res in tree["classifier"].items():
        assert np.isnan(res["auc"]).all(), test
        assert all(str(v).startswith("not measured:") and "real" in str(v)
                   for v in res["verdict"]), test
        assert np.isnan(res["gap_closed"])
    d = tree["distances"]
    assert all(str(v).startswith("not measured: distances needs at least 5") for v in d["verdict"])
    assert np.isnan(d["w1"]).all() and np.isnan(d["energy_noise"]).all()
    assert np.isnan(d["gap_closed_energy_noise"])
    # the summary: each headline row says why it was not measured; never "yes"
    met = _headline_met(text)
    assert len(met) >= 3 and all(m.startswith("not measured: ") for m in met), met
    assert "<td>yes</td>" not in text and "met: yes" not in text
    clf_table = text.split("<h3>Classifier", 1)[1].split("</table>", 1)[0]
    assert "±" not in clf_table and clf_table.count("not measured") == 3 * 4  # no AUC 1 ± 2e-17
    # ... and the log warns
    warned = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert any("classifier gb_all sim_real: not measured" in m for m in warned)
    assert any("distances real_real: not measured" in m for m in warned)


def test_sixteen_real_stamps_the_cnn_is_not_measured(tmp_path, sim_files, caplog):
    tree, text = _run_small(tmp_path, sim_files, 16, caplog)
    cnn = tree["classifier"]["cnn_pixels"]
    assert np.isnan(cnn["auc"]).all() and all(
        str(v).startswith("not measured: cnn_pixels needs at least 50") for v in cnn["verdict"])
    assert "<tr><td>cnn_pixels</td><td>not measured</td><td>not measured</td>" in text
    # gradient boosting on 10 sim and 16 real galaxies is measured (its floor, 8 a half, is not)
    gb = tree["classifier"]["gb_all"]
    assert list(gb["verdict"][:2]) == ["measured"] * 2 and np.isfinite(gb["auc"][:2]).all()
    assert str(gb["verdict"][2]).startswith("not measured") and np.isnan(gb["auc"][2])
    head = text.split("<h3>Headline", 1)[1].split("</table>", 1)[0]
    met = dict(re.findall(r"<tr><td>([^<]*)</td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td></tr>",
                          head))
    assert met["cnn_pixels AUC refined vs real &lt; sim vs real"].startswith("not measured")
    assert any("cnn_pixels sim_real: not measured" in r.message for r in caplog.records)


# ---------------------------------------------------------------- galaxy groups

def test_group_label_precedence_and_truncate():
    im = np.zeros((6, 4, 4), np.float32)
    assert group_label(StampSet(im, {})) is None
    np.testing.assert_array_equal(groups_of(StampSet(im, {})), np.arange(6))
    cosmos = StampSet(im, {"cat_index": np.array([5, 5, 9, 9, 9, 2])})
    np.testing.assert_array_equal(groups_of(cosmos), [5, 5, 9, 9, 9, 2])
    both = StampSet(im, {"group_id": np.array([0, 0, 0, 1, 1, 1]), "pair_id": np.arange(6)})
    assert group_label(both) == "group_id"
    # the cosmos target: 2 catalog galaxies in 3 pair groups; the galaxy is the group
    pairs = StampSet(im, {"cat_index": np.array([5, 5, 9, 9, 5, 5]),
                          "pair_id": np.array([0, 0, 1, 1, 2, 2])})
    assert group_label(pairs) == "cat_index"
    assert len(truncate(both, 4)) == 3  # cut back to whole groups
    assert len(truncate(cosmos, 4)) == 2


def _cutouts(rng, n, size=32):
    """n asymmetric galaxies (an off-centre knot on a Gaussian), so every copy differs."""
    y, x = np.mgrid[:size, :size] - size // 2
    out = []
    for k in range(n):
        gal = 400 * np.exp(-(x**2 + y**2) / (2 * 2.0**2))
        gal += 150 * np.exp(-((x - 4) ** 2 + (y - 1 - k) ** 2) / 2.0)
        out.append(gal + rng.normal(0, 3.0, (size, size)))
    return np.array(out, np.float32)


def _fits_cfg(path, *overrides):
    return load_config(None, ["stamp.size=32", "real.source=fits", f"real.fits.path={path}",
                              "real.fits.recenter=false", *overrides])


def test_fits_augment_copies_carry_their_galaxy(rng, tmp_path):
    cube = _cutouts(rng, 4)
    h = fits.Header()
    h["PIXSCALE"] = 0.2
    fits.writeto(tmp_path / "c.fits", cube, h)
    prepare_real(_fits_cfg(tmp_path / "c.fits"), tmp_path / "plain.h5")
    plain = read_stamps(tmp_path / "plain.h5")
    assert "group_id" not in plain.labels and len(plain) == 4  # default: unchanged
    prepare_real(_fits_cfg(tmp_path / "c.fits", "real.fits.augment=8"), tmp_path / "aug.h5")
    s = read_stamps(tmp_path / "aug.h5")
    assert len(s) == 32 and s.attrs["augment"] == 8 and s.attrs["n_cutouts"] == 4
    np.testing.assert_array_equal(s.labels["group_id"], np.repeat(np.arange(4), 8))
    np.testing.assert_array_equal(s.labels["augment_index"], np.tile(np.arange(8), 4))
    for g in range(4):
        base = plain.images[g]
        for k in range(8):
            want = np.rot90(np.fliplr(base) if k >= 4 else base, k % 4)
            np.testing.assert_array_equal(s.images[8 * g + k], want)
    assert len({s.images[k].tobytes() for k in range(8)}) == 8
    # real.n counts stamps: 6 = one cutout's 4 copies and 2 of the next
    prepare_real(_fits_cfg(tmp_path / "c.fits", "real.fits.augment=4", "real.n=6"),
                 tmp_path / "six.h5")
    np.testing.assert_array_equal(read_stamps(tmp_path / "six.h5").labels["group_id"],
                                  [0, 0, 0, 0, 1, 1])
    with pytest.raises(Exception, match="augment"):
        load_config(None, ["real.fits.augment=3"])


def test_augmented_copies_never_straddle_a_split(rng, tmp_path):
    """8 copies of 4 galaxies (and a second such set): no group in both train and test of any
    split of the classifier tests, of the real-vs-real halves, or of a CNN subsample."""
    cube = _cutouts(rng, 4)
    h = fits.Header()
    h["PIXSCALE"] = 0.2
    fits.writeto(tmp_path / "c.fits", cube, h)
    prepare_real(_fits_cfg(tmp_path / "c.fits", "real.fits.augment=8"), tmp_path / "aug.h5")
    s = read_stamps(tmp_path / "aug.h5")
    groups = groups_of(s)
    assert vd.n_distinct(groups) == 4
    splits = []

    def record(x_train, y_train, x_test, seed):  # features = (set, group): read back the split
        splits.append((x_train[:, 1], x_test[:, 1]))
        return np.zeros(len(x_test))

    xa = np.stack([np.zeros(32), groups], axis=1)
    xb = np.stack([np.ones(32), groups + 100], axis=1)
    r = np.random.default_rng(3)
    dist.classifier_auc(xa, xb, groups, groups + 100, fit_predict=record, seeds=20, n_boot=2, rng=r)
    half_b = dist.group_split(groups, 0.5, r)
    assert not set(groups[half_b]) & set(groups[~half_b]) and half_b.sum() == 16
    ha, hb = groups[~half_b], groups[half_b]
    dist.classifier_auc(xa[~half_b], xa[half_b], ha, hb, fit_predict=record, seeds=20, n_boot=2,
                        rng=r)
    assert len(splits) == 40
    for train, test in splits:
        assert len(train) and len(test) and not set(train) & set(test)
        # each galaxy's 8 copies sit wholly on one side
        for side in (train, test):
            assert all((side == g).sum() == 8 for g in np.unique(side))
    for _ in range(10):
        idx = pick_groups(groups, 12, r)
        picked = groups[idx]
        assert all((picked == g).sum() == 8 for g in np.unique(picked))


def test_dihedral_copies_known_answer():
    x = np.arange(9.0).reshape(3, 3)
    c = dihedral_copies(x, 8)
    np.testing.assert_array_equal(c[1], [[2, 5, 8], [1, 4, 7], [0, 3, 6]])
    np.testing.assert_array_equal(c[4], [[2, 1, 0], [5, 4, 3], [8, 7, 6]])
    assert len({a.tobytes() for a in c}) == 8 and all(a[1, 1] == 4 for a in c)
    with pytest.raises(ValueError, match="1, 4 or 8"):
        dihedral_copies(x, 3)


def test_hdf5_group_dataset_and_augment(rng, tmp_path):
    images = _cutouts(rng, 6)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["images"] = images
        f["images"].attrs["pixel_scale"] = 0.2
        f["gal"] = np.array([7, 7, 3, 3, 3, 9])
        f["bad"] = np.array([1.0, 2, 3, 4, 5, 6])
        f["short"] = np.array([1, 2, 3])
    base = ["stamp.size=32", "real.source=hdf5", f"real.hdf5.path={tmp_path / 'in.h5'}",
            "real.hdf5.recenter=false"]
    prepare_real(load_config(None, [*base, "real.hdf5.group_dataset=gal"]), tmp_path / "g.h5")
    s = read_stamps(tmp_path / "g.h5")
    np.testing.assert_array_equal(s.labels["group_id"], [7, 7, 3, 3, 3, 9])
    assert vd.n_distinct(groups_of(s)) == 3
    prepare_real(load_config(None, [*base, "real.hdf5.group_dataset=gal", "real.hdf5.augment=4"]),
                 tmp_path / "ga.h5")
    np.testing.assert_array_equal(read_stamps(tmp_path / "ga.h5").labels["group_id"],
                                  np.repeat([7, 7, 3, 3, 3, 9], 4))
    for name, what in (("bad", "float64 of shape"), ("short", r"shape \(3,\)"),
                       ("nothere", "does not exist")):
        with pytest.raises(InputDataError, match=f"group_dataset.*{what}|{what}.*group_dataset"):
            prepare_real(load_config(None, [*base, f"real.hdf5.group_dataset={name}"]),
                         tmp_path / "x.h5")
        assert not (tmp_path / "x.h5").exists()
