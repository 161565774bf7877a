"""Adversarial losses on known logits, R1, self-regularisation psi, moment loss."""

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from refinegan.errors import ConfigError
from refinegan.refiner.discriminator import Discriminator
from refinegan.refiner.losses import (
    SelfRegularization,
    acf_lags,
    border_acf,
    border_shape,
    border_variance,
    d_accuracy,
    d_loss,
    d_stamp_auc,
    g_loss,
    moment_loss,
    noise_acf_loss,
    noise_acf_spread_loss,
    noise_level_loss,
    noise_shape_loss,
    r1_penalty,
)
from refinegan.refiner.moments import MomentProjector


def _out(local_value, glob_value=None, b=2):
    local = torch.full((b, 1, 4, 4), float(local_value))
    return local, None if glob_value is None else torch.full((b, 1), float(glob_value))


def test_bce_is_averaged_over_the_patch_map():
    local = torch.zeros(1, 1, 2, 2)
    local[0, 0, 0, 0] = 10.0  # one confident patch, three at chance
    expected = (math.log1p(math.exp(-10.0)) + 3 * math.log(2)) / 4
    assert_allclose(float(g_loss((local, None))), expected, rtol=1e-6)


@pytest.mark.parametrize(("kind", "real", "fake", "expected"), [
    ("bce", 0.0, 0.0, 2 * math.log(2)),
    ("lsgan", 1.0, 0.0, 0.0),
    ("lsgan", 0.0, 1.0, 1.0),
    ("hinge", 1.0, -1.0, 0.0),
    ("hinge", 0.0, 0.0, 2.0),
])
def test_d_loss_known_values(kind, real, fake, expected):
    assert_allclose(float(d_loss(_out(real), _out(fake), kind)), expected, atol=1e-6)


def test_global_weight_combines_branches():
    # local at chance, global confident and right
    real, fake = _out(0.0, 20.0), _out(0.0, -20.0)
    assert_allclose(float(d_loss(real, fake, "bce", global_weight=1.0)), math.log(2), rtol=1e-5)
    assert_allclose(float(d_loss(real, fake, "bce", global_weight=0.0)), 2 * math.log(2), rtol=1e-6)


@pytest.mark.parametrize("kind", ["bce", "lsgan", "hinge"])
def test_g_loss_decreases_as_fakes_look_real(kind):
    assert float(g_loss(_out(2.0), kind)) < float(g_loss(_out(-2.0), kind))


def test_accuracy_thresholds():
    local = torch.tensor([[[[1.0, -1.0], [2.0, 0.4]]]])
    assert float(d_accuracy((local, None), real=True)) == 0.75
    assert float(d_accuracy((local, None), real=False)) == 0.25
    assert float(d_accuracy((local, None), real=True, kind="lsgan")) == 0.5


def test_stamp_auc_known_answer():
    """Scores real (3, 2) vs refined (1, 2): three pairs right, one tie -> 3.5 / 4."""
    real = (torch.tensor([3.0, 2.0]).reshape(2, 1, 1, 1).expand(2, 1, 4, 4), None)
    fake = (torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1).expand(2, 1, 4, 4), None)
    assert float(d_stamp_auc(real, fake)) == 0.875
    # the global logit, weighted as in the loss, reverses the order when it dominates
    glob_r, glob_f = torch.tensor([[-10.0], [-10.0]]), torch.tensor([[10.0], [10.0]])
    assert float(d_stamp_auc((real[0], glob_r), (fake[0], glob_f), global_weight=1.0)) == 0.0
    assert float(d_stamp_auc((real[0], glob_r), (fake[0], glob_f), global_weight=0.0)) == 0.875


