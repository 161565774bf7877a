"""Weighted image moments as a linear basis: flux, centroid and second moments.

For a weight ``W(x, y)`` the moments ``M_k = sum W p_k I`` with ``p_k`` in
``{1, x, y, x^2, y^2, xy}`` are linear in the image ``I``. Stacking them for a few weights gives a
basis ``B`` (HW, k); with ``Q`` an orthonormal basis of its span, ``u - Q Q^T u`` changes none of
these moments. ``MomentProjector`` applies that (hard constraint, used in the refiner) and
``MomentProjector.coefficients`` gives ``Q^T u`` (soft constraint, used by the moment loss).

Weights: a circular Gaussian of sigma ``s`` pixels centred on the stamp centre for each ``s > 0``
in ``weights_px``, and a flat weight (the unweighted sums) for ``s = 0``. Adaptive-moment shape
estimators (HSM) weight by a Gaussian of the galaxy's size, so a few widths bracketing the sizes
in a set keep their moments close; the paired shear test is the judge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["moment_basis", "MomentProjector"]


def moment_basis(shape: tuple[int, int], weights_px: Sequence[float], order: int = 2) -> np.ndarray:
    """Orthonormal basis (H*W, k) of the weighted-moment functionals, float64.

    Parameters
    ----------
    shape : (int, int)
        Stamp (H, W) in pixels.
    weights_px : sequence of float
        Gaussian weight sigmas in pixels; 0 means a flat weight.
    order : int
        Highest total degree of the monomials x^i y^j kept [default: 2: flux, centroid,
        second moments; 4 also pins the 3rd and 4th moments PSF-correcting estimators use].
    """
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x -= (w - 1) / 2.0
    y -= (h - 1) / 2.0
    cols = []
    for s in weights_px:
        if s > 0:
            weight = np.exp(-0.5 * (x * x + y * y) / (s * s))
            scale = s
        else:
            weight = np.ones_like(x)
            scale = max(h, w) / 2.0
        xs, ys = x / scale, y / scale
        for deg in range(order + 1):
            for i in range(deg + 1):
                cols.append((weight * xs ** (deg - i) * ys**i).ravel())
    basis = np.stack(cols, axis=1)
    q, r = np.linalg.qr(basis)
    keep = np.abs(np.diag(r)) > 1e-10 * np.abs(np.diag(r)).max()  # drop dependent columns
    return q[:, keep]


class MomentProjector:
    """Projects stamps onto the complement of the weighted-moment span (any stamp size).

    Not an ``nn.Module``: the basis is derived from the stamp shape and ``weights_px`` on first
    use (cached per shape, dtype and device) and is not part of a model's state dict.
    """

    def __init__(self, weights_px: Sequence[float], order: int = 2) -> None:
        self.weights_px = tuple(float(s) for s in weights_px)
        self.order = int(order)
        self._cache: dict = {}

    def basis(self, shape: tuple[int, int], device, dtype=torch.float32) -> torch.Tensor:
        key = (tuple(shape), str(device), dtype)
        if key not in self._cache:
            q = moment_basis(tuple(shape), self.weights_px, self.order)
            self._cache[key] = torch.as_tensor(q, dtype=dtype, device=device)
        return self._cache[key]

    def coefficients(self, u: torch.Tensor) -> torch.Tensor:
        """``Q^T u`` per stamp: (B, 1, H, W) -> (B, k)."""
        q = self.basis(u.shape[-2:], u.device, u.dtype)
        return u.reshape(u.shape[0], -1) @ q

    def project_out(self, u: torch.Tensor) -> torch.Tensor:
        """``u - Q Q^T u``: (B, 1, H, W) -> same shape, with zero weighted moments."""
        q = self.basis(u.shape[-2:], u.device, u.dtype)
        flat = u.reshape(u.shape[0], -1)
        return (flat - (flat @ q) @ q.T).reshape(u.shape)
