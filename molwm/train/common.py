"""Pieces every training loop shares: the LR schedule, the NaN guard, curve plots.

Checkpoints are written and read by :mod:`molwm.checkpoints`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from molwm.atomic import atomic_path
from molwm.errors import MolwmError
from molwm.tracking import Tracker, temporary_artifact_dir


class TrainingDiverged(MolwmError, RuntimeError):
    """The loss or gradients became NaN/inf; the message names the last good checkpoint."""


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.01,
          shape: str = "cosine") -> float:
    """Linear warmup to ``base_lr``, then cosine decay to ``min_ratio * base_lr`` (``shape="constant"``:
    ``base_lr`` after the warm-up)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if shape == "constant":
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


HEALTH_KEYS = ["health.std_mean", "health.std_min", "health.rankme", "health.pred_target_cos"]
"""The embedding-health curves every pretraining run plots."""


def log_training_plots(tracker: Tracker, history: dict[str, list[tuple[int, float]]], title: str,
                       loss_keys: list[str], health_keys: list[str] = HEALTH_KEYS) -> None:
    """Plot the loss curves (log scale) and embedding health of a run and log them under ``plots/``."""
    with temporary_artifact_dir() as d:
        for name, keys, log_y in [("loss_curve.png", loss_keys, True), ("embedding_health.png", health_keys, False)]:
            path = plot_curves(history, keys, d / name, title, log_y)
            if path is not None:
                tracker.log_artifact(path, "plots")
