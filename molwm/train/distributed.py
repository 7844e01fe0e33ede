"""Opt-in data parallelism for graph pretraining: one process per device, launched by ``torchrun``.

Nothing here touches a process group unless ``WORLD_SIZE`` (set by ``torchrun``)
is above 1; a plain ``python -m molwm pretrain`` gets :data:`SINGLE` and runs
exactly as before.

Under ``torchrun`` every rank builds the same *global* batch of
``world_size * batch_size`` molecules for step ``s`` (same permutation, same
positional codes, same masks as one process with that batch would draw) and
keeps its own contiguous slice of ``batch_size`` molecules. DDP averages the
gradients, so every rank applies the same update and the EMA target encoder,
updated from the synchronised weights, stays identical everywhere. Rank 0 alone
logs to MLflow and writes checkpoints.

Backend: ``nccl`` with one GPU per rank (``cuda:LOCAL_RANK``) when CUDA is
available, else ``gloo`` on CPU; ``MOLWM_DIST_BACKEND=gloo`` forces CPU.
``MOLWM_DIST_TIMEOUT`` (seconds) overrides PyTorch's collective timeout.
A single process uses the device its config names (:func:`resolve_device`).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Callable, TypeVar

import numpy as np
import torch

from molwm.config import ConfigError
from molwm.data.batch import GraphBatch
from molwm.jepa.masking import GraphMasks
from molwm.run_config import check_device_name

T = TypeVar("T")

BACKEND_ENV = "MOLWM_DIST_BACKEND"
# seconds a rank may wait in a collective (e.g. while rank 0 runs probes); PyTorch's default if unset
TIMEOUT_ENV = "MOLWM_DIST_TIMEOUT"


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly one-process) run.

    Attributes:
        rank: Global rank (0 on a single process).
        world_size: Number of processes.
        local_rank: Rank on this node (picks the GPU).
        backend: ``gloo``, ``nccl``, or None when no process group is used.
        device: Where the model and batches live.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs, prints and writes checkpoints."""
        return self.rank == 0


SINGLE = DistContext()

def resolve_device(name: str = "auto") -> torch.device:
    """The device a single-process run trains on.

    Args:
        name: ``auto`` (the current CUDA device if CUDA is available, else the CPU), ``cpu``,
            ``cuda`` (the current CUDA device) or ``cuda:N``.

    Raises:
        ConfigError: If ``name`` is malformed, or names a GPU this machine does not have.
    """
    
    check_device_name(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available here "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                          "use device=cpu or device=auto")
    index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} was asked for but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main_process() -> bool:
    """True unless ``torchrun`` made this process a rank other than 0 (no process group needed)."""
    return env_world_size() <= 1 or int(os.environ.get("RANK") or 0) == 0


def default_backend() -> str:
    """``$MOLWM_DIST_BACKEND`` if set, else ``nccl`` when CUDA is available, else ``gloo``."""
    chosen = os.environ.get(BACKEND_ENV)
    if chosen:
        return chosen
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group ``torchrun`` describes, or return :data:`SINGLE` when ``WORLD_SIZE`` <= 1.

    The group is created once per process and kept (a group already initialised,
    here or by the caller, is reused): re-creating one in the same process can
    pick up stale peer addresses from the launcher's store. It is destroyed when
    the interpreter exits.

    Args:
        backend: Override :func:`default_backend`.

    Raises:
        RuntimeError: If ``WORLD_SIZE`` > 1 but ``torch.distributed`` is unavailable.
    """
    if env_world_size() <= 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK") or 0)
    if not dist.is_initialized():
        backend = backend or default_backend()
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        timeout = os.environ.get(TIMEOUT_ENV)
        kwargs = {"timeout": timedelta(seconds=float(timeout))} if timeout else {}
        dist.init_process_group(backend=backend, **kwargs)
        atexit.register(_shutdown)
    backend = dist.get_backend()
    if backend == "nccl":  # also when the caller made the group: NCCL works on the current device
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op on a single process)."""
    if ctx.enabled:
        import torch.distributed as dist

        if ctx.device.type == "cuda":  # NCCL: name this rank's GPU rather than let it guess
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def in_turn(fn: Callable[[], T], ctx: DistContext) -> T:
    """Run ``fn`` on rank 0 first, then on each node's local rank 0, then on every other rank.

    For steps that write shared files, such as featurizing a dataset into the
    cache: rank 0 builds it once; on a shared filesystem the others then find it,
    and on node-local disks each node builds its own copy once.
    """
    if not ctx.enabled:
        return fn()
    result = None
    mine = 0 if ctx.rank == 0 else 1 if ctx.local_rank == 0 else 2
    for turn in range(3):
        if mine == turn:
            result = fn()
        barrier(ctx)
    return result


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel (the model itself on a single process)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def model_rank(model: torch.nn.Module) -> int:
    """The global rank of a DDP-wrapped model's process (0 for a plain module)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        import torch.distributed as dist

        return dist.get_rank()
    return 0


def mean_over_ranks(metrics: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average scalar metrics over ranks (so rank 0 logs the global batch's mean of per-rank values)."""
    if not ctx.enabled:
        return metrics
    import torch.distributed as dist

    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(values)
    values /= ctx.world_size
    return {**metrics, **dict(zip(keys, values.tolist()))}


