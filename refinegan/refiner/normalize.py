"""Noise-sigma + asinh normalisation of stamps, and its inverse.

A stamp ``x`` (counts) with per-stamp noise sigma ``s`` (counts) becomes::

    z = asinh(x / (softening * s))          # dimensionless, background noise std 0.797 (asinh of N(0, 1))

and ``x = softening * s * sinh(z)`` brings a (refined) ``z`` back to counts. Each stamp is
divided by its own domain's noise sigma, so the refiner sees noise of unit scale in both domains
and a refined stamp returns to the physical units (and flux scale) of the sim stamp it came
from. The `Normalization` travels inside the model checkpoint; ``refine`` refuses a file it
cannot normalise the way the model was trained.

Where the sigma comes from (``sigma_source``):

- ``label``: the ``/labels/noise_sigma`` of the file (simulated sets carry it);
- ``estimate``: a robust estimate from the stamp's border pixels (MAD of a frame of
  ``border_px`` pixels, scaled to a Gaussian sigma);
- ``auto``: the label when the file has one with all values > 0, else the estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import ContractError
from ..noise import border_sigma

__all__ = [
    "NORM_VERSION",
    "SIGMA_SOURCES",
    "Normalization",
    "stamp_sigmas",
]

NORM_VERSION = 1  # bump when the transform changes: refine refuses other versions
SIGMA_SOURCES = ("auto", "label", "estimate")
NOISE_LABEL = "noise_sigma"


@dataclass(frozen=True)
class Normalization:
    """The stamp transform a model was trained with.

    Parameters
    ----------
    softening : float
        asinh scale in units of the noise sigma [default: 1]: pixels below ``softening * s`` are
        transformed linearly, brighter ones logarithmically.
    sigma_source : {'auto', 'label', 'estimate'}
        Where each stamp's noise sigma comes from [default: 'auto'].
    border_px : int
        Width in pixels of the border frame used by the estimate [default: 4].
    version : int
        Transform version [default: `NORM_VERSION`].
    """

    softening: float = 1.0
    sigma_source: str = "auto"
    border_px: int = 4
    version: int = NORM_VERSION

    def __post_init__(self) -> None:
        if not (np.isfinite(self.softening) and self.softening > 0):
            raise ContractError(f"normalization softening must be > 0, got {self.softening!r}")
        if self.sigma_source not in SIGMA_SOURCES:
            raise ContractError(
                f"normalization sigma_source must be one of {SIGMA_SOURCES}, got {self.sigma_source!r}"
            )
        if self.border_px < 1:
            raise ContractError(f"normalization border_px must be >= 1, got {self.border_px}")

    @staticmethod
    def _scale(x, sigma, softening: float):
        """(N,) sigma -> broadcastable (N, 1, ..., 1) scale in the type of ``x``."""
        shape = (-1,) + (1,) * (x.ndim - 1)
        if isinstance(x, torch.Tensor):
            s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        else:
            s = np.asarray(sigma, dtype=x.dtype)
        return s.reshape(shape) * softening

    def forward(self, x, sigma):
        """Counts -> normalised units. ``x`` (N, ...) array or tensor, ``sigma`` (N,) counts."""
        scaled = x / self._scale(x, sigma, self.softening)
        return torch.asinh(scaled) if isinstance(x, torch.Tensor) else np.arcsinh(scaled)

    def inverse(self, z, sigma):
        """Normalised units -> counts (the exact inverse of `forward`)."""
        lin = torch.sinh(z) if isinstance(z, torch.Tensor) else np.sinh(z)
        return lin * self._scale(z, sigma, self.softening)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "checkpoint") -> Normalization:
        """Rebuild from `to_dict` output, refusing unknown versions or keys."""
        version = d.get("version")
        if version != NORM_VERSION:
            raise ContractError(
                f"{where}: normalization version {version!r} is not the one this refinegan "
                f"implements ({NORM_VERSION}); retrain the model or use a matching refinegan"
            )
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ContractError(f"{where}: unknown normalization field(s) {sorted(unknown)}")
        return cls(**dict(d))

    def sigmas(self, images: np.ndarray, labels: Mapping[str, np.ndarray], where: str) -> np.ndarray:
        """Per-stamp noise sigma (counts), float64 (N,). See `stamp_sigmas`."""
        return stamp_sigmas(images, labels, self.sigma_source, self.border_px, where)


def stamp_sigmas(
    images: np.ndarray,
    labels: Mapping[str, np.ndarray],
    source: str = "auto",
    border_px: int = 4,
    where: str = "stamps",
) -> np.ndarray:
    """Per-stamp noise sigma in counts, float64 (N,), from the label or the border estimate.

    Raises
    ------
    ContractError
        If ``source='label'`` and the label is missing, or a sigma is not finite and > 0 (for
        example noiseless sims, ``sim.noise.sigma = 0``, which cannot be noise-normalised).
    """
    n = np.asarray(images).shape[0]
    label = labels.get(NOISE_LABEL) if labels is not None else None
    if source == "label" and label is None:
        raise ContractError(
            f"{where}: normalization uses /labels/{NOISE_LABEL} but the file has no such label"
        )
    use_label = label is not None and source in ("label", "auto")
    if use_label:
        sigma = np.asarray(label, dtype=np.float64)
        if source == "auto" and not np.all(np.isfinite(sigma) & (sigma > 0)):
            use_label = False
    if not use_label:
        sigma = border_sigma(images, border_px)
    if sigma.shape != (n,):
        raise ContractError(f"{where}: noise sigma must have shape ({n},), got {sigma.shape}")
    bad = ~(np.isfinite(sigma) & (sigma > 0))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        what = f"label {NOISE_LABEL}" if use_label else "border estimate"
        raise ContractError(
            f"{where}: noise sigma ({what}) must be finite and > 0, got {sigma[i]!r} for stamp "
            f"{i} ({int(bad.sum())} bad); noiseless stamps cannot be noise-normalised"
        )
    return sigma
