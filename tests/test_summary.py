import h5py
import numpy as np
import pytest

from refinegan.compare.store import write_tree
from refinegan.compare.summary import bar_verdict, headline_rows, write_summary
from refinegan.errors import ContractError


def test_summary_reports_the_numbers_it_reads(tmp_path):
    path = tmp_path / "compare.h5"
    with h5py.File(path, "w") as f:
        write_tree(f, {
            "distances": {"names": np.array(["noise_std"]), "w1": np.array([[2.0, 0.5, 0.1]]),
                          "gap_closed_w1": np.array([0.75]),
                          **{k: np.array([1.0, 1.0, 1.0]) for k in ("energy", "power_spectrum", "acf")},
                          **{f"gap_closed_{k}": 0.0 for k in ("energy", "power_spectrum", "acf")},
                          "energy_noise": np.array([1.0, 0.1, 0.01]), "gap_closed_energy_noise": 0.9},
            "classifier": {"gb_all": {"auc": np.array([0.9, 0.6, 0.5]),
                                      "err": np.array([0.01, 0.02, 0.03]), "gap_closed": 0.75,
                                      "control_auc": 0.55, "control_err": 0.01}},
            "calibration": {"transfer": {
                "abs_dm_sim_real": np.array([0.05, np.nan]), "abs_dm_sim_real_err": np.array([0.01, np.nan]),
                "abs_dm_refined_real": np.array([0.001, np.nan]),
                "abs_dm_refined_real_err": np.array([0.004, np.nan]), "meets_bar": np.array([True, False]),
                "abs_dm_paired": np.array([0.01, np.nan]), "paired_meets_bar": np.array([False, False]),
                "bar": 0.002}},
        })
    out = write_summary(path, tmp_path / "s.html")
    text = out.read_text()
    assert "<td>noise_std</td><td>2</td><td>0.5</td><td>0.1</td><td>0.75</td>" in text
    assert "0.6 ± 0.02" in text
    # the headline: noise gap 0.9 >= 0.8 met; AUC 0.6 below sim's 0.9 but not the control's 0.55
    assert "<td>noise statistics gap closed (energy distance)</td><td>0.9</td><td>&gt;= 0.8</td><td>yes</td>" in text
    assert "<td>gb_all AUC refined vs real &lt; sim vs real</td><td>0.6 ± 0.02 vs 0.9 ± 0.01</td><td>lower</td><td>yes</td>" in text
    assert "noise-only control vs real</td><td>0.6 ± 0.02 vs 0.55 ± 0.01</td><td>lower</td><td>no</td>" in text
    # 0.001 +- 0.004 against a bar of 0.002: the error is above the bar, so never "yes"
    assert ("<td>|m1 refined - m1 real| within the bar (unpaired)</td><td>0.001 ± 0.004</td>"
            "<td>&lt;= 0.002</td><td>not resolved (error 0.004 &gt; bar 0.002)</td>") in text
    assert "m2 refined" not in text  # NaN component: no row
    # |m_sim - m_real| - |m_ref - m_real| = 0.049 +- 0.011 in quadrature: closer, resolved
    assert ("<td>0.001 ± 0.004 vs 0.05 ± 0.01</td><td>smaller</td><td>yes</td>") in text


def test_summary_reads_the_paired_closer_by():
    """With compare's paired closer_by the verdict reads it, not the quadrature: 0.02 vs 0.03
    (+- 0.01 each, quadrature 0.014: not resolved) but closer by 0.01 +- 0.002 paired: yes."""
    from refinegan.compare.summary import _calibration_headline

    t = {"abs_dm_sim_real": np.array([0.03, 0.03]), "abs_dm_sim_real_err": np.array([0.01, 0.01]),
         "abs_dm_refined_real": np.array([0.02, 0.029]),
         "abs_dm_refined_real_err": np.array([0.01, 0.01]), "meets_bar": np.array([False, False]),
         "closer_by_refined": np.array([0.01, 0.001]),
         "closer_by_refined_err": np.array([0.002, 0.002]), "bar": 0.002}
    rows = {r[0]: r for r in _calibration_headline({"transfer": t})}
    r1 = rows["|m1 refined - m1 real| < |m1 sim - m1 real|"]
    assert r1[1].endswith("closer by 0.01 ± 0.002 (paired)") and r1[3] == "yes", r1
    # not resolved, with stamps enough to see the sims' gap (0.03) closed: (2 x 0.002 / 0.03)^2 < 1
    assert rows["|m2 refined - m2 real| < |m2 sim - m2 real|"][3] == (
        "not resolved: closer by less than 2 errors (0.004) of the sims' gap of 0.03")
    del t["closer_by_refined"], t["closer_by_refined_err"]
    rows = {r[0]: r for r in _calibration_headline({"transfer": t})}
    # quadrature 0.0141: (2 x 0.0141 / 0.03)^2 = 0.889: enough stamps, closed less than 2 errors
    assert rows["|m1 refined - m1 real| < |m1 sim - m1 real|"][3] == (
        "not resolved: closer by less than 2 errors (0.028) of the sims' gap of 0.03")


