"""Pieces every training loop shares: schedules, atomic checkpoints, the NaN guard, plots."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch


class TrainingDiverged(RuntimeError):
    """The loss or gradients became NaN/inf; the message names the last good checkpoint."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or not a molwm checkpoint."""


CHECKPOINT_FORMAT = 1


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.01) -> float:
    """Linear warmup to ``base_lr``, then cosine decay to ``min_ratio * base_lr``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def to_cpu(tree: Any) -> Any:
    """``tree`` (nested dicts, lists and tuples) with every tensor on the CPU.

    CPU tensors are returned as they are (no copy), so a CPU run's checkpoint is unchanged.
    """
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        moved = {k: to_cpu(v) for k, v in tree.items()}
        if all(moved[k] is v for k, v in tree.items()):
            return tree  # nothing to move: the very same object (a CPU run's checkpoint is unchanged)
        out = type(tree)(moved)  # keeps OrderedDict (state_dict)
        if hasattr(tree, "_metadata"):  # a state_dict's per-module versions, read by load_state_dict
            out._metadata = tree._metadata
        return out
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        moved = [to_cpu(v) for v in tree]
        return tree if all(m is v for m, v in zip(moved, tree)) else type(tree)(moved)
    return tree


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: to ``<path>.tmp``, fsync, then rename over ``path``.

    Tensors are written as CPU tensors (:func:`to_cpu`), so a checkpoint of a GPU run
    loads on a machine without one; resuming moves them back to the model's device.
    The checkpoint it replaces is kept as ``prev.pt`` beside it, the fallback of
    :func:`load_resume_checkpoint` if ``path`` is ever found damaged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {**to_cpu(state), "format": CHECKPOINT_FORMAT}
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.is_file():
        os.replace(path, previous_checkpoint(path))
    os.replace(tmp, path)
    return path


def previous_checkpoint(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept."""
    return Path(path).with_name("prev.pt")


def load_resume_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint to resume from; if it is truncated or corrupt, fall back to the previous good one.

    Raises:
        CheckpointError: Naming both files when neither can be read.
    """
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        prev = previous_checkpoint(path)
        if Path(path).name == prev.name or not prev.is_file():
            raise
        try:
            state = load_checkpoint(prev)
        except CheckpointError as err2:
            raise CheckpointError(f"{err}; the previous checkpoint is unusable too: {err2}") from None
        import warnings

        warnings.warn(f"{err}; resuming from the previous good checkpoint {prev} (step {state.get('step')})",
                      stacklevel=2)
        state["resumed_from_fallback"] = True
        return state


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code runs).

    Raises:
        CheckpointError: Naming the file when it is missing, truncated or foreign.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong file type, ...
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a molwm checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def all_finite(*tensors: torch.Tensor) -> bool:
    """True if every tensor has only finite values."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def plot_curves(history: dict[str, list[tuple[int, float]]], keys: list[str], path: str | Path, title: str,
                log_y: bool = False) -> Path | None:
    """Line plot of ``history[key]`` (lists of ``(step, value)``) for each key present; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if history.get(k)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        steps, values = zip(*history[key])
        ax.plot(steps, values, lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        if log_y and min(values) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
