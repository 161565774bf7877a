"""bench/noise_spread.py's pure-noise mode (`--mock`): its AUC against known answers, the panel's
distinct noises, and a flat (one covariance) match told from a spread target."""

import importlib.util
from pathlib import Path

import numpy as np
from scipy.stats import norm

_SPEC = importlib.util.spec_from_file_location(
    "noise_spread_bench", Path(__file__).resolve().parents[1] / "bench" / "noise_spread.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_split_auc_of_two_gaussians_is_the_analytic_one():
    """Unit Gaussians a mean 1 apart: AUC = Phi(1 / sqrt 2) = 0.760; the same distribution: 0.5."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4000, 1)), rng.standard_normal((4000, 1)) + 1.0
    auc, err = bench.split_auc(a, b, 3)
    assert abs(auc - norm.cdf(1 / np.sqrt(2))) < 0.02 and 0 < err < 0.02
    same, _ = bench.split_auc(a, rng.standard_normal((4000, 1)), 3)
    assert abs(same - 0.5) < 0.03


def test_panel_noises_are_distinct_and_name_their_targets():
    noises = bench.panel_noises()
    specs = [repr(sorted(s.items())) for s in noises.values()]
    assert len(set(specs)) == len(specs) >= 3
    names = {n for key in noises for n in key.split(", ")}
    targets = {p.stem for p in (bench.ROOT / "config" / "targets").glob("*.yaml")}
    assert names == targets | {"default"}
    white = next(s for k, s in noises.items() if "white_noise_12" in k.split(", "))
    assert white["correlation"] == "white" and white["sigma"] == 12.0


def test_noise_features_of_white_noise_read_its_sigma_and_no_correlation():
    spec = {"sigma": 7.0, "correlation": "white"}
    x = bench.mock_noise(spec, 64, (48, 48), 0.2, seed=3)
    f = bench.noise_features(x)
    names = list(bench.NOISE_STATS)
    assert f.shape == (64, len(names) + 12)
    assert abs(np.nanmedian(f[:, names.index("noise_std")]) / 7.0 - 1) < 0.03
    assert abs(np.nanmean(f[:, names.index("acf_10")])) < 0.01
    # white noise: flat power spectrum, each annulus ~ the variance (power over variance ~ 1)
    assert np.allclose(np.nanmean(f[:, len(names):], axis=0), 1.0, atol=0.1)


def test_check_mock_tells_one_covariance_from_a_spread_target():
    """The mock's coadd noise spreads from stamp to stamp: one mean covariance is told from it
    (AUC > 0.7 at 512 stamps), the bank of classes of either basis much less so."""
    spec = {"sigma": 10.0, "correlation": "lanczos", "n_exposures": 4, "lanczos_order": 3}
    row = bench.check_mock("test", spec, 512, 2, seed=5)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["test", "lanczos 10, 4 exposures"] and "none" not in cells[2]
    lag1, spectrum, flat, floor = (float(c.split("+-")[0]) for c in cells[3:])
    assert flat > 0.7 and max(lag1, spectrum) < flat - 0.15 and abs(floor - 0.5) < 0.1