def test_closer_not_resolved_says_how_many_stamps():
    """atmosphere_only at 4,096 stamps (session 16): the sims 0.020 off the target, closer by
    +0.017 +- 0.017: (2 x 0.017 / 0.020)^2 = 2.89x the stamps at least (the 65,536-stamp run
    resolved it, +0.012 +- 0.006). No gap, no error: plain "not resolved"."""
    from refinegan.compare.summary import _closer_not_resolved

    assert _closer_not_resolved(0.020, 0.017) == (
        "not resolved: at least 2.89x the stamps (sim.n, real.n) to resolve closing the sims' gap of 0.02")
    assert _closer_not_resolved(-0.002, 0.01).startswith("not resolved: at least 100x")
    # noise_only at 65,536 stamps (session 17): the sims 0.0016 +- 0.0029 off the target already
    assert _closer_not_resolved(0.0016, 0.0026, 0.0029) == (
        "not resolved: the sims read the target's m within 2 errors (0.0016 +- 0.0029); at least "
        "10.6x the stamps (sim.n, real.n) to resolve closing the sims' gap of 0.0016")
    assert _closer_not_resolved(0.05, 0.01).startswith("not resolved: closer by less than 2 errors (0.02)")
    assert _closer_not_resolved(0.0, 0.01) == "not resolved"
    assert _closer_not_resolved(float("nan"), 0.01) == "not resolved"


def test_psf_match_record_from_the_refined_attributes():
    """The record and its line: recorded, a model that predates it, no PSF matching."""
    from refinegan.compare.r_only import psf_match_line, psf_match_record

    rec = psf_match_record({"psf_match_kernel": np.ones((3, 3)), "psf_match_residual": 0.0123,
                            "psf_match_residual_max": 0.02})
    assert rec == {"residual": 0.0123, "bound": 0.02, "status": "recorded"}
    assert psf_match_line({"psf_match": rec}) == ("PSF matching residual: 0.0123 of the target "
                                                  "PSF's peak (bound 0.02)")
    old = psf_match_record({"psf_match_kernel": np.ones((3, 3))})
    assert np.isnan(old["residual"]) and np.isnan(old["bound"])
    assert psf_match_line({"psf_match": old}) == (
        "PSF matching residual: not recorded (the refined files' model predates the record "
        "(train it again to record it))")
    assert "train.psf_match off" in psf_match_line({"psf_match": psf_match_record({})})


