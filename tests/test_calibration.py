"""Shear calibration known answers (refinegan.compare.calibration) on GalSim +/-g, rot90 pairs."""

import numpy as np
import pytest
from compare_helpers import make_pairs

from refinegan.compare.calibration import (
    Groups,
    calibrate,
    calibrate_sets,
    closer_than_sims,
    fit_mc,
    group_means,
    paired_difference,
    regauss_shapes,
    transfer,
)

G = (0.02, 0.01)  # both components non-zero so m1 and m2 are both measured


def _groups(images, labels, psf, noise=0.0):
    sh = regauss_shapes(images, psf, noise**2)
    return group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, labels), sh


def test_regauss_exact_for_gaussians():
    """Known answer: for an elliptical Gaussian through a Gaussian PSF (no pixel) adaptive moments
    are exact and REGAUSS's PSF correction is exact (Hirata & Seljak 2003), so on noiseless +/-g,
    rot90 pairs with 4-theta-balanced angles m = c = 0 up to HSM's 1e-6 convergence: |m| < 1e-4."""
    images, labels, psf = make_pairs(16, g=G)
    gr, sh = _groups(images, labels, psf)
    assert (sh["status"] == 0).all()
    m, c = fit_mc(gr)
    assert np.all(np.abs(m) < 1e-4), m
    assert np.all(np.abs(c) < 1e-6), c


def test_regauss_small_bias_exponential_with_pixel():
    """Exponential discs through a Gaussian PSF, pixel-convolved: REGAUSS is no longer exact;
    its multiplicative bias for such well-resolved profiles is at the 1e-2 level or below
    (Hirata & Seljak 2003; Mandelbaum et al. 2012). Measured here m ~ 3.6e-3, c ~ 1e-9."""
    images, labels, psf = make_pairs(16, g=G, profile="exp", method="auto")
    gr, _ = _groups(images, labels, psf)
    m, c = fit_mc(gr)
    assert np.all(np.abs(m) < 1e-2) and np.all(np.abs(m) > 1e-4), m  # not exact any more
    assert np.all(np.abs(c) < 1e-5)


def test_injected_bias_recovered_and_transfer(rng):
    """Draw with (1 + 0.01) g, label g: m shifts by 0.01 (times 1 + m_0, m_0 ~ 0 here) on the same
    galaxies and noise; calibration transfer puts the injected set 0.01 from the unbiased one."""
    # |e_int| = 0.05 keeps the per-galaxy response scatter (~|e|^2) small, so the bootstrap
    # errors of m (over groups) are ~1e-3 and the 0.01 shift is resolved at > 5 sigma.
    noise, e = 1.0, 0.05
    base, labels, psf = make_pairs(32, g=G, noise=noise, seed=3, e_int=e)
    inj, _, _ = make_pairs(32, g=G, noise=noise, seed=3, bias=0.01, e_int=e)
    other, labels_o, _ = make_pairs(32, g=G, noise=noise, seed=4, e_int=e)  # "real": new noise
    gb, _ = _groups(base, labels, psf, noise)
    gi, _ = _groups(inj, labels, psf, noise)
    go, _ = _groups(other, labels_o, psf, noise)
    cal_b, cal_i, cal_o = (calibrate(g, 100, rng) for g in (gb, gi, go))
    pd = paired_difference(gb, gi, 100, rng)
    assert np.all(pd["dm_err"] < 2e-3)
    assert np.all(np.abs(pd["dm"] - 0.01) < 3 * pd["dm_err"] + 2e-4), (pd["dm"], pd["dm_err"])
    assert np.all(np.abs(pd["dc"]) < 3 * pd["dc_err"] + 1e-6)
    # commutation: every galaxy's +/-g response moved by 1 %, so the spread is small too
    np.testing.assert_allclose(pd["response_shift_mean"], 0.01, atol=5e-4)
    assert np.all(pd["response_shift_p95_abs"] < 0.012)
    t = transfer(cal_b, cal_i, cal_o, pd)
    assert np.all(t["abs_dm_refined_real_err"] < 2.5e-3)
    assert np.all(np.abs(t["abs_dm_refined_real"] - 0.01) < 3 * t["abs_dm_refined_real_err"])
    assert np.all(t["abs_dm_sim_real"] < 3 * t["abs_dm_sim_real_err"] + 1e-3)
    assert not t["meets_bar"].any() and not t["paired_meets_bar"].any()


