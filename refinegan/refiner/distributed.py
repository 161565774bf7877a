"""Multi-process training with torch.distributed (DistributedDataParallel).

Launch with torchrun, which sets RANK, LOCAL_RANK and WORLD_SIZE::

    torchrun --nproc_per_node 4 -m refinegan train --config C --sim S... --real R --out DIR

Every rank holds the whole (small) dataset, draws the same global batch indices from the same
generator and works on its 1/WORLD_SIZE slice; DDP averages the gradients, so a step equals the
single-process step on the same global batch (up to float summation order). The history buffer
is kept identical on every rank by gathering the refined stamps before mixing. Only rank 0
writes files. Backend: NCCL on CUDA, gloo on CPU (tests/test_distributed.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["World", "init_world", "SINGLE"]


@dataclass(frozen=True)
class World:
    """Where this process stands in a (possibly one-process) training job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, n: int) -> slice:
        """This rank's part of a global batch of n (n divisible by size)."""
        b = n // self.size
        return slice(self.rank * b, (self.rank + 1) * b)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``t`` along dim 0, in rank order."""
        if not self.distributed:
            return t
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average of ``t`` over ranks (in place on a copy)."""
        if not self.distributed:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t / self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = World()


def init_world(device_name: str) -> World:
    """Join the process group torchrun describes in the environment (or return `SINGLE`).

    ``device_name`` is the resolved training device type (``cpu`` or ``cuda``): NCCL is used on
    CUDA, gloo on CPU.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except KeyError as err:
        raise ConfigError(f"WORLD_SIZE={size} but {err.args[0]} is not set: launch with torchrun") from None
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_name == "cuda" else "gloo")
    return World(rank=rank, size=size, local_rank=local_rank)
