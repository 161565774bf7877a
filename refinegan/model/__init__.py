"""Networks of the SimGAN refiner: R (`refiner`), D (`discriminator`), moment projection (`moments`).

`build_refiner` / `build_discriminator` make them from plain architecture dicts (stored in
checkpoints) with weights drawn from an explicit seed, leaving the global torch RNG untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .discriminator import Discriminator, local_map_shape
from .moments import MomentProjector, moment_basis
from .refiner import MomentPreservingRefiner, Refiner, ResBlock

__all__ = [
    "Discriminator",
    "MomentPreservingRefiner",
    "MomentProjector",
    "Refiner",
    "ResBlock",
    "build_discriminator",
    "build_refiner",
    "local_map_shape",
    "moment_basis",
]


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
