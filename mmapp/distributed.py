"""Devices and torchrun: which device a process uses, process group set-up, a resumable sharded
sampler, and gathering results.

Run any training command (or ``mmapp features``) under ``torchrun --nproc_per_node=N`` (or
multi-node torchrun): NCCL on GPUs, gloo on CPU. Only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from mmapp.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank)


def current() -> DistInfo:
    """The process group this process has joined (one process when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when CUDA is present, else cpu; anything else must name a usable device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but CUDA is not available here")
    return resolved


def device_for(requested: str, local_rank: int) -> torch.device:
    """The device a rank runs on: under torchrun, a CUDA request means this rank's GPU."""
    device = resolve_device(requested)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", local_rank)
    return device


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op without a process group)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch), sharded across ranks, that can start mid-epoch.

    Like ``DistributedSampler`` (every rank gets ceil(n / world) indices, the tail padded by wrapping),
    plus ``skip``: the number of this rank's indices already consumed, for resuming mid-epoch.
    """

    def __init__(self, size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, skip: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, epoch
        self.rank, self.world_size, self.shuffle, self.skip = rank, world_size, shuffle, skip
        self.per_rank = -(-size // world_size)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order = (order * (total // max(len(order), 1) + 1))[:total]
        return order[self.rank:total:self.world_size][self.skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)
