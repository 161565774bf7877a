"""The training's harm check: R's output vs its input, each against the target, paired."""

import json

import h5py
import numpy as np
import pytest
import torch
from refiner_helpers import PLAIN_REFINER, write_set

import refinegan.refiner.train as train_mod
from refinegan.config import load_config
from refinegan.refiner.harm_check import MIN_STAMPS, harm_check
from refinegan.refiner.refiner_file import RefinerFile, TrainCheckpoint
from refinegan.refiner.settings import TrainSettings
from refinegan.refiner.train import train
from refinegan.refiner.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stamps(n, rng, size=24):
    """(n, 1, size, size) white noise with a round Gaussian galaxy of random flux at the centre."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    flux = rng.uniform(5, 20, n)[:, None, None]
    z = flux * np.exp(-0.5 * (xx**2 + yy**2) / 2.0**2) + rng.normal(0, 1, (n, size, size))
    return torch.from_numpy(z.astype(np.float32))[:, None]


def test_identity_is_no_harm_and_an_artefact_is(rng):
    """Known answers: R = identity gives the same AUC bit for bit (same nets, batches, split),
    a paired difference of exactly 0; a hot pixel added to every output stamp (+20 sigma at a
    random place) is found by the CNN (AUC ~1 against a target without one) and is harm."""
    n = 384
    x, real = _stamps(n, rng), _stamps(n, rng)
    same = harm_check(x, x.clone(), real, seed=3, steps=150, seeds=2)
    assert same["diff"] == 0.0 and same["err"] == 0.0 and not same["harmed"]
    assert abs(same["auc_input"] - 0.5) < 0.1  # the same distribution as the target
    hot = x.clone()
    iy, ix = rng.integers(0, 24, n), rng.integers(0, 24, n)
    hot[np.arange(n), 0, iy, ix] += 20.0
    res = harm_check(x, hot, real, seed=3, steps=150, seeds=2)
    assert res["auc_refined"] > 0.9 and res["harmed"] and res["n"] == n
    assert res["diff"] == pytest.approx(res["auc_refined"] - res["auc_input"])


def test_too_few_stamps_skip_the_check(rng):
    x = _stamps(MIN_STAMPS - 1, rng)
    res = harm_check(x, x + 5.0, x, seed=0)
    assert "skipped" in res and not res["harmed"]
    with pytest.raises(ValueError, match="differ in shape"):
        harm_check(x, x[:-1], x, seed=0)


def _config(*extra):
    return load_config(None, PLAIN_REFINER + [
        "stamp.size=24", "train.batch_size=4", "train.refiner_channels=4", "train.refiner_blocks=1",
        "train.disc_channels=4", "train.history_size=8", "train.device=cpu", "train.log_every=2",
        "train.sample_every=0", "train.steps=3", *extra])


@pytest.fixture
def files(tmp_path, rng):
    sim, _, _ = write_set(tmp_path / "sim.h5", MIN_STAMPS, 24, rng)
    real, _, _ = write_set(tmp_path / "real.h5", MIN_STAMPS, 24, rng, domain="real", correlated=True)
    return sim, real


def test_training_saves_the_identity_when_r_harmed(tmp_path, files, monkeypatch):
    """A check that finds harm (stubbed: the real one is tested above) makes refiner.pt hold
    R's step-0 weights, the identity, recorded in train_log.h5; without harm the last weights."""
    sim, real = files
    seen = []

    def harmful(x, y, r, seed, **kw):
        seen.append((x.shape, y.shape, r.shape, seed))
        return {"auc_input": 0.7, "auc_refined": 0.9, "diff": 0.2, "err": 0.01, "harmed": True,
                "n": int(x.shape[0]), "seeds": 3}

    monkeypatch.setattr(train_mod, "harm_check", harmful)
    cfg = _config()
    res = train(cfg, [sim], real, tmp_path / "o")
    assert seen and seen[0][0] == (MIN_STAMPS, 1, 24, 24) and seen[0][1] == seen[0][0]
    model = RefinerFile.read(res.model_path)
    identity = Trainer(TrainSettings.from_config(cfg), cfg.seed, (24, 24), torch.device("cpu"))
    total = TrainSettings.from_config(cfg).total_steps
    assert model.step == 0 and res.step == total > 0
    assert all(torch.equal(model.state_dict[k], v) for k, v in identity.initial_model_state().items())
    last = TrainCheckpoint.read(res.checkpoint_path).trainer["refiner"]
    assert any(not torch.equal(model.state_dict[k], last[k].float()) for k in last)
    with h5py.File(res.log_path) as f:
        assert f.attrs["model_step"] == 0 and json.loads(f.attrs["harm_check"])["harmed"]

    res = train(_config("train.harm_check=false"), [sim], real, tmp_path / "off")
    assert RefinerFile.read(res.model_path).step == total and len(seen) == 1
    with h5py.File(res.log_path) as f:
        assert json.loads(f.attrs["harm_check"]) == {"skipped": "train.harm_check is false"}


def test_the_identity_leaves_stamps_unchanged(rng):
    """R's initial weights are the identity: refine_eval with them returns its input (to float
    round-off: the linear residual space goes through sinh and asinh)."""
    cfg = _config("train.latent_dim=2")
    t = Trainer(TrainSettings.from_config(cfg), cfg.seed, (24, 24), torch.device("cpu"))
    z = _stamps(4, rng)
    torch.testing.assert_close(t.refine_eval(z, t.initial_model_state()), z, rtol=1e-5, atol=1e-5)
