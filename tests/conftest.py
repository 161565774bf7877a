"""Shared fixtures and the test tiers.

Tiers (markers, pyproject.toml): unmarked tests are fast unit tests; ``workflow`` marks the runs
of the command line, Snakemake and torchrun (subprocesses, a minute each at most); ``learning``
marks the tests that train a refiner until it shows a measured effect. CI runs all of them
(``python -m pytest``); ``python -m pytest -m "not workflow and not learning"`` is the quick
tier. ``slow`` end-to-end tests run only with ``--run-slow`` (as in GalSim's conftest).
"""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run slow tests")


WORKFLOW_MODULES = {"test_workflow", "test_slurm_profile", "test_cli", "test_real_cli",
                    "test_distributed"}
LEARNING_MODULES = {"test_refiner_learning"}
LEARNING_TESTS = {  # tests elsewhere that train R until it learns a measured effect
    "test_pretraining_drives_a_perturbed_refiner_to_identity",
    "test_noise_anchor_sets_the_refined_noise_level",
    "test_noise_acf_anchor_sets_the_refined_noise_correlation",
    "test_spread_anchor_and_latent_code_give_stamps_their_own_correlation",
}


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="slow: use --run-slow")
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in WORKFLOW_MODULES:
            item.add_marker(pytest.mark.workflow)
        if module in LEARNING_MODULES or item.originalname in LEARNING_TESTS:
            item.add_marker(pytest.mark.learning)
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """One torch thread for tiny models: as fast, and 10-20x faster on a shared, loaded machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def tiny_config():
    """A validated config for a few 32x32 stamps."""
    from refinegan.config import load_config

    return load_config(
        None,
        [
            "stamp.size=32",
            "sim.n=16",
            "real.n=16",
            "shards=2",
            "train.steps=2",
            "train.batch_size=4",
        ],
    )
