"""The discriminator D: a local patch branch (a map of logits) plus an optional galaxy-scale branch.

Local branch (SimGAN section 2.3): conv3x3(1->C) -> conv3x3 stride 2 (C->2C) -> conv3x3 (2C->2C)
-> conv1x1 (2C->1); one logit per 9x9-pixel receptive-field patch on a grid of stride 2, so the
map has shape (B, 1, ceil(H/2), ceil(W/2)). The adversarial loss is averaged over the map.

Global branch (beyond the paper): two more stride-2 3x3 convs on the local features
(receptive field 21 pixels, about a galaxy at 0.2"/pixel) and a global average pool feeding a
linear layer: one logit per stamp, for galaxy-scale differences (knots, PSF wings) the local
patches cannot see. Spectral normalisation of every layer is an option.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

__all__ = ["Discriminator", "local_map_shape"]

LEAKY_SLOPE = 0.2  # LeakyReLU slope, DCGAN's choice


def local_map_shape(h: int, w: int) -> tuple[int, int]:
    """Shape of the local logit map for an (h, w) stamp (one stride-2 conv, padding 1)."""
    return (h + 1) // 2, (w + 1) // 2


class Discriminator(nn.Module):
    """Local patch discriminator with an optional global branch.

    Parameters
    ----------
    channels : int
        Width C of the first layer [default: 32].
    global_branch : bool
        Add the galaxy-scale branch [default: True].
    spectral_norm : bool
        Spectral normalisation on every conv / linear layer [default: False].

    ``forward`` returns ``(local, global)``: logits of shape (B, 1, ceil(H/2), ceil(W/2)) and
    (B, 1), the latter None without the global branch.
    """

    def __init__(self, channels: int = 32, global_branch: bool = True, spectral_norm: bool = False) -> None:
        super().__init__()
        c = int(channels)
        wrap = _sn if spectral_norm else (lambda m: m)
        act = lambda: nn.LeakyReLU(LEAKY_SLOPE)  # noqa: E731
        self.local = nn.Sequential(
            wrap(nn.Conv2d(1, c, 3, padding=1)), act(),
            wrap(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)), act(),
            wrap(nn.Conv2d(2 * c, 2 * c, 3, padding=1)), act(),
        )
        self.local_head = wrap(nn.Conv2d(2 * c, 1, 1))
        self.glob = None
        self.global_head = None
        if global_branch:
            self.glob = nn.Sequential(
                wrap(nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)), act(),
                wrap(nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)), act(),
            )
            self.global_head = wrap(nn.Linear(2 * c, 1))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.local(z)  # (B, 2C, H/2, W/2)
        local = self.local_head(h)  # (B, 1, H/2, W/2)
        if self.glob is None:
            return local, None
        g = self.glob(h).mean(dim=(2, 3))  # (B, 2C)
        return local, self.global_head(g)  # (B, 1)