def test_identical_sets_have_zero_paired_difference(rng):
    images, labels, psf = make_pairs(4, g=G, noise=1.0)
    gr, _ = _groups(images, labels, psf, 1.0)
    pd = paired_difference(gr, gr, 20, rng)
    assert np.all(pd["dm"] == 0) and np.all(pd["dm_err"] == 0)
    t = transfer(calibrate(gr, 20, rng), calibrate(gr, 20, rng), calibrate(gr, 20, rng), pd)
    assert t["meets_bar"].all()


def test_failed_stamp_drops_its_group_and_is_counted(rng):
    images, labels, psf = make_pairs(4, g=G)
    images[5] = 0.0  # a blank stamp: REGAUSS fails
    gr, sh = _groups(images, labels, psf)
    assert sh["status"][5] != 0 and np.isnan(sh["eps1"][5])
    assert gr.n_stamps_failed == 1 and gr.n_groups_dropped == 1 and len(gr) == 3
    cal = calibrate(gr, 10, rng)
    assert cal["n_groups"] == 3 and np.isfinite(cal["m"]).all()


def test_without_sign_pairs_m_is_nan():
    images, labels, psf = make_pairs(4, g=G)
    keep = labels["shear_sign"] > 0
    labels = {k: v[keep] for k, v in labels.items() if k != "shear_sign"}
    sh = regauss_shapes(images[keep], psf)
    gr = group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, labels)
    m, c = fit_mc(gr)
    assert not gr.has_sign_pairs and np.isnan(m).all()


@pytest.mark.parametrize("zero_component", [0, 1])
def test_zero_shear_component_gives_nan_m(zero_component):
    g = [0.02, 0.02]
    g[zero_component] = 0.0
    images, labels, psf = make_pairs(4, g=tuple(g))
    gr, _ = _groups(images, labels, psf)
    m, _ = fit_mc(gr)
    assert np.isnan(m[zero_component]) and np.isfinite(m[1 - zero_component])


def test_nonfinite_and_masked_pixels_are_bad_pixels():
    """A NaN corner pixel and a masked one are excluded, not fatal: shapes equal the clean ones."""
    images, labels, psf = make_pairs(2, g=G)
    clean = regauss_shapes(images, psf)
    dirty = images.copy()
    dirty[0, 0, 0] = np.nan
    mask = np.zeros(images.shape, np.uint8)
    mask[1, 0, 1] = 1
    dirty[1, 0, 1] = 1e6
    out = regauss_shapes(dirty, psf, mask=mask)
    assert (out["status"] == 0).all()
    np.testing.assert_allclose(out["eps1"], clean["eps1"], atol=1e-5)


def test_calibrate_sets_returns_its_shapes_and_writes_nothing():
    """compare's calibration step: a set without true shear is skipped; an identity refined set
    gives dm = 0 exactly; the REGAUSS shapes come back in `Calibration.shapes` (the tables hold
    the same arrays) and the measurements are left as they were."""
    from refinegan.compare.measure import groups_of, measure
    from refinegan.compare.params import CompareParams
    from refinegan.compare.samples import Samples
    from refinegan.io import StampSet

    images, labels, psf = make_pairs(2, g=G, noise=0.5, profile="exp", method="auto")
    attrs = {"pixel_scale": 0.2}
    sets = {"sim": StampSet(images, labels, psf, None, attrs),
            "refined": StampSet(images.copy(), labels, psf, None, attrs),
            "real": StampSet(images, {}, None, None, attrs)}
    p = CompareParams(n_bootstrap=5)
    meas = {d: measure(s, p) for d, s in sets.items()}
    data = Samples(sets, meas, {d: groups_of(s) for d, s in sets.items()},
                   np.zeros(len(images), bool), 1.0)
    before = {d: vars(m).copy() for d, m in meas.items()}
    cal = calibrate_sets(data, p, np.random.default_rng(1))
    assert set(cal.shapes) == {"sim", "refined"}
    assert cal.tables["real"]["skipped"] == "no label g1 and no label g2 and no /psf in the file"
    assert "transfer" not in cal.tables
    assert "refined_target_psf" not in cal.tables  # the real set has no PSF
    assert cal.tables["sim"]["eps1"] is cal.shapes["sim"]["eps1"]
    np.testing.assert_array_equal(cal.tables["paired"]["dm"], 0.0)
    assert {d: vars(m) for d, m in data.meas.items()} == before


