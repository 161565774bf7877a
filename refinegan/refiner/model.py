"""The SimGAN refiner R: conv3x3 -> K ResNet blocks -> conv1x1, predicting a residual.

R works in normalised units (`refinegan.refiner.normalize`), is fully convolutional (any stamp size) and
returns ``z + residual``. The last 1x1 conv starts at zero, so an untrained R is exactly the
identity. `MomentPreservingRefiner` wraps R with the moment projection
(`refinegan.refiner.moments`), a design that cannot change the weighted flux, centroid and
second moments of a stamp. With a PSF kernel (``psf_kernel_px > 0``) the moments kept are those
of the sim stamp convolved with a learned, unit-sum kernel K: R may then change the PSF, by a
known operator, so the refined stamp is the same sheared galaxy through the PSF ``K * psf``
(`MomentPreservingRefiner.refined_psf`), and its shear label stays true.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .discriminator import Discriminator
from .moments import MomentProjector

__all__ = ["ResBlock", "Refiner", "MomentPreservingRefiner", "RESIDUAL_SPACES", "build_refiner",
           "build_discriminator"]


class ResBlock(nn.Module):
    """Two 3x3 convs with a skip connection (SimGAN / ResNet basic block, no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return F.relu(h + self.conv2(F.relu(self.conv1(h))))


class Refiner(nn.Module):
    """conv3x3(1->C) -> K x ResBlock(C) -> conv1x1(C->1); output = input + residual.

    Parameters
    ----------
    channels : int
        Feature channels C [default: 32].
    blocks : int
        Number of ResNet blocks K [default: 4].
    latent_dim : int
        Extra input channels: a per-stamp latent code, constant over the stamp (`with_latent`),
        so R can give each stamp its own texture, e.g. the stamp-to-stamp scatter of a coadd's
        noise correlation; the image is channel 0 [default: 0].
    """

    def __init__(self, channels: int = 32, blocks: int = 4, latent_dim: int = 0) -> None:
        super().__init__()
        self.channels = int(channels)
        self.blocks_n = int(blocks)
        self.latent_dim = int(latent_dim)
        self.head = nn.Conv2d(1 + self.latent_dim, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.tail.weight)  # start as the identity map
        nn.init.zeros_(self.tail.bias)

    def residual(self, z: torch.Tensor) -> torch.Tensor:  # (B, 1 + latent_dim, H, W) -> (B, 1, H, W)
        return self.tail(self.blocks(F.relu(self.head(z))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :1] + self.residual(z)

    def flops_per_pixel(self) -> int:
        """Multiply-adds x 2 per output pixel of one forward pass (convolutions only)."""
        c = self.channels
        return 2 * (9 * c + self.blocks_n * 2 * 9 * c * c + c)


RESIDUAL_SPACES = ("asinh", "linear")


# Gaussian sigmas of the PSF kernel's basis, in units of its radius (size // 2): from 9 x 9 on, each
# sampled Gaussian is round to 2 % in its r^4 moment (narrower ones are a 5-point cross on the
# pixel grid, wider ones are squared off by the cut)
KERNEL_SIGMAS = (0.2, 0.33, 0.5)


def kernel_basis(size: int) -> torch.Tensor:
    """(J, size, size) basis ``G_j - delta`` of the round PSF kernel, float32.

    ``G_j``: a circular Gaussian of sigma ``KERNEL_SIGMAS[j] * (size // 2)`` pixels, cut at the
    radius ``size // 2 + 0.5`` (a disc, so the cut adds no square, spin-4 pattern), unit sum.
    """
    radius = size // 2
    t = np.arange(size, dtype=np.float64) - radius
    r2 = t[:, None] ** 2 + t[None, :] ** 2
    delta = np.zeros((size, size))
    delta[radius, radius] = 1.0
    out = []
    for f in KERNEL_SIGMAS:
        g = np.exp(-0.5 * r2 / (f * radius) ** 2) * (r2 <= (radius + 0.5) ** 2)
        out.append(g / g.sum() - delta)
    return torch.as_tensor(np.stack(out), dtype=torch.float32)


class MomentPreservingRefiner(nn.Module):
    """R followed by the exact moment projection, in normalised units.

    R's change ``u`` in linear units (proportional to counts) is ``sinh(R(z)) - sinh(z)`` when
    R's residual is added in asinh space (``residual_space='asinh'``), or the residual itself,
    ``R(z) - z``, when it is an additive change in units of ``softening * sigma``
    (``'linear'``: a change of the noise texture costs the same on a galaxy's core as on the sky,
    and is not amplified by ``cosh(z)`` at bright pixels). The projection removes the part of
    ``u`` that would change the weighted moments, and the output is ``asinh(b + P u)`` with the
    base ``b = sinh(z)``. Since the per-stamp scale ``softening * sigma`` is a common factor, the
    moments in counts are preserved exactly (to float32 rounding).

    With ``psf_kernel_px = k > 0`` the base is ``b = K * sinh(z)``: one learned, round k x k kernel
    ``K = delta + sum_j w_j (G_j - delta)`` for every stamp, ``G_j`` circular Gaussians of a few
    widths (`kernel_basis`), so K has unit sum, is centred and round (it changes the PSF's size
    and radial profile but cannot shear or shift it) and starts as the identity (``w = 0``).
    Applied in counts, K is a change of PSF: the refined stamp is the sim's galaxy, with its
    shear, through ``K * psf`` (`refined_psf`), plus R's moment-free change. This lets R give the
    sims the target's PSF size, which the moment projection alone forbids (it pins the sim PSF's
    moments, docs/refiner.md). A free k x k kernel learned a lopsided pattern (additive shear
    bias c2 = 0.012), a point-symmetric one an elongation along the mock PSF's strut, and one with
    the square's symmetries a spin-4 pattern that moved m1 by -4.6 % and m2 by -0.7 %
    (docs/benchmarks.md).

    Parameters
    ----------
    refiner : Refiner
    projector : MomentProjector or None
        None turns the projection off.
    residual_space : {'asinh', 'linear'}
        Where R's residual is added [default: 'asinh'].
    psf_kernel_px : int
        Side of the learned PSF kernel in pixels, odd; 0 = none [default: 0].
    """

    def __init__(self, refiner: Refiner, projector: MomentProjector | None,
                 residual_space: str = "asinh", psf_kernel_px: int = 0) -> None:
        super().__init__()
        if residual_space not in RESIDUAL_SPACES:
            raise ValueError(f"residual_space must be one of {RESIDUAL_SPACES}, got {residual_space!r}")
        if psf_kernel_px < 0 or (psf_kernel_px and psf_kernel_px % 2 == 0):
            raise ValueError(f"psf_kernel_px must be 0 or an odd number of pixels, got {psf_kernel_px}")
        self.refiner = refiner
        self.projector = projector
        self.residual_space = residual_space
        self.psf_kernel_px = int(psf_kernel_px)
        if self.psf_kernel_px:
            self.register_buffer("_kernel_basis", kernel_basis(self.psf_kernel_px), persistent=False)
            self.kernel_weights = nn.Parameter(torch.zeros(len(KERNEL_SIGMAS)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, 1 + latent_dim, H, W) -> (B, 1, H, W)
        return self.project(z, self.refiner(z))

    @property
    def latent_dim(self) -> int:
        return self.refiner.latent_dim

    @staticmethod
    def with_latent(z: torch.Tensor, latent: torch.Tensor | None) -> torch.Tensor:
        """``z`` (B, 1, H, W) with the latent codes (B, d) appended as constant channels."""
        if latent is None or latent.shape[1] == 0:
            return z
        lat = latent.to(device=z.device, dtype=z.dtype)[:, :, None, None].expand(-1, -1, *z.shape[-2:])
        return torch.cat([z, lat], dim=1)

    def kernel(self) -> torch.Tensor | None:
        """The PSF kernel K (k, k), unit sum, centred and round, or None without one."""
        if not self.psf_kernel_px:
            return None
        k = self.psf_kernel_px
        basis = self._kernel_basis.to(self.kernel_weights.device)
        delta = torch.zeros(k, k, device=basis.device)
        delta[k // 2, k // 2] = 1.0
        return delta + torch.tensordot(self.kernel_weights.float(), basis, dims=1)

    def _base_linear(self, lin: torch.Tensor) -> torch.Tensor:
        kern = self.kernel()
        if kern is None:
            return lin
        # circular padding: the stamp's flux is kept exactly (sum K = 1), and the edge pixels see
        # real noise of the right level from the opposite edge (zero padding would lower it there)
        r = self.psf_kernel_px // 2
        return F.conv2d(F.pad(lin, (r, r, r, r), mode="circular"), kern.view(1, 1, *kern.shape))

    def base(self, z: torch.Tensor) -> torch.Tensor:
        """The stamp whose moments the refined stamp keeps: ``asinh(K * sinh(z))`` (``z`` itself
        without a kernel), (B, 1, H, W)."""
        z = z[:, :1]
        if not self.psf_kernel_px:
            return z
        with torch.autocast(z.device.type, enabled=False):
            return torch.asinh(self._base_linear(torch.sinh(z.float())))

    def project(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Apply the moment projection to R's output ``out`` (B, 1, H, W) for input ``z`` (its
        channel 0 is the stamp)."""
        z = z[:, :1]
        if self.projector is None and self.residual_space == "asinh" and not self.psf_kernel_px:
            return out
        with torch.autocast(z.device.type, enabled=False):
            z32, out32 = z.float(), out.float()
            lin = torch.sinh(z32)
            u = out32 - z32 if self.residual_space == "linear" else torch.sinh(out32) - lin
            if self.projector is not None:
                u = self.projector.project_out(u)
            return torch.asinh(self._base_linear(lin) + u)  # float32 even under autocast

    @torch.no_grad()
    def refined_psf(self, psf: np.ndarray) -> np.ndarray:
        """The PSF of refined stamps, ``K * psf`` for a PSF image (h, w) or stack (N, h, w).

        Unit sum again after the convolution (same size as ``psf``; K's reach past the image
        edge is cut off). Without a kernel, ``psf`` itself.
        """
        kern = self.kernel()
        if kern is None:
            return psf
        p = torch.as_tensor(np.asarray(psf, dtype=np.float32))
        stack = p.reshape(-1, 1, *p.shape[-2:])
        r = self.psf_kernel_px // 2
        out = F.conv2d(F.pad(stack, (r, r, r, r)), kern.cpu().view(1, 1, *kern.shape))
        out = out / out.sum(dim=(-2, -1), keepdim=True)
        return out.reshape(p.shape).numpy().astype(np.float32)


def _seeded(seed: int, factory):
    """Build a module with weights from ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory()


def build_refiner(arch: Mapping, seed: int = 0) -> nn.Module:
    """R (wrapped in the moment projection unless ``arch['moment_weights_px']`` is empty).

    ``arch`` keys: ``channels``, ``blocks``, ``moment_weights_px`` (list of Gaussian weight
    sigmas in pixels, 0 = flat; empty = no projection), ``moment_order`` (highest monomial degree,
    default 2), ``residual_space`` (``asinh`` or ``linear``, default ``asinh``: checkpoints
    written before the key existed), ``psf_kernel_px`` (side of the learned PSF kernel, 0 = none,
    the default for checkpoints without the key), ``latent_dim`` (per-stamp latent channels,
    default 0).
    """
    net = _seeded(seed, lambda: Refiner(arch["channels"], arch["blocks"], int(arch.get("latent_dim", 0))))
    weights = list(arch.get("moment_weights_px") or [])
    order = int(arch.get("moment_order", 2))
    return MomentPreservingRefiner(net, MomentProjector(weights, order) if weights else None,
                                   arch.get("residual_space", "asinh"), int(arch.get("psf_kernel_px", 0)))


def build_discriminator(arch: Mapping, seed: int = 0) -> Discriminator:
    """D from ``arch`` keys ``channels``, ``global_branch``, ``spectral_norm``."""
    return _seeded(
        seed,
        lambda: Discriminator(arch["channels"], arch["global_branch"], arch["spectral_norm"]),
    )
