"""Known-answer tests of the two-sample distances and classifier tests (refinegan.compare.distances)."""

import numpy as np
import pytest
from scipy import stats as sps

from refinegan.compare.classifiers import CNNParams
from refinegan.compare.distances import (
    classifier_auc,
    energy,
    gap_closed,
    group_split,
    paired_classifier_auc,
    w1_ks,
)


def test_w1_normal_shift(rng):
    """W1(N(0,1), N(0.5,1)) = 0.5 (a pure shift moves every quantile by 0.5).

    Tolerance: 4 bootstrap standard deviations of the estimate (~0.01 for 20,000 draws each).
    """
    a, b = rng.normal(0, 1, 20000), rng.normal(0.5, 1, 20000)
    w1, ks, p, n_bad = w1_ks(a, b)
    boot = [w1_ks(rng.choice(a, a.size), rng.choice(b, b.size))[0] for _ in range(30)]
    err = np.std(boot, ddof=1)
    assert err < 0.02
    assert abs(w1 - 0.5) < 4 * err
    assert n_bad == 0 and p < 1e-10
    # KS statistic of a 0.5 shift: 2 Phi(0.25) - 1 = 0.197
    assert abs(ks - (2 * sps.norm.cdf(0.25) - 1)) < 0.02


def test_w1_ks_excludes_and_counts_nan(rng):
    a = rng.normal(0, 1, 100)
    a[:7] = np.nan
    w1, ks, p, n_bad = w1_ks(a, rng.normal(0, 1, 100))
    assert n_bad == 7 and np.isfinite(w1)
    assert np.isnan(w1_ks(np.array([np.nan]), a)[0])


def test_energy_distance_known_value(rng):
    """1-D N(0,1) vs N(1,1): 2E|X-Y| - E|X-X'| - E|Y-Y'|, with X-Y ~ N(-1, 2) and
    E|N(mu, s^2)| = s sqrt(2/pi) exp(-mu^2 / 2s^2) + mu (1 - 2 Phi(-mu/s)); E|X-X'| = 2/sqrt(pi).
    = 0.5418. Sampling std 0.036 at n = 2000 (measured over 20 seeds): tolerance 3 sigma = 0.11;
    the same distribution gives ~0 (|d| < 0.02)."""
    s = np.sqrt(2)
    e_xy = s * np.sqrt(2 / np.pi) * np.exp(-1 / (2 * s * s)) + (1 - 2 * sps.norm.cdf(-1 / s))
    expected = 2 * e_xy - 2 * 2 / np.sqrt(np.pi)
    a, b = rng.normal(0, 1, (2000, 1)), rng.normal(1, 1, (2000, 1))
    assert abs(expected - 0.5418) < 1e-4
    assert abs(energy(a, b, scale=np.ones(1), rng=rng) - expected) < 0.11
    same = energy(a, rng.normal(0, 1, (2000, 1)), scale=np.ones(1), rng=rng)
    assert abs(same) < 0.02


def test_group_split_keeps_groups_together(rng):
    groups = np.repeat(np.arange(50), 4)
    test = group_split(groups, 0.5, rng)
    for g in range(50):
        assert len(set(test[groups == g])) == 1
    assert test.sum() == 100


def _features(rng, n, shift):
    return rng.normal(0, 1, (n, 3)) + np.array([shift, 0, 0])


def test_auc_same_distribution_is_half(rng):
    """Two samples of one distribution: AUC 0.5 within 3 of its errors; the error is small
    enough (< 0.05) that the test could fail."""
    res = classifier_auc(_features(rng, 1000, 0), _features(rng, 1000, 0), np.arange(1000),
                         np.arange(1000), seeds=2, n_boot=50, rng=rng)
    assert res.err < 0.05
    assert abs(res.auc - 0.5) < 3 * res.err


def test_auc_different_sets_high(rng):
    res = classifier_auc(_features(rng, 1000, 0), _features(rng, 1000, 4.0), np.arange(1000),
                         np.arange(1000), seeds=2, n_boot=50, rng=rng)
    assert res.auc > 0.95


def test_auc_needs_two_groups(rng):
    res = classifier_auc(_features(rng, 4, 0), _features(rng, 4, 0), np.zeros(4), np.arange(4),
                         seeds=2, rng=rng)
    assert np.isnan(res.auc)


