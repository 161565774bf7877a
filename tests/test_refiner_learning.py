"""The refiner learns on CPU: correlated target noise is learned, lensing labels are kept.

Sims: elliptical Gaussian galaxies x Gaussian PSF + white noise (sigma 1 count, flux 150-1500
counts). Target ("real"): the same population with correlated noise (3x3 cross kernel, lag-1
autocorrelation 0.5, same per-pixel sigma), so the right refinement changes noise texture only
and leaves the shear response unchanged. After training, held-out sets are refined and measured
(`refiner_helpers.learning_run`): a gradient-boosting classifier's held-out AUC on noise features
for sim-vs-real and refined-vs-real, the border autocorrelation, the aperture flux ratio
refined / sim, per-image REGAUSS e1 drift, and dm, the change of the mean shear response on
g1 = 0.02 and 0 twins (same galaxies and noise; error from the per-pair scatter).

Measured (2 shared cores under load, torch 1 thread, seed 20261125 / data seed 7), fast test:
AUC sim-real 0.997, refined-real 0.76; acf 0.02 -> 0.52 (real 0.50); refined noise std 1.03x
the target's; flux ratio 1.00001; e1 drift rms 0.014; dm = +0.8e-3 +/- 2.5e-3; about 40-65 s of
training (docs/refiner.md has the other seeds and settings).
"""

import numpy as np
import pytest
from refiner_helpers import learning_run

# The default losses, moment projection, schedule and learning rates, on a smaller network
# (16 channels x 2 blocks, D 16) and fewer steps than the default, so it runs in ~2 minutes.
FAST = ["train.steps=400", "train.batch_size=32", "train.refiner_channels=16",
        "train.refiner_blocks=2", "train.disc_channels=16", "train.pretrain_r_steps=0",
        "train.pretrain_d_steps=20", "train.log_every=50"]


def _check(r, *, auc_margin, acf_gap_closed, flux_tol, drift_max, dm_bound):
    assert r["auc_sim_real"] > 0.95, r  # the target differs: the classifier must see it
    assert r["auc_refined_real"] < r["auc_sim_real"] - auc_margin, r
    gap = (r["acf_real"] - r["acf_refined"]) / (r["acf_real"] - r["acf_sim"])
    assert gap < 1 - acf_gap_closed, r
    assert abs(r["flux_ratio"] - 1) < flux_tol, r
    assert r["e1_drift_rms"] < drift_max, r
    assert r["n_ok"] > 0.95 * r["n_test"], r
    assert abs(r["dm"]) <= dm_bound + 2 * r["dm_err"], r  # within 2 sigma of its error
    assert not r["watch"]["warnings"], r


def test_learns_noise_and_keeps_labels_fast(tmp_path, one_torch_thread):
    """Bounds (looser than the issue's, see module docstring): AUC refined-real at least 0.08
    below sim-real (> 4 sigma of the AUC's scatter; seeds 20261125, 11, 3 gave 0.76, 0.86, 0.90
    against 0.997, so a different CPU's rounding, which changes the GAN's trajectory like a new
    seed, still passes); >= 60 % of the autocorrelation gap closed; flux ratio 1 within 0.5 %;
    e1 drift rms < 0.03; |dm| <= 5e-3 + 2 sigma (the full 2e-3 bound is the slow test's)."""
    r = learning_run(tmp_path, FAST, size=24, n_train=768, n_test=512)
    _check(r, auc_margin=0.08, acf_gap_closed=0.6, flux_tol=5e-3, drift_max=0.03, dm_bound=5e-3)


@pytest.mark.slow
def test_default_config_meets_the_label_bounds(tmp_path, one_torch_thread):
    """Session 1's default configuration, the plain SimGAN refiner (`PLAIN_REFINER` on the
    schema: R 32 ch x 4 blocks, D 32, batch 64, 100 + 50 pretraining and 1000 adversarial steps) at 32x32 with 2048 training stamps and 2048 twins. Bounds: AUC
    refined-real 0.25 below sim-real, >= 70 % of the autocorrelation gap closed, flux ratio 1
    within 0.5 %, e1 drift rms < 0.03, |dm| <= 2e-3 within 2 sigma of its error.

    Measured (one torch thread on the loaded 2-core machine; the test took 14.3 min in all):
    AUC sim-real 0.99993, refined-real 0.670; acf -0.003 -> 0.506 (real 0.490); noise std 0.98x
    the target's; flux ratio 0.99996; e1 drift rms 0.009; dm = -1.55e-3 +/- 0.69e-3 (noise-only
    control: -1.29e-2 +/- 0.30e-2).
    """
    r = learning_run(tmp_path, [], size=32, n_train=2048, n_test=2048)
    _check(r, auc_margin=0.25, acf_gap_closed=0.7, flux_tol=5e-3, drift_max=0.03, dm_bound=2e-3)
    np.testing.assert_array_less(abs(r["dm"]), 2e-3 + 2 * r["dm_err"])
