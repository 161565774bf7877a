"""The small pixel CNN that tells two sets of stamps apart: compare's `cnn_pixels` test
(`refinegan.compare.classifiers`) and the training's harm check (`refinegan.refiner.harm_check`)
train the same network, so the check at the end of training and the compare stage measure alike.
"""

from __future__ import annotations

__all__ = ["pixel_cnn"]


def pixel_cnn(c: int):
    """The pixel classifier: conv3x3 (1->c), two stride-2 conv3x3 (->2c), mean and max pooled,
    a linear logit; (B, 1, H, W) -> (B, 1)."""
    import torch
    from torch import nn

    class _PoolCat(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 2C)
            return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
        _PoolCat(), nn.Linear(4 * c, 1),
    )
