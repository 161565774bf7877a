"""R and D shapes, identity at init, determinism, and the exact moment projection."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from refinegan.refiner.discriminator import Discriminator, local_map_shape
from refinegan.refiner.model import Refiner, build_discriminator, build_refiner
from refinegan.refiner.moments import MomentProjector, moment_basis

ARCH = {"channels": 8, "blocks": 2, "moment_weights_px": [2.0, 4.0, 0.0]}
DARCH = {"channels": 8, "global_branch": True, "spectral_norm": False}


@pytest.mark.parametrize("size", [48, 64, 37])
def test_refiner_keeps_shape_any_size(size):
    r = build_refiner(ARCH, seed=1)
    z = torch.randn(3, 1, size, size, generator=torch.Generator().manual_seed(0))
    assert r(z).shape == z.shape


def test_refiner_starts_as_identity():
    r = Refiner(channels=8, blocks=2)
    z = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r(z), z)


@pytest.mark.parametrize(("size", "global_branch"), [(48, True), (64, False), (33, True)])
def test_discriminator_outputs_a_logit_map(size, global_branch):
    d = Discriminator(channels=8, global_branch=global_branch)
    local, glob = d(torch.zeros(5, 1, size, size))
    assert local.shape == (5, 1, *local_map_shape(size, size))
    assert local.shape[-1] == (size + 1) // 2
    assert (glob is None) == (not global_branch)
    if global_branch:
        assert glob.shape == (5, 1)


def test_spectral_norm_option_changes_parametrisation():
    d = build_discriminator(DARCH | {"spectral_norm": True}, seed=0)
    names = list(d.state_dict())
    assert any("parametrizations" in n for n in names)


def test_build_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = build_discriminator(DARCH, seed=5), build_discriminator(DARCH, seed=5)
    c = build_discriminator(DARCH, seed=6)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def _moments(images, weights_px):
    """Direct weighted moments sum W p I (not through the basis)."""
    h, w = images.shape[-2:]
    y, x = np.mgrid[0:h, 0:w] - np.array([(h - 1) / 2, (w - 1) / 2])[:, None, None]
    out = []
    for s in weights_px:
        wt = np.exp(-0.5 * (x * x + y * y) / s**2) if s > 0 else np.ones((h, w))
        for p in (1, x, y, x * x, y * y, x * y):
            out.append((images * wt * p).sum(axis=(-2, -1)))
    return np.stack(out, -1)


def test_moment_basis_is_orthonormal():
    q = moment_basis((24, 24), [2.0, 0.0])
    assert q.shape == (576, 12)
    assert_allclose(q.T @ q, np.eye(12), atol=1e-12)


def test_projection_removes_exactly_the_weighted_moments(rng):
    weights = [2.0, 4.0, 0.0]
    u = torch.from_numpy(rng.normal(size=(4, 1, 20, 20)))
    p = MomentProjector(weights).project_out(u)
    assert_allclose(_moments(p.numpy()[:, 0], weights), 0, atol=1e-10)
    # it changes little else: 18 of 400 dimensions
    assert float((p - u).pow(2).sum() / u.pow(2).sum()) < 0.15


@pytest.mark.parametrize("space", ["asinh", "linear"])
def test_moment_preserving_refiner_keeps_moments_in_counts(space):
    """Even a far-from-identity R keeps flux, centroid and second moments of sinh(z)."""
    torch.manual_seed(0)
    r = build_refiner(ARCH | {"residual_space": space}, seed=3)
    torch.nn.init.normal_(r.refiner.tail.weight, std=0.3, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    z = torch.asinh(torch.randn(3, 1, 32, 32, generator=g, dtype=torch.float64).float() + 20 * torch.exp(
        -0.5 * ((torch.arange(32) - 15.5) ** 2)[None, :] / 9 - 0.5 * ((torch.arange(32) - 15.5) ** 2)[:, None] / 9))
    with torch.no_grad():
        out = r(z)
        raw = r.refiner(z)
    before = _moments(torch.sinh(z).double().numpy()[:, 0], ARCH["moment_weights_px"])
    after = _moments(torch.sinh(out).double().numpy()[:, 0], ARCH["moment_weights_px"])
    raw_lin = torch.sinh(raw) if space == "asinh" else torch.sinh(z) + (raw - z)
    unprojected = _moments(raw_lin.double().numpy()[:, 0], ARCH["moment_weights_px"])
    scale = np.abs(before).max()
    assert np.abs(unprojected - before).max() > 1e-2 * scale  # R alone moves them
    assert_allclose(after, before, atol=2e-5 * scale)  # the projection puts them back


def test_linear_residual_is_an_additive_change_in_sigma_units():
    """residual_space linear: sinh(out) = sinh(z) + R's residual, on faint and bright pixels alike
    (asinh space would scale the same residual by cosh(z) ~ 100 on a 100-sigma core)."""
    arch = {"channels": 8, "blocks": 1, "moment_weights_px": [], "residual_space": "linear"}
    r = build_refiner(arch, seed=3)
    torch.nn.init.normal_(r.refiner.tail.weight, std=0.3, generator=torch.Generator().manual_seed(1))
    z = torch.asinh(torch.linspace(-3, 300, 16 * 16).reshape(1, 1, 16, 16))
    with torch.no_grad():
        out, resid = r(z), r.refiner.residual(z)
    assert_allclose(torch.sinh(out) - torch.sinh(z), resid, atol=2e-3 * 300 * 1e-2, rtol=1e-3)
    assert float(resid.abs().max()) > 1e-2  # R is far from the identity here
    with pytest.raises(ValueError, match="residual_space"):
        build_refiner(arch | {"residual_space": "log"})


def test_old_checkpoint_arch_defaults_to_asinh_residual():
    assert build_refiner(ARCH).residual_space == "asinh"


def test_flops_per_pixel():
    r = Refiner(channels=32, blocks=4)
    assert r.flops_per_pixel() == 2 * (9 * 32 + 4 * 2 * 9 * 32 * 32 + 32)


def test_local_patch_receptive_field_is_9_pixels():
    d = Discriminator(channels=4, global_branch=False)
    z = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    local, _ = d(z)
    (g,) = torch.autograd.grad(local[0, 0, 8, 8], z)  # patch centred on pixel (16, 16)
    rows = torch.nonzero(g[0, 0].abs().sum(dim=1)).flatten()
    cols = torch.nonzero(g[0, 0].abs().sum(dim=0)).flatten()
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (12, 20, 12, 20)
