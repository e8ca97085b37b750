"""Splitting sampling and likelihood work across ``torchrun`` processes.

Each process takes a contiguous shard of the work, runs it with no collective
communication at all (so ranks may take different numbers of solver steps without
waiting on each other: no deadlock), and the results are gathered once at the end.
With per-sample error control in the adaptive solver a sample's likelihood does not
depend on its shard, so the gathered result equals the single-process one.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: torch.device | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (nccl for CUDA devices, else gloo); ``(rank, world_size)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        if cuda and device is not None and device.index is not None:
            torch.cuda.set_device(device)  # nccl's collectives run on the current device
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shard(n: int, rank: int, world: int) -> slice:
    """The contiguous part of ``range(n)`` that ``rank`` of ``world`` processes handles."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return slice(start, start + per + (1 if rank < extra else 0))


def gather_cat(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """Concatenate every rank's tensor (rank order, sizes may differ) on every rank, on the CPU."""
    if world <= 1:
        return tensor
    parts: list = [None] * world
    dist.all_gather_object(parts, tensor.detach().cpu())
    return torch.cat(parts)


def gather_sum(value: float, world: int) -> float:
    if world <= 1:
        return value
    parts: list = [None] * world
    dist.all_gather_object(parts, float(value))
    return float(sum(parts))


def finish(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
