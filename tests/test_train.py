"""Training: resume equality, checkpoints, train_log.h5, failure-mode watch, error paths."""

import json
import re

import h5py
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from refiner_helpers import PLAIN_REFINER, write_set

import refinegan.refiner.trainer as trainer_mod
from refinegan.config import load_config
from refinegan.errors import ConfigError, RefineganError, TrainingError
from refinegan.refiner import monitor as mon
from refinegan.refiner.losses import (
    border_acf,
    border_variance,
    noise_acf_loss,
    noise_acf_spread_loss,
    noise_level_loss,
    noise_shape_loss,
)
from refinegan.refiner.refiner_file import TrainCheckpoint, atomic_save, load_file
from refinegan.refiner.settings import DISC_ARCH, REFINER_ARCH, TrainSettings
from refinegan.refiner.train import train
from refinegan.refiner.trainer import Trainer

SIZE = 16
SMALL = [
    f"stamp.size={SIZE}", "train.batch_size=4", "train.refiner_channels=4", "train.refiner_blocks=1",
    "train.disc_channels=4", "train.history_size=8", "train.device=cpu", "train.log_every=2",
    "train.sample_count=3", "train.sample_every=0",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(*extra):
    return load_config(None, PLAIN_REFINER + SMALL + list(extra))


@pytest.fixture
def files(tmp_path, rng):
    sim, _, _ = write_set(tmp_path / "sim.h5", 24, SIZE, rng)
    real, _, _ = write_set(tmp_path / "real.h5", 24, SIZE, rng, domain="real", correlated=True)
    return sim, real


def _weights(path):
    return load_file(path)


def test_resume_gives_the_same_weights(tmp_path, files):
    """Kill at step 4 (of 1 + 2 + 4), resume: same R, D, optimizers as an uninterrupted run.

    EMA, spectral norm, R1, D's symmetry augmentation and the history buffer are on, so every
    piece of state is exercised.
    """
    sim, real = files
    opts = ["train.steps=4", "train.pretrain_r_steps=1", "train.pretrain_d_steps=2",
            "train.checkpoint_every=3", "train.ema_decay=0.9", "train.r1_gamma=1.0",
            "train.disc_spectral_norm=true", "train.d_augment=true"]
    cfg = _config(*opts)
    full = train(cfg, [sim], real, tmp_path / "full")
    part = train(cfg, [sim], real, tmp_path / "part", stop_after_step=4)
    assert part.step == 4 and not (tmp_path / "part" / "refiner.pt").exists()
    resumed = train(cfg, [sim], real, tmp_path / "part", resume=True)
    assert resumed.step == full.step == 7
    a, b = _weights(full.model_path), _weights(resumed.model_path)
    assert a.keys() == b.keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    ca, cb = _weights(full.checkpoint_path)["trainer"], _weights(resumed.checkpoint_path)["trainer"]
    for k, v in ca["disc"].items():
        assert torch.equal(v, cb["disc"][k]), k
    assert torch.equal(ca["gen"], cb["gen"])
    # and a different seed gives different weights (the test can fail)
    other = train(_config(*opts, "seed=7"), [sim], real, tmp_path / "other")
    w = _weights(other.model_path)["state_dict"]
    assert not all(torch.equal(v, w[k]) for k, v in a["state_dict"].items())


def test_outputs_log_samples_and_weights_only_checkpoints(tmp_path, files):
    sim, real = files
    cfg = _config("train.steps=3", "train.pretrain_r_steps=1", "train.pretrain_d_steps=2",
                  "train.sample_every=3")
    res = train(cfg, [sim], real, tmp_path / "out", progress=True)
    for path in (res.model_path, res.checkpoint_path):
        torch.load(path, weights_only=True)  # no pickled code needed
    model = load_file(res.model_path)
    assert model["pixel_scale"] == pytest.approx(0.2) and model["stamp_shape"] == [SIZE, SIZE]
    with h5py.File(res.log_path) as f:
        assert set(mon.LOG_COLUMNS) <= set(f)
        assert list(f["step"][()]) == list(range(6))
        assert list(f["phase"][()]) == [0, 1, 1, 2, 2, 2]
        assert np.all(f["step_time_s"][()] > 0)
        assert np.all(f["loss_d"][1:] > 0) and f["loss_d"][0] == 0
        auc = f["d_auc"][()]
        assert auc[0] == 0 and np.all((auc[1:] >= 0) & (auc[1:] <= 1))
        assert f.attrs["d_stamp_auc"] == pytest.approx(auc[-2:].mean())  # the last log_every rows
        assert "warnings" in f.attrs and f.attrs["finished"]
    samples = sorted((tmp_path / "out" / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step-000003.png", "step-000006.png"]


def test_pretraining_drives_a_perturbed_refiner_to_identity(rng):
    """R starts as the identity (zero last layer); from a perturbed R, 60 self-regularisation
    steps bring rms(R(z) - z) from > 0.2 to < 0.05 normalised units (noise std 0.8)."""
    s = TrainSettings.from_config(_config("train.reg_psi=identity", "train.lr_r=0.001",
                                          "train.batch_size=8", "train.refiner_channels=8"))
    t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
    torch.nn.init.normal_(t.refiner.refiner.tail.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    data = torch.asinh(torch.from_numpy(rng.normal(0, 1, (32, 1, SIZE, SIZE))).float())

    def rms():
        return float((t.refine_eval(data) - data).pow(2).mean().sqrt())

    before = rms()
    for _ in range(60):
        t.r_step(data, adversarial=False)
    assert before > 0.2 and rms() < 0.05


def test_pretraining_only_is_the_identity_and_the_watch_says_so(tmp_path, files):
    sim, real = files
    res = train(_config("train.steps=0", "train.pretrain_r_steps=3", "train.pretrain_d_steps=0"),
                [sim], real, tmp_path / "out")
    assert res.watch["identity_rms"] < 0.01  # Adam turns float32 rounding into lr-sized steps
    assert any("refiner stayed the identity" in w for w in res.watch["warnings"])


def test_watch_failure_modes():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(16, 1, 8, 8, generator=g)
    changed = sim + 0.3 * torch.randn(16, 1, 8, 8, generator=g)
    assert mon.watch(sim, changed, 0.7, 0.6)["warnings"] == []
    assert "identity" in mon.watch(sim, sim, 0.5, 0.5)["warnings"][0]
    assert "discriminator wins" in mon.watch(sim, changed, 1.0, 0.995)["warnings"][0]
    collapsed = changed.mean(dim=0, keepdim=True).expand_as(sim) + 0.01 * sim
    assert any("collapse" in w for w in mon.watch(sim, collapsed, 0.6, 0.6)["warnings"])
    assert mon.watch(sim, changed, 0.6, 0.6, real_z=changed)["noise_ratio"] == 1.0
    loud = mon.watch(sim, 2 * changed, 0.6, 0.6, real_z=changed)
    assert loud["noise_ratio"] == pytest.approx(2.0) and "noise level off" in loud["warnings"][0]


def test_noise_drift_measures_r_own_change_of_the_noise_against_known_answers():
    """White noise averaged over two pixels along x (a [1/2, 1/2] box): variance 1/2 of the input's
    (sigma -29.3 %), lag-1 correlation 0.5 in x and 0 in y; R = identity changes nothing."""
    g = torch.Generator().manual_seed(1)
    white = torch.randn(64, 1, 48, 49, generator=g)
    box = 0.5 * (white[..., :-1] + white[..., 1:])  # (64, 1, 48, 48)
    sim = torch.asinh(white[..., :-1])  # the normalisation's inverse: sinh(z) is the noise
    sky = torch.ones(64, 48, 48, dtype=torch.bool)
    d = mon.noise_drift(sim, torch.asinh(box), sky)
    assert d["sigma"] == pytest.approx(np.sqrt(0.5) - 1, abs=0.01)
    assert d["lag1_x"] == pytest.approx(0.5, abs=0.01) and abs(d["lag1_y"]) < 0.01
    assert mon.noise_drift(sim, sim, sky) == {"sigma": 0.0, "lag1_x": 0.0, "lag1_y": 0.0}
    # the watch warns only when R's input had the target's noise already (train.noise_match)
    acc = (0.6, 0.6)
    assert any("R changed the matched noise" in w
               for w in mon.watch(sim, torch.asinh(box), *acc, sim_sky=sky, matched_noise=True)["warnings"])
    assert not any("matched noise" in w for w in mon.watch(sim, torch.asinh(box), *acc, sim_sky=sky)["warnings"])
    small = torch.asinh(white[..., :-1] + 0.001 * white[..., 1:])  # lag-1 x +0.001: within the bar
    assert not any("matched noise" in w
                   for w in mon.watch(sim, small, *acc, sim_sky=sky, matched_noise=True)["warnings"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, files, monkeypatch):
    sim, real = files
    calls = {"n": 0}
    real_d_loss = trainer_mod.d_loss

    def poisoned(*args, **kw):
        calls["n"] += 1
        loss = real_d_loss(*args, **kw)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(trainer_mod, "d_loss", poisoned)
    cfg = _config("train.steps=6", "train.pretrain_r_steps=0", "train.pretrain_d_steps=0",
                  "train.checkpoint_every=2", "train.log_every=1")
    with pytest.raises(TrainingError, match=r"loss became NaN/inf at step 4 \(adversarial.*last good checkpoint"):
        train(cfg, [sim], real, tmp_path / "out")
    assert load_file(tmp_path / "out" / "checkpoint.pt")["trainer"]["step"] == 4
    assert not (tmp_path / "out" / "refiner.pt").exists()


def test_input_errors(tmp_path, rng):
    sim, _, _ = write_set(tmp_path / "sim.h5", 8, SIZE, rng)
    cfg = _config("train.steps=1")
    empty, _, _ = write_set(tmp_path / "empty.h5", 1, SIZE, rng, domain="real")
    with h5py.File(empty, "a") as f:  # io cannot write N=0 files (chunking); make one by hand
        del f["images"], f["labels/flux"]
        f.create_dataset("images", shape=(0, SIZE, SIZE), dtype="f4")
        f.create_dataset("labels/flux", shape=(0,), dtype="f8")
    with pytest.raises(TrainingError, match=r"real stamp file\(s\) \[.*empty.h5'\] hold no stamps"):
        train(cfg, [sim], empty, tmp_path / "o")
    other_scale, _, _ = write_set(tmp_path / "r1.h5", 8, SIZE, rng, domain="real", pixel_scale=0.1)
    with pytest.raises(TrainingError, match=r"pixel scale differs: .*sim.h5 has 0.2 arcsec/pixel, .*r1.h5 has 0.1"):
        train(cfg, [sim], other_scale, tmp_path / "o")
    other_size, _, _ = write_set(tmp_path / "r2.h5", 8, SIZE + 2, rng, domain="real")
    with pytest.raises(TrainingError, match=r"stamp size differs: .*\(16, 16\), .*r2.h5 has \(18, 18\)"):
        train(cfg, [sim], other_size, tmp_path / "o")
    images = rng.normal(size=(8, SIZE, SIZE)).astype(np.float32)
    from refinegan.io import write_stamps

    write_stamps(tmp_path / "nan.h5", images, {}, domain="real", pixel_scale=0.2, source="t",
                 config={}, seed=1)
    with h5py.File(tmp_path / "nan.h5", "a") as f:  # damaged after writing (the writer refuses NaN)
        f["images"][5, 3, 3] = np.nan
    with pytest.raises(TrainingError, match=r"nan.h5: stamp 5 has NaN or inf pixels"):
        train(cfg, [sim], tmp_path / "nan.h5", tmp_path / "o")
    with pytest.raises(TrainingError, match="no sim stamp files given"):
        train(cfg, [], tmp_path / "nan.h5", tmp_path / "o")


def test_config_and_resume_errors(tmp_path, files, monkeypatch):
    sim, real = files
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device is 'cuda' but torch.cuda.is_available"):
        train(_config("train.device=cuda"), [sim], real, tmp_path / "o")
    with pytest.raises(ConfigError, match=r"config train section: missing keys \['adam_beta1'"):
        TrainSettings.from_config({"train": {"steps": 1}})
    train(_config("train.steps=1", "train.pretrain_r_steps=0", "train.pretrain_d_steps=0"),
          [sim], real, tmp_path / "o")
    with pytest.raises(TrainingError, match=r"checkpoint.pt: checkpoint was made with train settings .*resume needs the same"):
        train(_config("train.steps=2", "train.refiner_channels=6"), [sim], real, tmp_path / "o", resume=True)
    ckpt = load_file(tmp_path / "o" / "checkpoint.pt")
    assert list(ckpt) == list(TrainCheckpoint.keys()) == ["trainer", "log_rows", "arch_settings"]
    del ckpt["log_rows"]
    atomic_save(ckpt, tmp_path / "o" / "checkpoint.pt")
    with pytest.raises(TrainingError, match=r"checkpoint.pt: checkpoint file lacks \['log_rows'\]"):
        train(_config("train.steps=2"), [sim], real, tmp_path / "o", resume=True)
    (tmp_path / "o" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match=r"checkpoint.pt: not a readable refinegan checkpoint"):
        train(_config("train.steps=2"), [sim], real, tmp_path / "o", resume=True)


def test_resume_settings_are_the_arch_fields_and_the_state_shaping_ones():
    """One table gives R's and D's arch and the settings a resume must match: the same 14 keys
    the check has always refused, every moment weight included (the moment loss uses them)."""
    s = TrainSettings.from_config(_config("train.moment_mode=loss"))
    keys = s.resume_settings()
    assert set(keys) == {"refiner_channels", "refiner_blocks", "residual_space", "psf_kernel_px",
                         "psf_match", "latent_dim", "disc_channels", "disc_global_branch",
                         "disc_spectral_norm", "moment_weights_px", "moment_order", "moment_mode",
                         "history_size", "ema_decay"}
    assert keys["moment_weights_px"] == list(s.moment_weights_px) and s.arch()["moment_weights_px"] == []
    assert set(s.arch()) == set(REFINER_ARCH) and set(s.disc_arch()) == set(DISC_ARCH)
    assert {keys[f] for f in REFINER_ARCH.values() if f != "moment_weights_px"} == {
        v for k, v in s.arch().items() if k != "moment_weights_px"}


def test_bf16_autocast_path_runs_and_keeps_float32_where_needed(rng):
    """The CUDA path's mixed precision, exercised with CPU bf16 autocast: finite losses, the
    refined stamps (moment projection) in float32, the history buffer in float32."""
    s = TrainSettings.from_config(_config("train.pretrain_r_steps=1", "train.pretrain_d_steps=1",
                                          "train.steps=2", "train.r1_gamma=1.0"))
    t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
    t.amp = True
    t.refiner.to(memory_format=torch.channels_last)
    data = torch.asinh(torch.from_numpy(rng.normal(0, 1, (16, 1, SIZE, SIZE))).float())
    rows = [t.one_step(data, data) for _ in range(4)]
    assert all(bool(torch.isfinite(r).all()) for r in rows)
    assert t.refine_eval(data).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert t.refiner(data).dtype == torch.float32
    assert t.history.images.dtype == torch.float32 and len(t.history) > 0


def test_masked_target_pixels_become_noise():
    from refinegan.noise import fill_masked

    rng = np.random.default_rng(0)
    images = rng.normal(0, 3.0, (40, 16, 16)).astype(np.float32)
    images[:, 5, 5] = 1e4  # a hot pixel in every stamp
    mask = np.zeros(images.shape, np.uint8)
    mask[:, 5, 5] = 2
    out, n = fill_masked(images, mask, np.full(40, 3.0), seed=1)
    assert n == 40
    assert np.abs(out[:, 5, 5]).max() < 5 * 3.0 and 1.5 < out[:, 5, 5].std() < 4.5
    np.testing.assert_array_equal(np.delete(out.reshape(40, -1), 5 * 16 + 5, axis=1),
                                  np.delete(images.reshape(40, -1), 5 * 16 + 5, axis=1))
    same, n0 = fill_masked(images, None, np.full(40, 3.0), seed=1)
    assert n0 == 0 and same is images


def test_noise_anchor_sets_the_refined_noise_level():
    """With only the noise-level anchor on, R learns to scale white noise to the target's level
    (variance 1.44 here); without it, R stays the identity (variance 1)."""
    g = torch.Generator().manual_seed(0)
    sim = torch.asinh(torch.randn(256, 1, SIZE, SIZE, generator=g))
    real = torch.asinh(1.2 * torch.randn(256, 1, SIZE, SIZE, generator=g))
    levels = {}
    for lam in (0.0, 10.0):
        s = TrainSettings.from_config(_config(
            "train.pretrain_r_steps=300", "train.pretrain_d_steps=0", "train.steps=0",
            "train.reg_lambda=0.01", f"train.noise_lambda={lam}", "train.batch_size=16",
            "train.lr_r=0.001", "train.moment_mode=none"))
        t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
        t.set_noise_target(real)
        for _ in range(s.total_steps):
            t.one_step(sim, real)
        levels[lam] = float(border_variance(t.refine_eval(sim), s.norm_border_px).median())
    assert float(t.noise_target) == pytest.approx(1.44, rel=0.05)
    assert levels[0.0] == pytest.approx(1.0, rel=0.03)
    assert levels[10.0] == pytest.approx(1.44, rel=0.05)


def test_noise_acf_anchor_sets_the_refined_noise_correlation():
    """With only the correlation anchor on, R learns the target's lag-1 correlations (cross
    kernel 0.25: 0.4 in x and y, 0.06 on the diagonals); without it R stays white (0)."""
    g = torch.Generator().manual_seed(0)
    sim = torch.asinh(torch.randn(256, 1, SIZE, SIZE, generator=g))
    k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3)
    corr = torch.nn.functional.conv2d(torch.randn(256, 1, SIZE + 2, SIZE + 2, generator=g), k)
    real = torch.asinh(corr / corr.std())
    lag1 = {}
    for lam in (0.0, 30.0):
        s = TrainSettings.from_config(_config(
            "train.pretrain_r_steps=300", "train.pretrain_d_steps=0", "train.steps=0",
            "train.reg_lambda=0.01", f"train.noise_acf_lambda={lam}", "train.noise_acf_max_lag=1",
            "train.batch_size=16", "train.lr_r=0.001", "train.moment_mode=none",
            "train.residual_space=linear"))
        t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
        t.set_noise_target(real)
        for _ in range(s.total_steps):
            t.one_step(sim, real)
        lag1[lam] = border_acf(t.refine_eval(sim), s.norm_border_px, t.acf_lags).median(dim=0).values
    target = t.acf_target  # lags (0, 1), (1, -1), (1, 0), (1, 1)
    assert float(target[0]) == pytest.approx(0.4, abs=0.04)
    assert float(lag1[0.0].abs().max()) < 0.04
    assert_allclose(lag1[30.0].numpy(), target.numpy(), atol=0.05)


def test_noise_anchors_are_a_list_summed_in_order():
    """The anchors switched on, in the order level, acf, spread, shape; their sum is the terms
    added left to right, starting from the level term (or zero without it), bit for bit."""
    g = torch.Generator().manual_seed(0)
    real = torch.asinh(1.2 * torch.randn(32, 1, SIZE, SIZE, generator=g))
    y = torch.asinh(torch.randn(8, 1, SIZE, SIZE, generator=g))
    on = ["train.noise_lambda=2", "train.noise_acf_lambda=3", "train.noise_acf_spread_lambda=5",
          "train.noise_shape_lambda=7"]
    for extra, names in ((on, ["level", "acf", "spread", "shape"]),
                         ([*on, "train.noise_lambda=0"], ["acf", "spread", "shape"]),
                         ([], [])):
        s = TrainSettings.from_config(_config(*extra))
        t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
        t.set_noise_target(real)
        assert [a.name for a in t.anchors] == names and t.needs_noise_target == bool(names)
        b, lags = s.norm_border_px, t.acf_lags
        expect = s.noise_lambda * noise_level_loss(y, t.noise_target, b) if s.noise_lambda > 0 else t.zero
        if s.noise_acf_lambda > 0:
            expect = expect + s.noise_acf_lambda * noise_acf_loss(y, t.acf_target, b, lags)
        if s.noise_acf_spread_lambda > 0:
            expect = expect + s.noise_acf_spread_lambda * noise_acf_spread_loss(y, t.acf_sorted_target, b, lags)
        if s.noise_shape_lambda > 0:
            expect = expect + s.noise_shape_lambda * noise_shape_loss(y, t.shape_target, b)
        got = t.noise_loss(y, b)
        assert got.dtype == expect.dtype and got.item() == expect.item()
        assert got.numpy().tobytes() == expect.numpy().tobytes()


def test_noise_anchors_held_to_rs_input_or_to_the_target():
    """``noise_anchor_reference: input``: level, correlations and their spread are R's input's
    (the sims after noise matching), the noise shape still the target's; without noise matching
    there is no matched input to hold to, and training says so."""
    from types import SimpleNamespace

    from refinegan.refiner.train import set_noise_targets

    g = torch.Generator().manual_seed(0)
    sim = torch.asinh(torch.randn(64, 1, SIZE, SIZE, generator=g))
    real = torch.asinh(1.5 * torch.randn(64, 1, SIZE, SIZE, generator=g) ** 3)  # skewed, loud
    data = SimpleNamespace(sim_z=sim, real_z=real, sim_sky=None, real_sky=None)
    on = ["train.noise_lambda=1", "train.noise_acf_lambda=1", "train.noise_shape_lambda=1",
          "train.noise_region=frame"]
    got = {}
    for ref in ("target", "input"):
        s = TrainSettings.from_config(_config(*on, "train.noise_match=true",
                                              f"train.noise_anchor_reference={ref}"))
        t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
        set_noise_targets(t, data)
        got[ref] = t
    b = got["input"].s.norm_border_px
    assert float(got["input"].noise_target) == float(border_variance(sim, b).median())
    assert float(got["target"].noise_target) == float(border_variance(real, b).median())
    assert_allclose(got["input"].acf_target.numpy(),
                    border_acf(sim, b, got["input"].acf_lags).median(dim=0).values.numpy())
    assert_allclose(got["input"].shape_target.numpy(), got["target"].shape_target.numpy())
    assert float(got["input"].shape_target[1]) > 1.0  # the target's heavy tails, not the sims' 0
    s = TrainSettings.from_config(_config(*on, "train.noise_match=false",
                                          "train.noise_anchor_reference=input"))
    with pytest.raises(TrainingError, match="noise_match"):
        set_noise_targets(Trainer(s, 1, (SIZE, SIZE), torch.device("cpu")), data)


def test_noise_anchor_without_target_is_refused():
    s = TrainSettings.from_config(_config("train.noise_lambda=1", "train.pretrain_r_steps=1"))
    t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
    x = torch.zeros(8, 1, SIZE, SIZE)
    with pytest.raises(RuntimeError, match="set_noise_target"):
        t.one_step(x, x)


def test_self_regularisation_is_relative_to_the_kernel_convolved_sim():
    """With a PSF kernel, the kernel's own change costs no self-regularisation (it is a known,
    recorded change of PSF): an identity R with K != delta has reg = 0 on its first step."""
    s = TrainSettings.from_config(_config("train.pretrain_r_steps=1", "train.pretrain_d_steps=0",
                                          "train.steps=0", "train.psf_kernel_px=5",
                                          "train.reg_lambda=1.0"))
    t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
    with torch.no_grad():
        t.refiner.kernel_weights.copy_(torch.tensor([0.0, 0.0, 0.5]))
    x = torch.asinh(3.0 * torch.randn(32, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        assert float((t.refiner.base(x) - x).abs().mean()) > 0.05  # K does change the stamps
    row = t.one_step(x, x)
    assert float(row[1]) == 0.0  # (adv, reg, ...): reg against K * sim


def test_spread_anchor_and_latent_code_give_stamps_their_own_correlation():
    """Target: half white stamps, half with lag-1 correlation ~0.45 (a bimodal spread, as a
    coadd's dithers spread it; per-stamp std 0.23). The median anchor alone gives every stamp the
    same correlation (std: the sampling scatter); the spread anchor makes R vary it with the input
    noise itself, and a latent code lets it vary it further."""
    size = 32
    g = torch.Generator().manual_seed(0)
    sim = torch.asinh(torch.randn(256, 1, size, size, generator=g))
    k = torch.tensor([[0.0, 0.35, 0.0], [0.35, 1.0, 0.35], [0.0, 0.35, 0.0]]).view(1, 1, 3, 3)
    corr = torch.nn.functional.conv2d(torch.randn(128, 1, size + 2, size + 2, generator=g), k)
    white = torch.randn(128, 1, size, size, generator=g)
    real = torch.asinh(torch.cat([corr / corr.std(), white]))
    spread = {}
    for name, dim, acf, lam in (("median", 0, 30, 0), ("spread", 0, 0, 30), ("latent", 2, 0, 30)):
        s = TrainSettings.from_config(_config(
            f"stamp.size={size}", "train.pretrain_r_steps=400", "train.pretrain_d_steps=0",
            "train.steps=0", "train.reg_lambda=0.01", f"train.noise_acf_lambda={acf}",
            f"train.noise_acf_spread_lambda={lam}", "train.noise_acf_max_lag=1",
            f"train.latent_dim={dim}", "train.batch_size=32", "train.lr_r=0.003",
            "train.moment_mode=none", "train.residual_space=linear", "train.refiner_channels=8"))
        t = Trainer(s, 1, (size, size), torch.device("cpu"))
        t.set_noise_target(real)
        for _ in range(s.total_steps):
            t.one_step(sim, real)
        with torch.no_grad():
            u = torch.randn(256, dim, generator=torch.Generator().manual_seed(5))
            y = t.refiner(t.refiner.with_latent(sim, u))
        lag1 = border_acf(y, s.norm_border_px, t.acf_lags)[:, t.acf_lags.index((0, 1))]
        spread[name] = float(lag1.std())
    target = float(border_acf(real, 4, t.acf_lags)[:, t.acf_lags.index((0, 1))].std())
    assert target > 0.2
    assert spread["median"] < 0.08  # sampling scatter only
    assert spread["spread"] > spread["median"] + 0.05
    assert spread["latent"] > spread["spread"] + 0.02 and spread["latent"] > 0.75 * target, spread


def test_noise_shape_target_masks_sources():
    """The noise-shape anchor's target is the target's noise, not its sources: Gaussian noise with
    a bright galaxy and a neighbour reaching the border frame has target skewness and kurtosis
    ~0, where the bare border frame is skewed."""
    from refinegan.refiner.losses import border_shape

    size = 32
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.arange(size) - 15.5, torch.arange(size) - 15.5, indexing="ij")
    sources = 200 * torch.exp(-0.5 * (x**2 + y**2) / 4) + 30 * torch.exp(-0.5 * ((x - 13) ** 2 + y**2) / 2)
    real = torch.asinh(torch.randn(128, 1, size, size, generator=g) + sources)
    target = Trainer.noise_shape_target(real)
    assert_allclose(target.numpy(), [0.0, 0.0], atol=0.03)
    assert float(border_shape(real, 4)[:, 0].mean()) > 0.3


def test_sky_region_anchors_measure_outside_the_source_masks(tmp_path, files):
    """noise_region: sky trains end to end (masks from refinegan.compare.stats), and a Trainer without
    its masks refuses to step."""
    sim, real = files
    cfg = _config("train.steps=2", "train.noise_lambda=10", "train.noise_acf_lambda=30",
                  "train.noise_region=sky", "train.noise_shape_lambda=10")
    res = train(cfg, [sim], real, tmp_path / "out")
    assert res.step == cfg["train"]["pretrain_r_steps"] + cfg["train"]["pretrain_d_steps"] + 2
    s = TrainSettings.from_config(cfg)
    t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
    x = torch.zeros(8, 1, SIZE, SIZE)
    with pytest.raises(RuntimeError, match="sky mask"):
        t.set_noise_target(x)


def test_sky_region_without_any_anchor_trains(tmp_path, files):
    """noise_region: sky with every anchor at 0 (noise matched by physics instead) trains: nothing
    is measured on the sky, so no sky mask is needed (it once stopped at the first R step)."""
    sim, real = files
    cfg = _config("train.steps=2", "train.noise_region=sky")
    assert TrainSettings.from_config(cfg).noise_weights() == {k: 0.0 for k in ("level", "acf", "spread", "shape")}
    res = train(cfg, [sim], real, tmp_path / "out")
    assert res.step == cfg["train"]["pretrain_r_steps"] + cfg["train"]["pretrain_d_steps"] + 2


@pytest.mark.parametrize("change,named", [
    ("seed=8", "seed 7 -> 8"), ("train.lr_r=0.001", "lr_r 0.0005 -> 0.001"),
    ("train.batch_size=8", "batch_size 4 -> 8"), ("train.reg_lambda=0.5", "reg_lambda 0.3 -> 0.5"),
    ("stamp.size=32", "stamp_shape [16, 16] -> [32, 32]")])
def test_resume_refuses_a_change_that_alters_the_run_naming_key_and_values(tmp_path, rng, change,
                                                                            named):
    sim, _, _ = write_set(tmp_path / "sim.h5", 24, SIZE, rng)
    real, _, _ = write_set(tmp_path / "real.h5", 24, SIZE, rng, domain="real", correlated=True)
    base = ["seed=7", "train.steps=2", "train.pretrain_r_steps=0", "train.pretrain_d_steps=0"]
    train(_config(*base), [sim], real, tmp_path / "o", stop_after_step=1)
    if change.startswith("stamp.size"):  # other stamps need other files
        sim, _, _ = write_set(tmp_path / "sim32.h5", 24, 32, rng)
        real, _, _ = write_set(tmp_path / "real32.h5", 24, 32, rng, domain="real")
    with pytest.raises(TrainingError, match=rf"resuming would change .*{re.escape(named)}"):
        train(_config(*base, change), [sim], real, tmp_path / "o", resume=True)
    # what may change: more steps, the log / checkpoint intervals
    out = train(_config(*base[:1], "train.steps=3", "train.pretrain_r_steps=0",
                        "train.pretrain_d_steps=0", "train.log_every=1"),
                [tmp_path / "sim.h5"], tmp_path / "real.h5", tmp_path / "o", resume=True)
    assert out.step == 3


def test_resume_refuses_a_checkpoint_past_the_end(tmp_path, files):
    sim, real = files
    base = ["train.pretrain_r_steps=0", "train.pretrain_d_steps=0"]
    train(_config("train.steps=3", *base), [sim], real, tmp_path / "o", stop_after_step=3)
    with pytest.raises(TrainingError, match=r"checkpoint is at step 3, past the 2 steps"):
        train(_config("train.steps=2", *base), [sim], real, tmp_path / "o", resume=True)


def test_a_fresh_run_never_leaves_a_model_and_a_log_of_different_runs(tmp_path, files):
    sim, real = files
    base = ["train.steps=2", "train.pretrain_r_steps=0", "train.pretrain_d_steps=0",
            "train.sample_every=1"]
    first = train(_config("seed=3", *base), [sim], real, tmp_path / "o")
    assert first.model_path.exists() and list((tmp_path / "o" / "samples").glob("*.png"))
    # a new run killed after its first checkpoint: the old refiner.pt and samples must be gone
    train(_config("seed=4", *base), [sim], real, tmp_path / "o", stop_after_step=1)
    assert not first.model_path.exists()
    with h5py.File(first.log_path) as f:
        assert json.loads(f.attrs["config"])["seed"] == 4 and not f.attrs["finished"]
    assert [p.name for p in (tmp_path / "o" / "samples").glob("*.png")] == ["step-000001.png"]


def test_resume_if_matches_continues_this_run_and_restarts_for_another(tmp_path, files, caplog):
    """What the workflow's train job does: a job killed by the scheduler resumes from its own
    checkpoint (same weights as an uninterrupted run); a checkpoint of another config does not."""
    sim, real = files
    base = ["train.steps=3", "train.pretrain_r_steps=1", "train.pretrain_d_steps=0"]
    full = train(_config(*base), [sim], real, tmp_path / "full")
    train(_config(*base), [sim], real, tmp_path / "job", stop_after_step=2)
    again = train(_config(*base), [sim], real, tmp_path / "job", resume="if_matches")
    a, b = _weights(full.model_path)["state_dict"], _weights(again.model_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(_config(*base), [sim], real, tmp_path / "job2", stop_after_step=2)
    with caplog.at_level("WARNING"):
        other = train(_config(*base, "seed=99"), [sim], real, tmp_path / "job2", resume="if_matches")
    assert "not resuming" in caplog.text and "seed" in caplog.text and other.step == 4
    with h5py.File(other.log_path) as f:
        assert len(f["step"]) == 4  # all four steps of the fresh run, none of the old one's


def test_a_train_refused_for_its_inputs_leaves_no_output_folder(tmp_path, rng):
    sim, _, _ = write_set(tmp_path / "sim.h5", 8, SIZE, rng)
    with pytest.raises(RefineganError, match="missing.h5: no such stamp file"):
        train(_config("train.steps=1"), [sim], tmp_path / "missing.h5", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_last_log_line_says_how_the_steps_split(tmp_path, files, caplog):
    sim, real = files
    with caplog.at_level("INFO", logger="refinegan.refiner.train"):
        train(_config("train.steps=3", "train.pretrain_r_steps=1", "train.pretrain_d_steps=1"),
              [sim], real, tmp_path / "o")
    assert "finished at step 5 of 5 (2 pretraining + 3 adversarial)" in caplog.text


def _adv_run(weight: float, perturb_d: bool = False, steps: int = 3):
    """A tiny trainer on fixed stamps after 2 pretrain-D and ``steps`` adversarial steps; D's calls
    counted."""
    g = torch.Generator().manual_seed(5)
    sim = torch.asinh(torch.randn(16, 1, SIZE, SIZE, generator=g))
    real = torch.asinh(1.3 * torch.randn(16, 1, SIZE, SIZE, generator=g))
    s = TrainSettings.from_config(_config(f"train.adv_weight={weight}", "train.pretrain_r_steps=0",
                                          "train.pretrain_d_steps=2", f"train.steps={steps}"))
    t = Trainer(s, 1, (SIZE, SIZE), torch.device("cpu"))
    if perturb_d:
        with torch.no_grad():
            for p in t.disc.parameters():
                p.add_(torch.randn(p.shape, generator=g))
    d_before = [p.detach().clone() for p in t.disc.parameters()]
    calls = []
    t.disc.register_forward_hook(lambda *a: calls.append(1))
    rows = [t.one_step(sim, real) for _ in range(s.total_steps)]
    return t, d_before, len(calls), torch.stack(rows)


def test_adv_weight_zero_never_calls_or_trains_d_and_r_does_not_depend_on_it():
    """train.adv_weight=0: D is never called nor stepped (its weights stay at their init), so R
    after training is the same bit for bit whatever D's weights; the adversarial and D columns
    of the log are zero; the run is deterministic. With D (weight 1) D is called and trained."""
    a, d0, calls, rows = _adv_run(0.0)
    assert calls == 0
    assert all(torch.equal(p, q) for p, q in zip(a.disc.parameters(), d0, strict=True))
    assert float(rows[:, 0].abs().sum()) == 0.0 and float(rows[:, 3:7].abs().sum()) == 0.0
    b, _, _, _ = _adv_run(0.0, perturb_d=True)
    c, _, _, _ = _adv_run(0.0)
    ra, rb, rc = (x.model_state() for x in (a, b, c))
    for k in ra:
        assert ra[k].numpy().tobytes() == rb[k].numpy().tobytes() == rc[k].numpy().tobytes(), k
    assert any(not torch.equal(ra[k], torch.zeros_like(ra[k])) for k in ra if "tail" in k)  # R moved
    w, dw, calls_w, rows_w = _adv_run(1.0)
    assert calls_w > 0 and float(rows_w[:, 0].abs().sum()) > 0
    assert not all(torch.equal(p, q) for p, q in zip(w.disc.parameters(), dw, strict=True))


def test_adv_weight_scales_the_adversarial_term():
    """The adversarial term R's loss adds is adv_weight x SimGAN's (first adversarial step, same
    state): 0.25 gives a quarter of the term at 1."""
    _, _, _, one = _adv_run(1.0, steps=1)
    _, _, _, quarter = _adv_run(0.25, steps=1)
    assert float(one[-1, 0]) > 0
    assert float(quarter[-1, 0]) == pytest.approx(0.25 * float(one[-1, 0]), rel=1e-6)


def test_d_augment_draws_the_squares_eight_symmetries():
    """train.d_augment: each stamp comes out as one of the 8 images of the square's symmetries
    of itself (a marked pixel lands on one of its 8 images), all 8 occur, and the draws follow
    the batch generator (a checkpoint resumes them); off, the stamps pass unchanged."""
    cfg = _config("train.d_augment=true")
    t = Trainer(TrainSettings.from_config(cfg), 1, (SIZE, SIZE), torch.device("cpu"))
    z = torch.zeros((400, 1, SIZE, SIZE))
    z[:, 0, 1, 3] = 1.0
    images = {(1, 3), (3, SIZE - 2), (SIZE - 2, SIZE - 4), (SIZE - 4, 1),  # rotations
              (1, SIZE - 4), (SIZE - 4, SIZE - 2), (SIZE - 2, 3), (3, 1)}  # mirror images
    state = t.gen.get_state()
    out = t._augment(z)
    seen = {tuple(int(v) for v in torch.nonzero(o[0])[0]) for o in out}
    assert seen == images and float(out.sum()) == 400.0
    t.gen.set_state(state)
    assert torch.equal(t._augment(z), out)
    plain = Trainer(TrainSettings.from_config(_config()), 1, (SIZE, SIZE), torch.device("cpu"))
    assert plain._augment(z) is z
    with pytest.raises(ConfigError, match="d_augment needs square stamps"):
        Trainer(TrainSettings.from_config(cfg), 1, (SIZE, SIZE + 2), torch.device("cpu"))


def test_resume_refuses_a_checkpoint_with_other_log_columns(tmp_path, files):
    """A checkpoint whose log rows have another number of columns (an older refinegan's) is
    refused by --resume with a message naming both counts; --resume-if-matches trains afresh."""
    sim, real = files
    cfg = _config("train.steps=4", "train.pretrain_d_steps=1", "train.checkpoint_every=2")
    part = train(cfg, [sim], real, tmp_path / "o", stop_after_step=2)
    ck = TrainCheckpoint.read(part.checkpoint_path)
    TrainCheckpoint(trainer=ck.trainer, log_rows=ck.log_rows[:, :-1],
                    arch_settings=ck.arch_settings).write(part.checkpoint_path)
    n = len(mon.LOG_COLUMNS)
    with pytest.raises(TrainingError, match=f"log rows have {n - 1} columns, this refinegan logs {n}"):
        train(cfg, [sim], real, tmp_path / "o", resume=True)
    res = train(cfg, [sim], real, tmp_path / "o", resume="if_matches")
    assert res.step == TrainSettings.from_config(cfg).total_steps
