"""torchrun / DistributedDataParallel helpers.

``init_distributed()`` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and starts the process group (NCCL with CUDA,
gloo otherwise); without them it does nothing and the run is single-process. Everything else
asks ``dist_info()``, which reads the live process group, so code never threads a rank around.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: Global rank.
        world_size: Number of processes.
        local_rank: Rank on this machine (the CUDA device index under torchrun).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 (the one that logs and checkpoints)."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current process's rank and world size (single-process when no group is running)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
    )


def init_distributed(backend: str | None = None) -> DistInfo:
    """Start the process group from torchrun's environment variables, if they are set.

    Args:
        backend: ``"nccl"``, ``"gloo"``; None picks NCCL when CUDA is available, else gloo.

    Returns:
        The resulting ``DistInfo`` (single-process when ``WORLD_SIZE`` is unset or 1).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist_info()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist_info()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place (a no-op in a single process).

    Args:
        tensor: The tensor (on the device the backend expects).

    Returns:
        The same tensor, now holding the sum.
    """
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup_distributed(synchronize: bool = True) -> None:
    """Destroy the process group if one is running.

    Args:
        synchronize: Wait at a barrier first, so that no process closes its connections while
            a peer is still working (rank 0 writing its results) and every process tears down
            together. False skips it, for a process leaving on an error, whose peers may never
            reach the barrier.
    """
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