def test_summary_refuses_other_files(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = 1
    with pytest.raises(ContractError, match="no /distances group"):
        write_summary(tmp_path / "x.h5", tmp_path / "s.html")
    assert not (tmp_path / "s.html").exists()


def test_summary_shows_what_matching_did_and_what_r_did(tmp_path):
    """With a psf_matched set: one row per distance, AUC and m with sim | psf_matched | refined
    and the gap each step closed, read back from compare.h5; the two sentences in the title."""
    from refinegan.compare.r_only import matching_and_r_lines

    cal = {n: {"m": np.array([m, m]), "m_err": np.array([0.001, 0.001]), "c": np.zeros(2),
               "c_err": np.zeros(2), "n_groups": 10}
           for n, m in (("sim", -0.01), ("psf_matched", -0.05), ("refined", -0.04))}
    cal["paired_matching"] = {"dm": np.array([-0.04, -0.04]), "dm_err": np.array([0.002, 0.002])}
    cal["paired_r_only"] = {"dm": np.array([0.01, 0.01]), "dm_err": np.array([0.003, 0.003])}
    tree = {
        "distances": {"names": np.array(["noise_std"]), "w1": np.array([[2.0, 0.5, 0.1]]),
                      "gap_closed_w1": np.array([0.75]), "energy": np.array([2.0, 1.0, 0.1]),
                      "gap_closed_energy": 0.5,
                      "psf_matched": {"energy": 1.5, "gap_closed_matching_energy": 0.25,
                                      "gap_closed_r_energy": 1 / 3}},
        "classifier": {"gb_all": {"auc": np.array([0.9, 0.6, 0.5]), "err": np.array([0.01, 0.02, 0.03]),
                                  "gap_closed": 0.75, "psf_matched_auc": 0.7, "psf_matched_err": 0.02,
                                  "gap_closed_matching": 0.5, "gap_closed_r": 0.5},
                       "cnn_pixels": {"auc": np.array([0.8, 0.55, 0.5]), "err": np.array([0.01, 0.02, 0.03]),
                                      "gap_closed": 0.8, "psf_matched_auc": 0.56, "psf_matched_err": 0.02,
                                      "gap_closed_matching": 0.8, "gap_closed_r": 1 / 6,
                                      "r_auc_change": -0.012, "r_auc_change_err": 0.003,
                                      "refined_auc_paired": 0.548, "refined_err_paired": 0.02}},
        "calibration": cal,
    }
    path = tmp_path / "compare.h5"
    with h5py.File(path, "w") as f:
        write_tree(f, tree)
    text = write_summary(path, tmp_path / "s.html").read_text()
    assert "<td>energy</td><td>2</td><td>1.5</td><td>1</td><td>0.25</td><td>0.33</td>" in text
    assert ("<td>gb_all AUC</td><td>0.9 ± 0.01</td><td>0.7 ± 0.02</td><td>0.6 ± 0.02</td>"
            "<td>0.5</td><td>0.5</td>") in text
    assert ("<td>m1 (paired dm of each step)</td><td>-0.01 ± 0.001</td><td>-0.05 ± 0.001</td>"
            "<td>-0.04 ± 0.001</td><td>-0.04 ± 0.002</td><td>0.01 ± 0.003</td>") in text
    assert ("<td>cnn_pixels AUC, paired (on psf_matched splits)</td><td></td><td>0.56 ± 0.02</td>"
            "<td>0.548 ± 0.02</td><td></td><td>AUC change -0.012 ± 0.003</td>") in text
    assert "gb_all AUC, paired" not in text  # no paired numbers stored: no row
    lines = matching_and_r_lines(tree)
    assert lines[0] == ("PSF matching did (sim -> psf_matched): gap closed (energy 0.25); gb_all AUC "
                        "0.9 -> 0.7; cnn_pixels AUC 0.8 -> 0.56; dm1 -0.04 +- 0.002, dm2 -0.04 +- 0.002")
    assert lines[1] == ("R did (psf_matched -> refined, same galaxies): gap closed (energy 0.33); "
                        "gb_all AUC 0.7 -> 0.6; cnn_pixels AUC 0.56 -> 0.55 (paired, same splits: "
                        "-0.012 +- 0.003); dm1 0.01 +- 0.003, dm2 0.01 +- 0.003")
    assert "PSF matching did (sim -&gt; psf_matched)" in text
    del tree["distances"]["psf_matched"]
    assert matching_and_r_lines(tree) == []


def test_bar_verdict_never_claims_what_the_error_cannot_tell():
    """Known answers: within the bar only when |x| + 2 err < bar; outside when |x| - 2 err > bar;
    an error above the bar is "not resolved" whatever the value (0 included)."""
    assert bar_verdict(0.0005, 0.0002, 0.002) == "yes"
    assert bar_verdict(-0.0005, 0.0002, 0.002) == "yes"
    assert bar_verdict(0.01, 0.001, 0.002) == "no"
    assert bar_verdict(0.0015, 0.0004, 0.002).startswith("not resolved (|dm|")
    assert bar_verdict(0.0, 0.012, 0.002) == "not resolved (error 0.012 > bar 0.002)"
    assert bar_verdict(np.nan, 0.001, 0.002) == "not measured"


def test_headline_leads_with_the_paired_transfer_and_reports_r_own_dm():
    """The twin's paired transfer comes first, judged by its own (paired) error; the paired
    refined - sim dm is reported with its error."""
    tree = {"distances": {}, "calibration": {
        "transfer_paired": {"dm": np.array([0.0003, -0.004]), "dm_err": np.array([0.0004, 0.003]),
                            "bar": 0.002},
        "paired": {"dm": np.array([0.0008, np.nan]), "dm_err": np.array([0.0002, np.nan])}}}
    rows = headline_rows(tree)
    assert rows[0][0].startswith("|m1 refined - m1 twin| (paired")
    assert rows[0][1:] == ["3.00e-04 ± 0.0004", "<= 0.002", "yes"]
    assert rows[1][3] == "not resolved (error 0.003 > bar 0.002)"
    assert rows[2][0].startswith("m1 refined - m1 sim (paired") and rows[2][1] == "8.00e-04 ± 0.0002"
    assert len(rows) == 3  # no row for the NaN component
