"""History buffer of refined stamps (SimGAN section 2.4; CycleGAN's ImagePool, with explicit RNG).

D is trained on minibatches that are half current refinements and half refinements drawn from
a buffer of past ones, so R cannot re-introduce artifacts D has forgotten. After each D batch
the current refinements are added: appended while the buffer is filling, then each replaces a
uniformly drawn slot. All randomness comes from the ``torch.Generator`` given, which lives on
the buffer's device (no host syncs on CUDA) and is saved in checkpoints with `state_dict`.
"""

from __future__ import annotations

import torch

from ..errors import TrainingError

__all__ = ["ImageHistory"]


class ImageHistory:
    """A fixed-capacity buffer of (1, H, W) stamps.

    Parameters
    ----------
    capacity : int
        Number of stamps kept; 0 disables the buffer (D sees current refinements only).
    shape : (int, int, int)
        (C, H, W) of one stamp.
    generator : torch.Generator
        Source of all randomness; must live on ``device``.
    device : torch.device or str
    dtype : torch.dtype [default: float32]
    fraction : float
        Fraction of a D batch taken from the buffer once it holds enough stamps [default: 0.5].
    """

    def __init__(self, capacity: int, shape, generator: torch.Generator, device="cpu",
                 dtype=torch.float32, fraction: float = 0.5) -> None:
        if capacity < 0:
            raise TrainingError(f"history buffer capacity must be >= 0, got {capacity}")
        if not 0.0 <= fraction <= 1.0:
            raise TrainingError(f"history fraction must be in [0, 1], got {fraction}")
        self.capacity = int(capacity)
        self.fraction = float(fraction)
        self.generator = generator
        self.images = torch.zeros((self.capacity, *shape), dtype=dtype, device=device)
        self.filled = 0  # a Python int: its value follows from the call sequence, no sync

    def __len__(self) -> int:
        return self.filled

    def sample(self, k: int) -> torch.Tensor:
        """k stamps drawn uniformly (with replacement) from the filled part."""
        if k > 0 and self.filled == 0:
            raise TrainingError("cannot sample from an empty history buffer")
        idx = torch.randint(self.filled, (k,), generator=self.generator, device=self.images.device)
        return self.images[idx]

    def add(self, batch: torch.Tensor) -> None:
        """Append ``batch`` (B, C, H, W) while filling, then replace random slots."""
        if self.capacity == 0:
            return
        batch = batch.detach().to(self.images.dtype)
        free = min(self.capacity - self.filled, batch.shape[0])
        if free > 0:
            self.images[self.filled:self.filled + free] = batch[:free]
            self.filled += free
        rest = batch[free:]
        if rest.shape[0] > 0:
            idx = torch.randint(self.capacity, (rest.shape[0],), generator=self.generator,
                                device=self.images.device)
            self.images[idx] = rest

    def mix(self, current: torch.Tensor) -> torch.Tensor:
        """A D batch: ``fraction`` of it from the buffer (once it holds that many), the rest
        from ``current`` (its first stamps); then ``current`` is added to the buffer."""
        b = current.shape[0]
        k = int(round(self.fraction * b)) if self.filled >= round(self.fraction * b) else 0
        if self.capacity == 0:
            k = 0
        out = current.detach()
        if k > 0:
            out = torch.cat([out[: b - k], self.sample(k)], dim=0)
        self.add(current)
        return out

    def state_dict(self) -> dict:
        return {
            "images": self.images[: self.filled].cpu(),
            "filled": self.filled,
            "capacity": self.capacity,
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise TrainingError(
                f"checkpoint history buffer holds {state['capacity']} stamps, config asks for "
                f"{self.capacity} (train.history_size)"
            )
        self.filled = int(state["filled"])
        self.images[: self.filled] = state["images"].to(self.images.device, self.images.dtype)
        self.generator.set_state(state["rng"])
