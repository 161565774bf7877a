"""The SimGAN refiner R: conv3x3 -> K ResNet blocks -> conv1x1, predicting a residual.

R works in normalised units (`refinegan.normalize`), is fully convolutional (any stamp size) and
returns ``z + residual``. The last 1x1 conv starts at zero, so an untrained R is exactly the
identity. `MomentPreservingRefiner` wraps R with the moment projection
(`refinegan.model.moments`), a design that cannot change the weighted flux, centroid and
second moments of a stamp.
"""

from __future__ import annotations

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


class MomentPreservingRefiner(nn.Module):
    """R followed by the exact moment projection, in normalised units.

    R's change ``u`` in linear units (proportional to counts) is ``sinh(R(z)) - sinh(z)`` when
    R's residual is added in asinh space (``residual_space='asinh'``), or the residual itself,
    ``R(z) - z``, when it is an additive change in units of ``softening * sigma``
    (``'linear'``: a change of the noise texture costs the same on a galaxy's core as on the sky,
    and is not amplified by ``cosh(z)`` at bright pixels). The projection removes the part of
    ``u`` that would change the weighted moments, and the output is ``asinh(sinh(z) + P u)``.
    Since the per-stamp scale ``softening * sigma`` is a common factor, the moments in counts are
    preserved exactly (to float32 rounding).

    Parameters
    ----------
    refiner : Refiner
    projector : MomentProjector or None
        None turns the projection off.
    residual_space : {'asinh', 'linear'}
        Where R's residual is added [default: 'asinh'].
    """

    def __init__(self, refiner: Refiner, projector: MomentProjector | None,
                 residual_space: str = "asinh") -> None:
        super().__init__()
        if residual_space not in RESIDUAL_SPACES:
            raise ValueError(f"residual_space must be one of {RESIDUAL_SPACES}, got {residual_space!r}")
        self.refiner = refiner
        self.projector = projector
        self.residual_space = residual_space

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W)
        return self.project(z, self.refiner(z))

    def project(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Apply the moment projection to R's output ``out`` for input ``z`` (both (B, 1, H, W))."""
        if self.projector is None and self.residual_space == "asinh":
            return out
        with torch.autocast(z.device.type, enabled=False):
            z32, out32 = z.float(), out.float()
            lin = torch.sinh(z32)
            u = out32 - z32 if self.residual_space == "linear" else torch.sinh(out32) - lin
            if self.projector is not None:
                u = self.projector.project_out(u)
            return torch.asinh(lin + u)  # float32 even under autocast: keeps the moments exact
