"""The step loop every pretraining objective shares: logging, health, checkpoints, resume.

Metrics are buffered in ``pending`` and written to the tracker right after each
checkpoint (the buffer is stored inside the checkpoint), so a run killed at
any moment and resumed has no duplicated and no missing steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from molwm.checkpoints import CheckpointError, resume_block, save_checkpoint
from molwm.tracking import Tracker
from molwm.train.common import TrainingDiverged

History = dict[str, list[tuple[int, float]]]
Pending = list[tuple[str, float, int]]


@dataclass
class LoopSchedule:
    """When the loop logs, measures health and checkpoints.

    Attributes:
        total: Steps in the run.
        batch_size: Samples per step (for samples/s).
        log_every: Steps between metric points.
        health_every: Steps between embedding-health points.
        checkpoint_every: Steps between checkpoints.
        checkpoint: Path of the rolling checkpoint.
        rate_name: Metric name of the throughput (e.g. ``graphs_per_s``).
        max_seconds: Training wall-time budget: the run ends after the first step that
            reaches it (probes and checkpoints are not counted). None: no time budget.
        probe_every: Steps between probe points (0: probes only at the last step, if any).
        elapsed: Training seconds so far (restored on resume; updated as the loop runs).
        dedupe: Before each flush, drop buffered points the tracker already has (set on
            resume: a run resumed from an older checkpoint re-runs steps it had logged).
        writer: This process measures health, runs probes and writes checkpoints (False on
            the ranks other than 0 of a distributed run, which only train).
    """

    total: int
    batch_size: int
    log_every: int
    health_every: int
    checkpoint_every: int
    checkpoint: Path
    rate_name: str = "samples_per_s"
    max_seconds: float | None = None
    probe_every: int = 0
    elapsed: float = 0.0
    dedupe: bool = False
    writer: bool = True


def record(history: History, pending: Pending, metrics: dict[str, float], step: int) -> None:
    """Add metrics at ``step`` to the run history and the not-yet-logged buffer."""
    for k, v in metrics.items():
        history.setdefault(k, []).append((step, float(v)))
        pending.append((k, float(v), step))


def flush(tracker: Tracker, pending: Pending) -> None:
    """Write buffered metrics to the tracker, step by step, and empty the buffer."""
    by_step: dict[int, dict[str, float]] = {}
    for k, v, s in pending:
        by_step.setdefault(s, {})[k] = v
    for s in sorted(by_step):
        tracker.log_metrics(by_step[s], step=s)
    pending.clear()


def drop_logged(tracker: Tracker, pending: Pending) -> None:
    """Remove buffered points the tracker already has (written just before an interruption)."""
    last = {k: tracker.last_step(k) for k in {k for k, _, _ in pending}}
    pending[:] = [(k, v, s) for k, v, s in pending if s > last[k]]


def restore(state: dict | None, model, optimizer) -> tuple[int, str | None, History, Pending]:
    """Load a resumed checkpoint's weights and optimizer state into ``model`` and ``optimizer``.

    Returns ``(start step, MLflow run id, history, pending metrics)``; a fresh start
    (``state`` None) gives ``(0, None, {}, [])``.
    """
    if state is None:
        return 0, None, {}, []
    model.load_state_dict(state["model"])
    run = resume_block(state)
    try:
        optimizer.load_state_dict(run["optimizer"])
    except ValueError as err:  # e.g. a world-model run from before weight-decay groups
        raise CheckpointError(f"this checkpoint's optimizer state does not fit this version of molwm ({err}); "
                              "the model still loads for queries and fine-tuning, but the run cannot resume: "
                              "start it again") from None
    history = {k: [tuple(p) for p in v] for k, v in run["history"].items()}
    pending = [(k, v, int(s)) for k, v, s in run["pending"]]
    return int(run["step"]), run["run_id"] or None, history, pending


def run_steps(schedule: LoopSchedule, start_step: int, tracker: Tracker, history: History, pending: Pending,
              batch_fn: Callable[[int], Any], step_fn: Callable[[int, Any], dict[str, float]],
              health_fn: Callable[[Any], dict[str, float]], state_fn: Callable[[int], dict],
              progress: bool = True, stop_after: int | None = None, desc: str = "pretrain",
              probe_fn: Callable[[int], dict[str, float]] | None = None,
              agree: Callable[[float], float] | None = None) -> tuple[int, float]:
    """Run steps ``start_step .. total - 1``.

    Args:
        schedule: Totals and intervals.
        start_step: First step (a resumed run's checkpoint step).
        tracker: Where metrics go.
        history: Metric history (updated in place).
        pending: Buffered metrics (updated in place; stored in checkpoints).
        batch_fn: ``step -> batch`` (deterministic in the step).
        step_fn: ``(step, batch) -> metrics``; raises TrainingDiverged on NaN.
        health_fn: ``batch -> health metrics``.
        state_fn: ``next_step -> checkpoint dict``.
        progress: Show a progress bar.
        stop_after: Return (as if interrupted) once this step is reached.
        desc: Progress bar label.
        probe_fn: ``step -> metrics`` (e.g. frozen-encoder probes), every ``probe_every``
            steps and at the last one; its time is not charged to the budget.
        agree: ``seconds -> seconds`` every process uses (a distributed run passes rank 0's,
            broadcast), so a time budget ends every rank at the same step.

    Every logged point also carries ``wall_seconds`` (training time so far) and
    ``samples_seen``, so curves can be drawn against compute rather than steps.

    Returns:
        ``(steps done, last loss)``. With a time budget the run may end early:
        ``schedule.total`` is then lowered to the steps done.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=schedule.total, initial=start_step, desc=desc, unit="step", disable=not progress)
    t_last, last_loss = time.perf_counter(), float("nan")
    clock = time.perf_counter()
    for step in range(start_step, schedule.total):
        if stop_after is not None and step >= stop_after:
            bar.close()
            return step, last_loss
        batch = batch_fn(step)
        try:
            metrics = step_fn(step, batch)
        except TrainingDiverged as err:
            good = schedule.checkpoint if schedule.checkpoint.is_file() else None
            bar.close()
            raise TrainingDiverged(
                f"training diverged: {err}. Last good checkpoint: {good or 'none (no checkpoint written yet)'}; "
                "lower lr or raise warmup_steps, then resume from it."
            ) from None
        last_loss = metrics["loss"]
        now = time.perf_counter()
        schedule.elapsed += now - clock
        if agree is not None:
            schedule.elapsed = agree(schedule.elapsed)
        clock = now
        if schedule.max_seconds is not None and schedule.elapsed >= schedule.max_seconds:
            schedule.total = step + 1  # the budget is spent: this step is the last
        last = step + 1 == schedule.total
        compute = {"wall_seconds": schedule.elapsed, "samples_seen": float((step + 1) * schedule.batch_size)}
        logged = (step + 1) % schedule.log_every == 0 or last
        metrics.update(compute)
        if logged:
            now = time.perf_counter()
            metrics[schedule.rate_name] = schedule.batch_size * schedule.log_every / max(now - t_last, 1e-9)
            t_last = now
            record(history, pending, metrics, step)
        if schedule.writer and ((step + 1) % schedule.health_every == 0 or last):
            record(history, pending, health_fn(batch), step)
        if schedule.writer and probe_fn is not None and (
                (schedule.probe_every and (step + 1) % schedule.probe_every == 0) or last):
            record(history, pending, {**probe_fn(step), **({} if logged else compute)}, step)
        if ((step + 1) % schedule.checkpoint_every == 0 or last) and not schedule.writer:
            pending.clear()  # rank 0 alone logs; the others keep no buffer
        elif (step + 1) % schedule.checkpoint_every == 0 or last:
            save_checkpoint(state_fn(step + 1), schedule.checkpoint)
            if schedule.dedupe:
                drop_logged(tracker, pending)
            flush(tracker, pending)
        clock = time.perf_counter()  # probes, health and checkpoints are not training time
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
        if last:
            break
    bar.close()
    return schedule.total, last_loss


def schedule_total(step: int, total: int, schedule: LoopSchedule, budget_seconds: float | None) -> int:
    """Steps the LR and EMA schedules run over: the planned total, or under a wall-time budget the
    total projected from the training time per step so far (so every objective anneals fully)."""
    if not budget_seconds or step == 0 or schedule.elapsed <= 0:
        return total
    projected = int(step * budget_seconds / schedule.elapsed)
    return max(step + 1, min(total, projected))


def count_parameters(module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def check_schedule(config) -> None:
    """Raise ConfigError unless a pretraining config's batch size, epochs and intervals are positive."""
    from molwm.config import ConfigError

    for name in ("batch_size", "epochs", "log_every", "health_every", "checkpoint_every"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