def _broken_refined_tables(with_real: bool):
    """calibrate_sets of sims, a refined set that is the sims but for one all-zero stamp (REGAUSS
    fails) in each of two groups, and, ``with_real``, a target of other galaxies. Returns the
    tables, the sims' images, labels, PSF and measurements, and the broken groups' pair_ids."""
    from refinegan.compare.measure import groups_of, measure
    from refinegan.compare.params import CompareParams
    from refinegan.compare.samples import Samples
    from refinegan.io import StampSet

    images, labels, psf = make_pairs(8, g=G, noise=0.5, profile="exp", method="auto", seed=5)
    refined = images.copy()
    pair = labels["pair_id"]
    broken = np.unique(pair)[[1, 4]]
    for b in broken:
        refined[np.flatnonzero(pair == b)[0]] = 0.0
    attrs = {"pixel_scale": 0.2}
    sets = {"sim": StampSet(images, labels, psf, None, attrs),
            "refined": StampSet(refined, labels, psf, None, attrs)}
    if with_real:
        real, _, _ = make_pairs(8, g=G, noise=0.5, profile="exp", method="auto", seed=9)
        sets["real"] = StampSet(real, labels, psf, None, attrs)
    p = CompareParams(n_bootstrap=5)
    meas = {d: measure(s, p) for d, s in sets.items()}
    data = Samples(sets, meas, {d: groups_of(s) for d, s in sets.items()},
                   np.zeros(len(images), bool), 1.0)
    return calibrate_sets(data, p, np.random.default_rng(1)).tables, images, labels, psf, meas, broken


def test_paired_sets_share_one_selection():
    """Consistent selection (known answer): a group whose refined stamp fails REGAUSS is dropped
    from sim too, so sim's m is exactly the fit on the groups both measured; refined is the sim
    elsewhere, so dm = 0 exactly and the sims' selection_shift is m(common) - m(own)."""
    t, images, labels, psf, meas, broken = _broken_refined_tables(with_real=False)
    pair = labels["pair_id"]
    n_groups = len(np.unique(pair))
    assert t["sim"]["n_groups"] == t["refined"]["n_groups"] == n_groups - 2
    assert t["sim"]["n_groups_dropped"] == 2 and t["sim"]["n_stamps_failed"] == 0
    assert np.isclose(t["sim"]["group_failure_fraction"], 2 / n_groups)
    sh = regauss_shapes(images, psf, meas["sim"].scalars["noise_std"] ** 2)
    own = group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, labels)
    keep = np.flatnonzero(~np.isin(own.pair_id, broken))
    np.testing.assert_array_equal(t["sim"]["m"], fit_mc(own.take(keep))[0])
    np.testing.assert_array_equal(t["sim"]["m_own_selection"], fit_mc(own)[0])
    np.testing.assert_array_equal(t["sim"]["selection_shift"],
                                  t["sim"]["m"] - t["sim"]["m_own_selection"])
    np.testing.assert_array_equal(t["paired"]["dm"], 0.0)
    np.testing.assert_array_equal(t["refined"]["m"], t["sim"]["m"])
    assert t["sim"]["selection"] == "common to sim, refined"


def test_the_target_is_compared_with_each_sets_own_selection():
    """Beside the target (its own selection), transfer's |m_sim - m_real| and closer_by use the
    sims' and refined's own selections; the common selection's stand beside them (suffix
    ``_common_selection``), as do each paired set's own-selection error and failure fraction."""
    t, _, labels, _, _, _ = _broken_refined_tables(with_real=True)
    pair = labels["pair_id"]
    tr, m_real = t["transfer"], t["real"]["m"]
    np.testing.assert_allclose(tr["abs_dm_sim_real"], np.abs(t["sim"]["m_own_selection"] - m_real))
    np.testing.assert_allclose(tr["abs_dm_sim_real_common_selection"], np.abs(t["sim"]["m"] - m_real))
    np.testing.assert_allclose(tr["abs_dm_refined_real"], np.abs(t["refined"]["m"] - m_real))
    np.testing.assert_allclose(tr["closer_by_refined"],
                               tr["abs_dm_sim_real"] - tr["abs_dm_refined_real"], atol=1e-12)
    np.testing.assert_allclose(tr["closer_by_refined_common_selection"],
                               tr["abs_dm_sim_real_common_selection"] - tr["abs_dm_refined_real"],
                               atol=1e-12)
    assert not np.allclose(tr["abs_dm_sim_real"], tr["abs_dm_sim_real_common_selection"])
    assert tr["selection"] == "each set its own"
    n_groups = len(np.unique(pair))
    assert t["sim"]["group_failure_fraction_own_selection"] == 0.0
    assert np.isclose(t["sim"]["group_failure_fraction"], 2 / n_groups)
    assert np.all(t["sim"]["m_err_own_selection"] > 0)


