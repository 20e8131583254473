"""torchrun support in the style of torchvision's references: init from the environment, rank-0 output.

``torchrun --nproc_per_node=N`` (or multi-node torchrun) sets RANK, WORLD_SIZE and LOCAL_RANK; without
them training runs as a single process. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cityseg.errors import CitysegError

#: how long a process waits for its peers (joining, and in every collective) before failing instead of hanging
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed_mode(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (or run alone without it)."""
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        dev = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        return DistInfo(device=dev)
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise CitysegError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
    if world <= 1:
        dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        return DistInfo(rank=0, world_size=1, local_rank=local_rank, device=dev)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, timeout=TIMEOUT, **({"device_id": dev} if use_cuda else {}))
        initialized_here = True
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, initialized_here=initialized_here)


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op alone); returns it."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_gather_tensor(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The processes' equally shaped ``tensor``s concatenated along dim 0, in rank order (itself alone)."""
    if not info.distributed:
        return tensor
    out = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(out, tensor.contiguous())
    return torch.cat(out)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_flags(flags: list[bool], info: DistInfo) -> list[bool]:
    """Element-wise OR of boolean flags over all processes (one collective for several flags)."""
    if not info.distributed:
        return [bool(f) for f in flags]
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]
