"""The settings every training task shares, declared once: optimiser, schedule, budget, logging, device.

Each task's config (graph, multimodal and world pretraining) subclasses
:class:`RunConfig`, so these keys sit at the top level of its YAML as they always
have (``lr: 3e-4``, ``max_steps=100`` on the command line) and mean the same
thing everywhere; a task that wants another default re-declares only that field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from molwm.config import ConfigError, check_ranges

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (syntax only:
    a config naming a GPU must still load on a machine without one, e.g. to fine-tune its checkpoint)."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


@dataclass(kw_only=True)
class RunConfig:
    """What the training driver (:mod:`molwm.train.driver`) reads from every task's config.

    Attributes:
        batch_size: Samples per step and process (under ``torchrun`` with N processes a step
            sees ``N * batch_size`` samples: the global batch).
        epochs: Passes over the data (ignored when ``max_steps`` is set).
        max_steps: Stop after this many steps.
        budget_samples: Stop once this many samples have been seen, over all processes
            (an equal-data budget).
        budget_seconds: Stop once training has taken this many seconds (probes and checkpoints
            not counted; the LR and EMA schedules are projected from the time per step): an
            equal-wall-time budget.
        lr: Peak learning rate (AdamW; linear warm-up, then ``lr_schedule``).
        lr_schedule: After the warm-up: ``cosine`` decay to 1% over the run, or ``constant``.
        weight_decay: AdamW weight decay of weight matrices (biases, norms and embeddings of one
            dimension are not decayed).
        warmup_steps: Linear warm-up.
        grad_clip: Max gradient norm.
        seed: Seeds the data order, masks, initialisation and dropout.
        log_every: Steps between metric points.
        health_every: Steps between embedding-health points.
        checkpoint_every: Steps between checkpoints.
        out_dir: Where checkpoints go.
        threads: torch intra-op threads (0: leave torch's default).
        device: Where one process trains: ``auto`` (CUDA if available, else CPU), ``cpu``,
            ``cuda`` or ``cuda:N``. Under ``torchrun`` each rank's device wins.
        experiment: MLflow experiment.
        run_name: MLflow run name (default: named after the task).
        register_name: If set, register the final model under this name.
    """

    batch_size: int = 256
    epochs: int = 1
    max_steps: int | None = None
    budget_samples: int | None = None
    budget_seconds: float | None = None
    lr: float = 1e-3
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    health_every: int = 50
    checkpoint_every: int = 200
    out_dir: str = "outputs/run"
    threads: int = 0
    device: str = "auto"
    experiment: str = "molwm"
    run_name: str | None = None
    register_name: str | None = None

    def validate(self) -> None:
        """Raise ConfigError unless sizes and intervals are at least 1, rates positive (``lr=0`` trains
        nothing) and ``device`` a device name.

        A config naming a GPU still loads anywhere (its checkpoints are read on CPU machines);
        availability is checked when the run starts.
        """
        check_ranges(self, at_least_one=("batch_size", "epochs", "log_every", "health_every", "checkpoint_every",
                                         "max_steps", "budget_samples"),
                     positive=("lr", "grad_clip", "budget_seconds"),
                     not_negative=("weight_decay", "warmup_steps", "threads"))
        check_device_name(self.device)
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
