"""bench/panel.py's error of a mean when stamps of one galaxy group are copies (known answers)."""

import importlib.util
from pathlib import Path

import numpy as np
from scipy import stats

_SPEC = importlib.util.spec_from_file_location(
    "panel_bench", Path(__file__).resolve().parents[1] / "bench" / "panel.py")
panel = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(panel)


def test_cluster_sem_of_copies_is_that_of_the_originals():
    y = np.random.default_rng(0).standard_normal(500)
    x = np.repeat(y, 2)  # +g / -g twins sharing one noise draw: 1,000 stamps, 500 values
    groups = np.repeat(np.arange(500), 2)
    assert np.isclose(panel._cluster_sem(x, groups), stats.sem(y), rtol=1e-12)
    # treated as independent, the 1,000 copies claim an error sqrt(2) too small
    assert np.isclose(panel._cluster_sem(x, None), stats.sem(y) / np.sqrt(2), rtol=0.01)


def test_cluster_sem_of_singletons_is_the_plain_one_and_skips_nan():
    x = np.random.default_rng(1).standard_normal(300)
    x[7] = np.nan
    assert np.isclose(panel._cluster_sem(x, np.arange(300)), stats.sem(x[np.isfinite(x)]))
