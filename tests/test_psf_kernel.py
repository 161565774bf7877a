"""The learned PSF kernel: identity at init, unit sum and centred, moments of K * sim kept, and the
known answer: a galaxy refined by K is the same sheared galaxy through the PSF K * psf."""

import galsim
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from refinegan.refiner.model import build_refiner
from refinegan.refiner.moments import MomentProjector

WEIGHTS = [1.5, 2.5, 4.0, 6.0, 0.0]
ARCH = {"channels": 4, "blocks": 1, "moment_weights_px": WEIGHTS, "moment_order": 4,
        "residual_space": "linear", "psf_kernel_px": 9}
SCALE = 0.2  # arcsec / pixel


def _with_weights(weights, arch=ARCH):
    """A refiner whose PSF kernel has basis weights ``weights`` and whose R is the identity."""
    m = build_refiner(arch, seed=0).requires_grad_(False)
    m.kernel_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
    return m


def test_kernel_starts_as_the_identity():
    m = build_refiner(ARCH, seed=3)
    z = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert_allclose(m(z).detach().numpy(), z.numpy(), atol=1e-6)
    psf = np.random.default_rng(0).random((9, 9)).astype(np.float32)
    psf /= psf.sum()
    assert_allclose(m.refined_psf(psf), psf, atol=1e-7)


def test_any_weights_give_a_unit_sum_centred_round_kernel():
    m = _with_weights([0.3, -0.2, 0.5])
    k = m.kernel().numpy().astype(np.float64)
    t = np.arange(9) - 4.0
    y, x = np.meshgrid(t, t, indexing="ij")
    assert_allclose(k.sum(), 1.0, rtol=1e-6)
    assert_allclose([(k * x).sum(), (k * y).sum()], [0.0, 0.0], atol=1e-6)
    # no spin-2 (it cannot shear), and the spin-4 (square) part is small next to the round one
    assert_allclose([(k * (x * x - y * y)).sum(), (k * x * y).sum()], [0.0, 0.0], atol=1e-6)
    r4 = (x * x + y * y) ** 2
    spin4 = (k * (x**4 - 6 * x * x * y * y + y**4)).sum()
    assert abs(spin4) < 0.03 * abs((k * r4).sum())
    assert (k * (x * x + y * y)).sum() > 0.1  # and it does broaden


def test_moments_of_the_kernel_convolved_sim_are_kept():
    """R's own change is moment-free relative to K * sim, which does differ from the sim."""
    m = _with_weights([0.0, 0.5, 0.0])
    with torch.no_grad():
        m.refiner.tail.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(2))
    z = torch.asinh(3.0 * torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    proj = MomentProjector(WEIGHTS, 4)
    y, base = m(z), m.base(z)
    c_y, c_b, c_z = (proj.coefficients(torch.sinh(t)) for t in (y, base, z))
    assert float((c_y - c_b).abs().max()) < 1e-4 * float(c_b.abs().max())
    assert float((c_b - c_z).abs().max()) > 0.1 * float(c_b.abs().max())


@pytest.mark.parametrize("size", [-1, 4])
def test_bad_kernel_size(size):
    with pytest.raises(ValueError, match="psf_kernel_px must be 0 or an odd"):
        build_refiner(ARCH | {"psf_kernel_px": size})


def test_checkpoint_without_the_key_has_no_kernel():
    m = build_refiner({k: v for k, v in ARCH.items() if k != "psf_kernel_px"})
    assert m.kernel() is None and not any("kernel" in k for k in m.state_dict())


def test_refined_galaxy_is_the_galaxy_through_the_refined_psf():
    """Known answer: K applied to a GalSim galaxy drawn through a Moffat equals the same galaxy
    drawn through ``refined_psf`` (K * psf) to 3e-3 of the peak, and REGAUSS with the refined PSF
    recovers the galaxy's PSF-corrected shape to 2e-3, while the sim's PSF (now too small)
    under-corrects the dilution by more than 0.02 (K is a round Gaussian of sigma 2 px)."""
    gal = galsim.Exponential(half_light_radius=0.5, flux=1000.0).shear(g1=0.05, g2=-0.03)
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    img = galsim.Convolve(gal, psf).drawImage(nx=48, ny=48, scale=SCALE).array
    psf_img = psf.drawImage(nx=25, ny=25, scale=SCALE).array
    m = _with_weights([0.0, 0.0, 1.0])  # K = a round Gaussian of sigma 2 px
    z = torch.asinh(torch.as_tensor(img, dtype=torch.float32)[None, None])
    refined = torch.sinh(m.base(z))[0, 0].numpy().astype(np.float64)
    refined_psf = m.refined_psf(psf_img).astype(np.float64)
    assert_allclose(refined_psf.sum(), 1.0, rtol=1e-6)
    ii = galsim.InterpolatedImage(galsim.Image(refined_psf, scale=SCALE))
    truth = galsim.Convolve(gal, ii).drawImage(nx=48, ny=48, scale=SCALE, method="no_pixel").array
    assert np.abs(refined - truth).max() < 3e-3 * truth.max()
    assert_allclose(refined.sum(), img.sum(), rtol=1e-4)

    def regauss(image, p):
        r = galsim.hsm.EstimateShear(galsim.Image(image, scale=SCALE), galsim.Image(p, scale=SCALE),
                                     shear_est="REGAUSS")
        return np.array([r.corrected_e1, r.corrected_e2])

    e_sim = regauss(img, psf_img)
    assert_allclose(regauss(refined, refined_psf), e_sim, atol=2e-3)
    assert np.abs(regauss(refined, psf_img) - e_sim).max() > 0.02