def test_patch_accuracy_at_chance_while_stamps_rank_perfectly():
    """One bright patch per real stamp on a sky of slightly negative logits: D classifies 1 of
    16 real patches and every refined patch right (accuracies sum to ~1, 'chance'), yet ranks
    every real stamp above every refined one."""
    real = torch.full((8, 1, 4, 4), -0.01)
    real[:, 0, 0, 0] = 5.0
    fake = (torch.full((8, 1, 4, 4), -0.02), None)
    acc = float(d_accuracy((real, None), True)) + float(d_accuracy(fake, False))
    assert acc == pytest.approx(1.0625)
    assert float(d_stamp_auc((real, None), fake)) == 1.0


def test_unknown_adversarial_loss():
    with pytest.raises(ConfigError, match="train.adv_loss must be one of .* got 'wgan'"):
        d_loss(_out(0), _out(0), "wgan")


def test_r1_penalty_matches_autograd():
    """R1 = mean over stamps of the squared input gradient of the (map-averaged) logit."""
    d = Discriminator(channels=2, global_branch=False)
    real = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pen = r1_penalty(d, real, global_weight=0.0)
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(d(x)[0].mean() * 3, x)
    assert_allclose(float(pen.detach()), float(g.pow(2).sum(dim=(1, 2, 3)).mean()), rtol=1e-5)
    assert pen.requires_grad  # it trains D


def test_lowpass_psi_ignores_high_frequency_changes():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 32, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0  # Nyquist
    smooth = torch.ones(1, 1, 32, 32)
    noise = torch.randn(1, 1, 32, 32, generator=g)
    ident, low = SelfRegularization("identity"), SelfRegularization("lowpass", 1.5)
    assert_allclose(float(ident(x + checker, x)), 1.0)
    assert float(low(x + checker, x)) < 1e-3
    assert_allclose(float(low(x + smooth, x)), 1.0, rtol=1e-5)
    assert float(low(x + noise, x)) < 0.3 * float(ident(x + noise, x))


@pytest.mark.parametrize(("psi", "sigma", "match"), [
    ("median", 1.0, "train.reg_psi must be one of"),
    ("lowpass", 0.0, "train.reg_lowpass_sigma_px must be > 0 for psi=lowpass, got 0.0"),
])
def test_bad_psi(psi, sigma, match):
    with pytest.raises(ConfigError, match=match):
        SelfRegularization(psi, sigma)


def test_moment_loss_sees_a_shift_but_not_moment_free_texture():
    proj = MomentProjector([2.0, 0.0])
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = lambda cx: torch.asinh(50 * torch.exp(-0.5 * ((x - cx) ** 2 + (y - 7.5) ** 2) / 4))[None, None]  # noqa: E731
    assert float(moment_loss(blob(7.5), blob(7.5), proj)) == 0.0
    assert float(moment_loss(blob(8.5), blob(7.5), proj)) > 0.1
    u = proj.project_out(torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1)))
    texture = torch.asinh(torch.sinh(blob(7.5)) + u)
    assert float(moment_loss(texture, blob(7.5), proj)) < 1e-4


def _noise_stamps(scale, n=64, size=32, seed=0):
    """asinh-normalised stamps of Gaussian noise of std ``scale`` (linear units) + a bright core."""
    g = torch.Generator().manual_seed(seed)
    lin = scale * torch.randn(n, 1, size, size, generator=g)
    lin[:, :, 12:20, 12:20] += 200.0  # a galaxy inside the frame does not count
    return torch.asinh(lin)


def test_border_variance_measures_the_frame_only():
    v = border_variance(_noise_stamps(2.0), 4)
    assert v.shape == (64,)
    # 4-pixel frame of a 32x32 stamp: 448 pixels, variance 4 +- 4 * sqrt(2 / 448) per stamp
    assert_allclose(float(v.mean()), 4.0, rtol=0.03)