def test_groups_of_one_catalog_galaxy_bootstrap_as_one():
    """Known answer (cluster bootstrap): 10 galaxies, each drawn in 10 groups with the same
    response (all the scatter is between galaxies). Resampling groups treats the 100 as
    independent and understates m's error by ~sqrt(10); with ``cat_index`` the bootstrap
    resamples galaxies and the error is that of 10 responses: std(m_gal) / sqrt(10)."""
    rng = np.random.default_rng(3)
    m_gal = rng.normal(0.0, 0.05, 10)
    n = 100
    gal = np.repeat(np.arange(10), 10)
    g1 = np.full(n, 0.02)
    # two stamps a group: +g and -g, eps = (1 + m_gal) g
    eps = np.stack([(1 + m_gal[gal]) * 0.02, -(1 + m_gal[gal]) * 0.02], axis=1).ravel()
    labels = {"g1": np.stack([g1, -g1], axis=1).ravel(), "g2": np.zeros(2 * n),
              "pair_id": np.repeat(np.arange(n), 2), "shear_sign": np.tile([1, -1], n)}
    plain = group_means(eps, np.zeros(2 * n), np.ones(2 * n, bool), labels)
    clustered = group_means(eps, np.zeros(2 * n), np.ones(2 * n, bool),
                            {**labels, "cat_index": np.repeat(gal, 2)})
    np.testing.assert_array_equal(clustered.cluster, gal)
    e_plain = calibrate(plain, 2000, np.random.default_rng(1))["m_err"][0]
    e_clus = calibrate(clustered, 2000, np.random.default_rng(1))["m_err"][0]
    expect = m_gal.std(ddof=0) / np.sqrt(10)
    assert abs(e_clus / expect - 1) < 0.1, (e_clus, expect)
    assert 2.5 < e_clus / e_plain < 4.0, (e_clus, e_plain)  # ~sqrt(10) = 3.16
    np.testing.assert_allclose(fit_mc(clustered)[0][0], m_gal.mean(), atol=1e-12)


def _response_groups(m: float, noise: np.ndarray, d: float = 0.04) -> Groups:
    """Groups whose +/-g response is (1 + m) d plus ``noise`` (G, 2): the shape and pixel noise of
    each group's eps_+ - eps_-, as `group_means` gives it."""
    g = len(noise)
    dd = np.full((g, 2), d)
    return Groups(np.arange(g), (1 + m) * dd + noise, dd, np.zeros((g, 2)), np.zeros((g, 2)),
                  0, 0, True, n_stamps=2 * g)


@pytest.mark.parametrize("m_sets", [(0.04, 0.02, 0.0), (0.02, -0.02, 0.0)],
                         ids=["one side", "straddling"])
