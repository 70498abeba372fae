"""Multi-process training on ``torch.distributed``: process-group setup, collectives, a launcher.

A process launched by ``torchrun`` has ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT`` in its environment; :func:`setup` then joins the process group (``nccl`` on
CUDA, ``gloo`` on CPU). Without ``RANK`` it is a single process and every collective is a no-op.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device.

    owns_group: True when :func:`setup` created the process group (and :func:`teardown` must
                destroy it); False when the caller had already initialised one.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:LOCAL_RANK`` when CUDA is present, else CPU; ``"cuda"`` -> ``cuda:LOCAL_RANK``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {spec!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if spec == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(spec)


def setup(device_spec: str) -> DistContext:
    """Join the ``torchrun`` process group when ``RANK`` is set, and pick this process's device."""
    if "RANK" not in os.environ:
        return DistContext(device=resolve_device(device_spec))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size
        )
    return DistContext(rank, world_size, local_rank, device, owns_group)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait until every process gets here."""
    if ctx.distributed:
        dist.barrier()


def all_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of ``values`` over processes (a copy; the input is left alone)."""
    values = values.clone()
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values


def any_process(flag: bool, ctx: DistContext) -> bool:
    """True on every process when ``flag`` is True on any (so all ranks stop at the same step)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``obj`` from every process, in rank order (on every process)."""
    if not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(nproc: int, config_path: Path, resume: bool) -> int:
    """Run ``python -m seqlvm.train CONFIG`` in ``nproc`` processes on this machine via torchrun.

    Returns the launcher's exit code. For several machines, run torchrun yourself (see README).
    """
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "seqlvm.train", str(config_path),
    ]
    if resume:
        command.append("--resume")
    return subprocess.run(command, check=False).returncode