def test_noise_level_loss_is_zero_at_the_target_and_pushes_toward_it():
    target = border_variance(_noise_stamps(1.0, seed=1), 4).median()
    assert float(noise_level_loss(_noise_stamps(1.0, seed=1), target, 4)) == 0.0
    # 10 % too loud: log(1.21)^2 = 0.0364
    loud = _noise_stamps(1.1, seed=1)
    assert_allclose(float(noise_level_loss(loud, target, 4)), math.log(1.21) ** 2, rtol=1e-4)
    # the gradient shrinks a too-loud frame and grows a too-quiet one
    for scale, sign in ((1.1, 1.0), (0.9, -1.0)):
        z = _noise_stamps(scale, seed=1).requires_grad_(True)
        noise_level_loss(z, target, 4).backward()
        step = -1e-2 * z.grad  # one gradient-descent step
        before = border_variance(z.detach(), 4).median()
        after = border_variance(z.detach() + step, 4).median()
        assert sign * float(after - before) < 0


def _correlated_stamps(weights, n=64, size=32, seed=0):
    """asinh of white noise filtered by a cross kernel: centre 1, the 4 neighbours ``weights``."""
    g = torch.Generator().manual_seed(seed)
    w = float(weights)
    k = torch.tensor([[0.0, w, 0.0], [w, 1.0, w], [0.0, w, 0.0]]).view(1, 1, 3, 3)
    return torch.asinh(torch.nn.functional.conv2d(torch.randn(n, 1, size + 2, size + 2, generator=g), k))


def test_acf_lags_are_one_half_plane():
    lags = acf_lags(2)
    assert len(lags) == 12 and (0, 1) in lags and (1, 0) in lags and (1, -1) in lags
    assert all((-dy, -dx) not in lags for dy, dx in lags)
    assert len(acf_lags(1)) == 4


def test_border_acf_known_answers():
    """Cross kernel (1, w): lag 1 = 2w / (1 + 4w^2), lag 2 along an axis = w^2 / (1 + 4w^2),
    diagonal = 2 w^2 / (1 + 4 w^2), less the bias of subtracting each frame's own mean (about
    the sum of all correlations, (1 + 4w)^2 / (1 + 4w^2), over the 448 frame pixels); white noise
    gives 0."""
    lags = acf_lags(2)
    w = 0.3
    acf = border_acf(_correlated_stamps(w, n=256), 4, lags).mean(dim=0)
    bias = (1 + 4 * w) ** 2 / (1 + 4 * w * w) / 448
    expect = {(0, 1): 2 * w, (1, 0): 2 * w, (0, 2): w * w, (2, 0): w * w, (1, 1): 2 * w * w,
              (1, -1): 2 * w * w, (2, 2): 0.0, (1, 2): 0.0}
    # 256 stamps x ~400 frame pairs: standard error ~0.003 per lag
    for lag, num in expect.items():
        assert_allclose(float(acf[lags.index(lag)]), num / (1 + 4 * w * w) - bias, atol=0.01,
                        err_msg=str(lag))
    white = border_acf(_noise_stamps(1.0, n=256), 4, lags).mean(dim=0)
    assert float(white.abs().max()) < 0.01


def test_noise_acf_loss_is_zero_at_the_target_and_pushes_toward_it():
    lags = acf_lags(1)
    target = border_acf(_correlated_stamps(0.2, seed=1), 4, lags).median(dim=0).values
    assert float(noise_acf_loss(_correlated_stamps(0.2, seed=1), target, 4, lags)) == 0.0
    white = _noise_stamps(1.0, seed=2)
    loss = noise_acf_loss(white, target, 4, lags)
    # about the sum of the squared target correlations (white noise has none)
    assert_allclose(float(loss), float(target.pow(2).sum()), rtol=0.2)
    z = white.clone().requires_grad_(True)
    noise_acf_loss(z, target, 4, lags).backward()
    after = noise_acf_loss(z.detach() - 0.5 * z.grad, target, 4, lags)  # one descent step
    assert float(after) < float(loss)


def _asinh(lin: torch.Tensor) -> torch.Tensor:
    return torch.asinh(lin)[:, None]  # normalised stamps whose sinh is ``lin``