def from_main(value: float, ctx: DistContext) -> float:
    """Rank 0's ``value`` on every rank (e.g. its training seconds, so a time budget stops all ranks
    at the same step and the projected LR schedule is the same everywhere)."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def check_in_sync(module: torch.nn.Module, ctx: DistContext) -> None:
    """Raise if any rank's parameters or buffers differ from rank 0's.

    Compares per-tensor sums and sums of squares (float64), gathered from every rank.

    Raises:
        RuntimeError: Naming the first tensor that differs and the ranks involved.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist

    names, sums = [], []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.is_floating_point():
            continue
        d = t.detach().to(torch.float64)
        names.append(name)
        sums.append(torch.stack([d.sum(), (d * d).sum()]))
    if not sums:
        return
    mine = torch.stack(sums)  # [T, 2]
    gathered = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, mine)
    for rank, other in enumerate(gathered[1:], start=1):
        if not torch.equal(other, gathered[0]):
            i = int((other != gathered[0]).any(1).nonzero()[0])
            raise RuntimeError(f"ranks diverged: '{names[i]}' differs between rank 0 and rank {rank}")


def to_device(batch: GraphBatch, masks: GraphMasks, device: torch.device) -> tuple[GraphBatch, GraphMasks]:
    """Move a batch and its masks (drawn on the CPU at collate time) to ``device``.

    On the CPU they are returned as they are (the same objects), so CPU runs are unchanged.
    """
    if device.type == "cpu":
        return batch, masks
    moved = {f.name: getattr(masks, f.name).to(device) for f in fields(masks)}
    return batch.to(device), replace(masks, **moved)


def rank_slice(batch: GraphBatch, masks: GraphMasks, rank: int,
               world_size: int) -> tuple[GraphBatch, GraphMasks]:
    """This rank's contiguous share of a global batch and of the masks drawn for it.

    Molecules ``[rank * b, (rank + 1) * b)`` with ``b = num_graphs // world_size``;
    the positional codes travel with the atoms and the masks are the global
    draw restricted to those molecules (ids renumbered from 0), so the ranks
    together see exactly what one process with the whole batch would.

    Raises:
        ValueError: If the batch does not split into equal shares.
    """
    n = batch.num_graphs
    if n % world_size:
        raise ValueError(f"a batch of {n} molecules does not split into {world_size} equal shares")
    b = n // world_size
    lo, hi = rank * b, (rank + 1) * b
    part = batch.select(np.arange(lo, hi))
    a0, a1 = int(batch.ptr[lo]), int(batch.ptr[hi])
    mine = (masks.target_mol >= lo) & (masks.target_mol < hi)
    blocks = masks.target_block[mine]
    sliced = GraphMasks(
        keep=masks.keep[a0:a1],
        target_idx=masks.target_idx[mine] - a0,
        # blocks are numbered molecule by molecule, so this rank's are consecutive
        target_block=blocks - (blocks.min() if blocks.numel() else 0),
        target_mol=masks.target_mol[mine] - lo,
    )
    return part, sliced
