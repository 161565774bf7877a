"""Shared fixtures. Slow end-to-end tests run only with ``--run-slow`` (as in GalSim's conftest)."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: use --run-slow")
    for item in items:
        if "slow" in item.keywords:
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