def test_border_shape_known_answers():
    """Gaussian noise: skewness 0, excess kurtosis 0; Gamma(4): 1 and 1.5; the centre is ignored."""
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(256, 32, 32, generator=g)
    gauss[:, 8:24, 8:24] += 100.0  # a "galaxy" inside the frame's hole changes nothing
    shape = border_shape(_asinh(gauss), 4).double().mean(dim=0)
    assert_allclose(shape.numpy(), [0.0, 0.0], atol=0.02)
    gamma = torch.from_numpy(np.random.default_rng(0).gamma(4.0, 1.0, (256, 32, 32)).astype(np.float32))
    shape = border_shape(_asinh(gamma), 4).double().mean(dim=0)
    assert abs(float(shape[0]) - 1.0) < 0.05 and abs(float(shape[1]) - 1.5) < 0.25


def test_noise_shape_loss_pushes_skewed_noise_toward_the_target():
    """Gamma(9) noise (skewness 2/3, excess kurtosis 2/3) is near a target of (2/3, 2/3), far from
    Gaussian noise's (0, 0); gradient descent moves it toward the Gaussian target."""
    g = torch.Generator().manual_seed(1)
    skewed = torch.from_numpy(np.random.default_rng(1).gamma(9.0, 1.0, (256, 32, 32)).astype(np.float32)) - 9.0
    z = _asinh(skewed).requires_grad_(True)
    assert float(noise_shape_loss(z, torch.tensor([2 / 3, 2 / 3]), 4).detach()) < 0.02
    target = torch.zeros(2)
    loss = noise_shape_loss(z, target, 4)
    assert float(loss.detach()) > 0.6
    loss.backward()
    after = noise_shape_loss(z.detach() - 0.05 * z.grad / z.grad.abs().max(), target, 4)
    assert float(after) < float(loss.detach())
    gauss = _asinh(torch.randn(64, 32, 32, generator=g))
    assert float(noise_shape_loss(gauss, target, 4)) < 0.01


def test_noise_acf_spread_loss_is_a_quantile_distance():
    """Against its own sorted correlations a batch is at ~0 (quantile interpolation only); a
    target shifted by 0.1 at every lag gives 0.1^2 per lag; gradient descent lowers it."""
    lags = acf_lags(1)
    x = _correlated_stamps(0.2, seed=3)
    own = border_acf(x, 4, lags).sort(dim=0).values
    assert float(noise_acf_spread_loss(x, own, 4, lags)) < 1e-4
    loss = noise_acf_spread_loss(x, own + 0.1, 4, lags)
    assert_allclose(float(loss), len(lags) * 0.01, rtol=0.05)
    z = x.clone().requires_grad_(True)
    noise_acf_spread_loss(z, own + 0.1, 4, lags).backward()
    assert float(noise_acf_spread_loss(z.detach() - 0.5 * z.grad, own + 0.1, 4, lags)) < float(loss)


def test_a_sky_mask_equal_to_the_frame_gives_the_frame_statistics():
    """``region`` as a mask (noise_region: sky) is the same estimator as the border frame when
    the mask is the frame; a mask that hides a source removes its effect."""
    x = _correlated_stamps(0.2, seed=4)
    lags = acf_lags(2)
    frame = torch.ones(32, 32, dtype=torch.bool)
    frame[4:28, 4:28] = False
    mask = frame.expand(x.shape[0], 32, 32)
    assert_allclose(border_variance(x, mask).numpy(), border_variance(x, 4).numpy(), rtol=1e-5)
    assert_allclose(border_acf(x, mask, lags).numpy(), border_acf(x, 4, lags).numpy(), atol=1e-6)
    assert_allclose(border_shape(x, mask).numpy(), border_shape(x, 4).numpy(), atol=1e-5)
    lin = torch.sinh(x[:, 0]).clone()
    lin[:, 0:3, 0:3] += 50.0  # a bright neighbour in the corner of the frame
    y = torch.asinh(lin)[:, None]
    sky = mask.clone()
    sky[:, 0:3, 0:3] = False
    assert float(border_variance(y, 4).median()) > 2 * float(border_variance(x, 4).median())
    assert_allclose(border_variance(y, sky).median().item(), border_variance(x, sky).median().item(), rtol=1e-6)
