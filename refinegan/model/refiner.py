"""The SimGAN refiner R: conv3x3 -> K ResNet blocks -> conv1x1, predicting a residual.

R works in normalised units (`refinegan.normalize`), is fully convolutional (any stamp size) and
returns ``z + residual``. The last 1x1 conv starts at zero, so an untrained R is exactly the
identity. `MomentPreservingRefiner` wraps R with the moment projection
(`refinegan.model.moments`), a design that cannot change the weighted flux, centroid and
second moments of a stamp. With a PSF kernel (``psf_kernel_px > 0``) the moments kept are those
of the sim stamp convolved with a learned, unit-sum kernel K: R may then change the PSF, by a
known operator, so the refined stamp is the same sheared galaxy through the PSF ``K * psf``
(`MomentPreservingRefiner.refined_psf`), and its shear label stays true.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .moments import MomentProjector

__all__ = ["ResBlock", "Refiner", "MomentPreservingRefiner", "RESIDUAL_SPACES"]


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
    """

    def __init__(self, channels: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.channels = int(channels)
        self.blocks_n = int(blocks)
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.tail.weight)  # start as the identity map
        nn.init.zeros_(self.tail.bias)

    def residual(self, z: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 1, H, W)
        return self.tail(self.blocks(F.relu(self.head(z))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.residual(z)

    def flops_per_pixel(self) -> int:
        """Multiply-adds x 2 per output pixel of one forward pass (convolutions only)."""
        c = self.channels
        return 2 * (9 * c + self.blocks_n * 2 * 9 * c * c + c)


RESIDUAL_SPACES = ("asinh", "linear")


def _kernel_constraint_basis(size: int) -> torch.Tensor:
    """Orthonormal basis (size*size, 3) of {1, x, y} on a centred size x size grid."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    y, x = np.meshgrid(t, t, indexing="ij")
    q, _ = np.linalg.qr(np.stack([np.ones(size * size), x.ravel(), y.ravel()], axis=1))
    return torch.as_tensor(q, dtype=torch.float32)


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

    With ``psf_kernel_px = k > 0`` the base is ``b = K * sinh(z)``: a learned k x k kernel
    ``K = delta + Pi(S theta)``, ``S`` the average over the 8 symmetries of the square and ``Pi``
    removing the sum, so K keeps flux and centroid (unit sum, centred), is round up to a spin-4
    part (no spin 1-3: it cannot shear the PSF) and starts as the identity. Free, the kernel
    learned a lopsided pattern (additive shear bias c2 = 0.012); point-symmetric, an elliptical
    one along the mock PSF's strut that made the galaxies' HSM g1 distribution 7x wider than the
    sim-mock distance (docs/benchmarks.md). One K for every
    stamp, applied in counts, is a change of PSF: the refined stamp is the sim's galaxy, with
    its shear, through ``K * psf`` (`refined_psf`), plus R's moment-free change. This lets R give
    the sims the target's PSF size and shape, which the moment projection alone forbids (it
    pins the sim PSF's moments, docs/refiner.md).

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
            k = self.psf_kernel_px
            self.kernel_theta = nn.Parameter(torch.zeros(k, k))
            self.register_buffer("_kernel_q", _kernel_constraint_basis(k), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W)
        return self.project(z, self.refiner(z))

    def kernel(self) -> torch.Tensor | None:
        """The PSF kernel K (k, k), unit sum and centred, or None without one."""
        if not self.psf_kernel_px:
            return None
        k = self.psf_kernel_px
        theta = self.kernel_theta.float()
        # the symmetries of the square (4 rotations, each also transposed): K has no spin-1, 2 or 3
        # part, so it changes the PSF's size and profile but cannot shear or shift it
        turns = [torch.rot90(theta, k, (0, 1)) for k in range(4)]
        theta = torch.stack(turns + [t.T for t in turns]).mean(dim=0).reshape(-1)
        q = self._kernel_q.to(theta.device)
        delta = torch.zeros(k * k, device=theta.device)
        delta[k * k // 2] = 1.0
        return (delta + theta - q @ (q.T @ theta)).reshape(k, k)

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
        if not self.psf_kernel_px:
            return z
        with torch.autocast(z.device.type, enabled=False):
            return torch.asinh(self._base_linear(torch.sinh(z.float())))

    def project(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Apply the moment projection to R's output ``out`` for input ``z`` (both (B, 1, H, W))."""
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