def test_closer_than_sims_error_is_the_scatter_over_experiments(m_sets):
    """Known answer: 150 experiments of 400 groups; the refined set shares 90 % of its noise with
    the sims (the same galaxies re-observed), the target has its own. The bootstrap error of
    closer_by = |m_sim - m_t| - |m_ref - m_t| matches the scatter of closer_by over experiments
    within 20 %; its mean is the true value within 3 sigma of that mean. With both sets on one
    side of the target the error is that of m_sim - m_ref (the target's drops out) and well
    below the quadrature of the two |dm| errors that `transfer` gives; straddling it is not."""
    m_s, m_r, m_t = m_sets
    rng = np.random.default_rng(11)
    n_exp, n_grp, sd, a = 150, 400, 0.004, 0.9  # m errors 0.005 per set
    points, errs, quad = [], [], []
    for _ in range(n_exp):
        n_s, n_new, n_t = (rng.normal(0, sd, (n_grp, 2)) for _ in range(3))
        grs = {"sim": _response_groups(m_s, n_s),
               "refined": _response_groups(m_r, a * n_s + np.sqrt(1 - a**2) * n_new),
               "real": _response_groups(m_t, n_t)}
        out = closer_than_sims(grs, ("refined", "psf_matched"), 60, rng)
        assert "closer_by_psf_matched" not in out and out["closer_n_groups"] == n_grp
        points.append(out["closer_by_refined"])
        errs.append(out["closer_by_refined_err"])
        cals = {k: calibrate(v, 30, rng) for k, v in grs.items()}
        t = transfer(cals["sim"], cals["refined"], cals["real"], {"dm": np.zeros(2)})
        quad.append(np.hypot(t["abs_dm_sim_real_err"], t["abs_dm_refined_real_err"]))
    points, errs, quad = np.array(points), np.array(errs), np.array(quad)
    scatter, err = points.std(axis=0, ddof=1), errs.mean(axis=0)
    truth = abs(m_s - m_t) - abs(m_r - m_t)
    assert np.all(np.abs(err / scatter - 1) < 0.2), (err, scatter)
    assert np.all(np.abs(points.mean(axis=0) - truth) < 3 * scatter / np.sqrt(n_exp) + 1e-3)
    if m_s > m_t and m_r > m_t:
        expect = sd / 0.04 / np.sqrt(n_grp) * np.sqrt(2 * (1 - a))  # std of m_sim - m_ref
        assert np.all(np.abs(err / expect - 1) < 0.2), (err, expect)
        assert np.all(err < 0.5 * quad.mean(axis=0))


def test_closer_than_sims_on_each_sets_own_selection():
    """Known answer: sims of m 0 on 400 galaxies; the refined set is the same galaxies at m -0.04,
    but it lost the 100 galaxies (all of m -0.2 in both sets) the target also loses; the target
    is other galaxies at m -0.04 with those lost. On its own selection the refined set sits on
    the target and the sims (which kept the m -0.2 galaxies: their m is the mean over all 400,
    -0.05) are 0.01 off it, so closer_by = +0.01 exactly; dropping the refined set's failures
    from the sims too (a common selection) makes the sims m 0.0 and closer_by 0.04 - 0.0 = 0.04.
    Aligned groups give the draws of the paired selection; the error is from joint draws of
    galaxies (0 when no galaxy's response scatters)."""
    g = 400
    d = np.full((g, 2), 0.04)

    def groups(ids, m):
        return Groups(np.asarray(ids), (1 + np.asarray(m))[:, None] * d[:len(ids)], d[:len(ids)],
                      np.zeros((len(ids), 2)), np.zeros((len(ids), 2)), 0, g - len(ids), True,
                      n_stamps=2 * g)

    lost = np.arange(g) % 4 == 0  # 100 galaxies the refined set and the target lose
    sim = groups(np.arange(g), np.where(lost, -0.2, 0.0))
    ref = groups(np.arange(g)[~lost], np.full((~lost).sum(), -0.04))
    real = groups(np.arange(g)[~lost] + 10_000, np.full((~lost).sum(), -0.04))
    own = closer_than_sims({"sim": sim, "refined": ref, "real": real}, ("refined",), 50,
                           np.random.default_rng(0))
    np.testing.assert_allclose(fit_mc(sim)[0], -0.05, atol=1e-12)
    np.testing.assert_allclose(own["closer_by_refined"], 0.01, atol=1e-12)
    assert own["closer_n_groups"] == g
    common = closer_than_sims({"sim": sim.select(ref.pair_id), "refined": ref, "real": real},
                              ("refined",), 50, np.random.default_rng(0))
    np.testing.assert_allclose(common["closer_by_refined"], 0.04, atol=1e-12)
    assert common["closer_n_groups"] == g - 100
    # the bootstrap draws galaxies jointly: the error is the spread of the sims' share of lost ones
    assert np.all(own["closer_by_refined_err"] > 0) and np.all(common["closer_by_refined_err"] < 1e-12)
    p_lost = 0.25
    expect = 0.2 * np.sqrt(p_lost * (1 - p_lost) / g)  # std of the sims' mean m over draws
    np.testing.assert_allclose(own["closer_by_refined_err"], expect, rtol=0.35)