def test_paired_auc_first_arm_is_classifier_auc_and_identity_is_zero(rng):
    """The paired test draws as `classifier_auc` does, so its first arm is that test's result
    bit for bit; with A2 = A the two arms are one computation: difference 0 +- 0."""
    xa, xb = _features(rng, 300, 0), _features(rng, 300, 0.5)
    ga, gb = np.repeat(np.arange(150), 2), np.arange(300)
    one = classifier_auc(xa, xb, ga, gb, seeds=2, n_boot=30, rng=np.random.default_rng(5))
    res = paired_classifier_auc(xa, xa + [0.2, 0, 0], xb, ga, gb, seeds=2, n_boot=30,
                                rng=np.random.default_rng(5))
    assert res.first.auc == one.auc and res.first.err == one.err
    np.testing.assert_array_equal(res.first.seed_aucs, one.seed_aucs)
    assert res.second.auc < res.first.auc  # A2 moved toward B
    same = paired_classifier_auc(xa, xa.copy(), xb, ga, gb, seeds=2, n_boot=30, rng=rng)
    assert same.diff == 0 and same.err == 0 and same.first.auc == same.second.auc
    with pytest.raises(ValueError, match="row for row"):
        paired_classifier_auc(xa, xa[:-1], xb, ga, gb, rng=rng)


def test_paired_auc_error_matches_scatter(rng):
    """Known answer and calibrated error. The score is feature 0 itself (no training), A ~ N(0, 1),
    B ~ N(0.3, 1), A2 = A + 0.1: AUC(A vs B) = Phi(0.3 / sqrt 2), AUC(A2 vs B) = Phi(0.2 / sqrt 2),
    difference -0.0278. Over 40 experiments the mean difference is that within 3 of its standard
    errors, the scatter of the difference equals its mean reported error within 35 % (40
    experiments pin a std to about 11 %), and the paired error is far below the two arms' errors
    in quadrature, which is what pairing is for."""
    def score(xtr, ytr, xte, seed):
        return xte[:, 0]

    expected = sps.norm.cdf(0.2 / np.sqrt(2)) - sps.norm.cdf(0.3 / np.sqrt(2))
    n, diffs, errs, quad = 400, [], [], []
    for _ in range(40):
        xa, xb = _features(rng, n, 0), _features(rng, n, 0.3)
        r = paired_classifier_auc(xa, xa + [0.1, 0, 0], xb, np.arange(n), np.arange(n),
                                  fit_predict=score, seeds=3, n_boot=50, rng=rng)
        diffs.append(r.diff)
        errs.append(r.err)
        quad.append(np.hypot(r.first.err, r.second.err))
    diffs = np.asarray(diffs)
    assert abs(diffs.mean() - expected) < 3 * diffs.std(ddof=1) / np.sqrt(len(diffs))
    ratio = diffs.std(ddof=1) / np.mean(errs)
    assert 0.65 < ratio < 1.35, ratio
    assert np.mean(errs) < 0.5 * np.mean(quad)


@pytest.mark.parametrize(("sigma_b", "same"), [(1.0, True), (2.0, False)])
def test_cnn_auc_on_pixels(rng, sigma_b, same):
    """A tiny CNN on 16x16 noise stamps: same sigma -> AUC 0.5 within 3 errors; sigma 1 vs 2
    (a factor 2 in noise every pixel shows) -> AUC > 0.95."""
    n = 300
    xa = rng.normal(0, 1.0, (n, 16, 16))
    xb = rng.normal(0, sigma_b, (n, 16, 16))
    cnn = CNNParams(scale=1.0, channels=4, epochs=3, batch_size=32, lr=1e-2)
    res = classifier_auc(xa, xb, np.arange(n), np.arange(n), fit_predict=cnn.fit_predict,
                         seeds=2, n_boot=30, rng=rng)
    if same:
        assert res.err < 0.08 and abs(res.auc - 0.5) < 3 * res.err
    else:
        assert res.auc > 0.95


def test_cnn_scale_must_be_positive():
    with pytest.raises(ValueError, match="positive number of counts"):
        CNNParams(scale=0.0)


def test_gap_closed():
    np.testing.assert_allclose(gap_closed([2.0, 1.0, 1.0], [1.0, 1.0, 2.0]), [0.5, 0.0, -1.0])
