"""One training driver for every task: graph, multimodal and world pretraining, and each fine-tuned member.

A task says what is particular to it (its data, its model, the batch of a step,
the loss, health, what its checkpoint records, what happens at the end); the
driver does everything else once, the same way for every task:

* resume (the checkpoint's config wins; a damaged checkpoint falls back to ``prev.pt``),
* device (``device`` in the config; ``cuda:LOCAL_RANK`` or the CPU under ``torchrun``),
  batches made on the CPU and moved, checkpoints written as CPU tensors,
* ``torchrun`` data parallelism for tasks that can split a batch across ranks,
* AdamW with weight-decay groups (or the task's own groups), warm-up + cosine (or constant)
  LR, gradient clipping, the NaN guard,
* the step-one check that every optimised parameter got a gradient,
* EMA updates from the synchronised weights,
* wall-time and sample budgets, logging, health, probes, atomic checkpoints and exact
  resume (:func:`molwm.train.loop.run_steps`), the resume state kept in the checkpoint's
  ``resume`` block (:func:`molwm.checkpoints.resume_block`),
* a task's own end-of-step work (validation, early stopping) through ``after_step``.

Everything random is a pure function of ``(seed, step)``, so a run resumed at step ``s``
continues exactly as the uninterrupted run would have. A task that keeps one random stream
over the run instead (``reseed_steps = False``: fine-tuning, whose dropout and data order
flow on from its seed) has the stream's state and its own loop state (``loop_state``)
saved in the resume block, so it resumes exactly too.

Hooks a task may define (the driver's default when absent): ``param_groups(model)``
(AdamW groups; a group's ``lr_ratio`` scales the scheduled rate), ``reseed_steps``
(True), ``nested`` (False: open the run under the active one), ``after_step(model, step)``
(``(metrics, stop)``: metrics recorded at the step, ``stop`` ends the run there),
``loop_state()`` / ``load_loop_state(state)`` (the task's own state across a resume).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from molwm import checkpoints
from molwm.config import from_dict
from molwm.run_config import RunConfig
from molwm.tracking import NullTracker, Tracker
from molwm.train.common import TrainingDiverged, all_finite, lr_at
from molwm.train.distributed import (DistContext, check_in_sync, from_main, in_turn, init_distributed,
                                     mean_over_ranks, model_rank, resolve_device, unwrap, wrap)
from molwm.train.loop import (History, LoopSchedule, drop_logged, flush, record, restore, run_steps,
                              schedule_total)


@dataclass
class StepLoss:
    """What a task's forward pass gives the driver.

    Attributes:
        loss: The scalar to minimise.
        metrics: Named values to log (tensors are detached and read as floats).
    """

    loss: torch.Tensor
    metrics: dict[str, Any]


@dataclass
class Run:
    """What the driver leaves behind for the task's result.

    Attributes:
        run_id: The MLflow run (None without tracking).
        model_uri: The logged model (None when the run stopped early or off rank 0).
        checkpoint: The rolling checkpoint.
        steps: Steps done.
        final_loss: Loss of the last step.
        history: Every logged point, ``name -> [(step, value)]``.
        model: The trained model (unwrapped, on the run's device).
        finished: False when stopped early (``stop_after``).
    """

    run_id: str | None
    model_uri: str | None
    checkpoint: Path
    steps: int
    final_loss: float
    history: History
    model: torch.nn.Module
    finished: bool


class Task(Protocol):
    """What a training task tells the driver.

    Attributes:
        config: The run's config (a :class:`RunConfig`).
        desc: Progress-bar label.
        run_name: The MLflow run name when the config sets none.
        rate_name: Metric name of the throughput (e.g. ``graphs_per_s``).
        distributed: True if :meth:`batch` can give each ``torchrun`` rank its share.
    """

    config: RunConfig
    desc: str
    run_name: str
    rate_name: str
    distributed: bool

    def prepare(self, ctx: DistContext, progress: bool) -> None:
        """Read or build the data (called on every rank; rank 0 first)."""

    def total_steps(self, world_size: int) -> int:
        """Steps in the run before any wall-time budget."""

    def samples_per_step(self, world_size: int) -> int:
        """Samples one step sees over all ranks."""

    def build_model(self) -> torch.nn.Module:
        """The model, initialised on the CPU (the driver seeds torch with ``config.seed`` first)."""

    def batch(self, step: int, ctx: DistContext) -> Any:
        """This rank's batch of ``step``, on the CPU, deterministic in ``(seed, step)``."""

    def loss(self, model: torch.nn.Module, batch: Any, step: int) -> StepLoss:
        """Forward pass in training mode (``model`` may be wrapped in DistributedDataParallel)."""

    def health(self, model: torch.nn.Module, batch: Any) -> dict[str, float]:
        """Embedding health on one batch."""

    def state(self, model: torch.nn.Module) -> dict[str, Any]:
        """The checkpoint's ``kind``, ``config`` and the kind's metadata (not weights or resume keys)."""

    def tags(self) -> dict[str, str]:
        """MLflow run tags."""

    def log_start(self, tracker: Tracker, model: torch.nn.Module, ctx: DistContext, total: int) -> None:
        """Params and dicts logged once, when the run starts (not on resume)."""

    def untrained_parameters(self, model: torch.nn.Module, batch: Any) -> tuple[str, ...]:
        """Parameter-name prefixes this batch may rightly leave without a gradient (step-one check)."""

    def probe(self, model: torch.nn.Module) -> tuple[Callable[[int], dict[str, float]], int] | None:
        """Frozen-encoder probes run during training and their interval in steps (0: only at the
        end), or None (rank 0 only)."""

    def finish(self, model: torch.nn.Module, tracker: Tracker, history: History, checkpoint: Path,
               save: Callable[[], Path]) -> str | None:
        """End-of-run work on rank 0 (fits, plots, the logged model); returns the model URI.

        ``checkpoint`` holds the last step; ``save()`` rewrites it from :meth:`state` (after a fit
        that the checkpoint should carry)."""


def optimizer_for(model: torch.nn.Module, config: RunConfig, task: Task | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight matrices decayed, vectors (biases, norms) not; or
    the groups of the task's ``param_groups(model)`` when it defines them."""
    if task is not None and hasattr(task, "param_groups"):
        return torch.optim.AdamW(task.param_groups(model), lr=config.lr, weight_decay=config.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def to_device(tree: Any, device: torch.device) -> Any:
    """``tree`` (tensors, batches with ``.to``, dataclasses, dicts, lists, tuples) on ``device``.

    On the CPU it is returned as it is (the very objects), so CPU runs are unchanged.
    """
    if device.type == "cpu":
        return tree
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if hasattr(tree, "to") and not isinstance(tree, torch.nn.Module):
        return tree.to(device)
    if is_dataclass(tree) and not isinstance(tree, type):
        return replace(tree, **{f.name: to_device(getattr(tree, f.name), device) for f in fields(tree) if f.init})
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(to_device(v, device) for v in tree)
    return tree


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, task: Task, batch: Any, step: int,
               total: int, check_grads: bool = False) -> dict[str, float]:
    """Forward, backward, clip, optimizer step and EMA update for one batch.

    Raises:
        TrainingDiverged: If the loss or the gradient norm is not finite (the weights are left
            as they were before this step).
        RuntimeError: With ``check_grads``, if an optimised parameter the batch should train got
            no gradient (the task's ``untrained_parameters`` names those it may leave).
    """
    config, core = task.config, unwrap(model)
    model.train()
    if getattr(task, "reseed_steps", True):
        # dropout depends on (seed, step) only, and on the rank so ranks do not share one pattern
        torch.manual_seed(config.seed * 7919 + step + 1_000_003 * model_rank(model))
    lr = lr_at(step, config.lr, config.warmup_steps, total, shape=config.lr_schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_ratio"] if "lr_ratio" in group else lr
    out = task.loss(model, batch, step)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if check_grads:
        may_skip = task.untrained_parameters(core, batch)
        missing = [n for n, p in core.named_parameters()
                   if p.requires_grad and p.grad is None and not n.startswith(may_skip)]
        if missing:
            raise RuntimeError(f"parameters without gradient on step {step}: {missing[:5]}")
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    if not all_finite(out.loss.detach(), grad_norm):
        raise TrainingDiverged(f"loss {out.loss.item()} / gradient norm {grad_norm.item()} at step {step}")
    optimizer.step()
    if hasattr(core, "ema_update"):  # from the synchronised weights: same on every rank
        core.ema_update(core.momentum_at(step, total))
    metrics = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.metrics.items()}
    metrics.update(grad_norm=float(grad_norm), lr=lr)
    return metrics


def _state(task: Task, model, optimizer, step: int, run_id, history, pending, elapsed: float,
           world_size: int) -> dict:
    """The checkpoint: the task's model state, the weights and ``step``, and the ``resume`` block."""
    resume = {"step": step, "optimizer": optimizer.state_dict(), "run_id": run_id or "", "elapsed": float(elapsed),
              "history": {k: [list(p) for p in v] for k, v in history.items()},
              "pending": [[k, float(v), int(s)] for k, v, s in pending]}
    if world_size > 1:
        resume["world_size"] = int(world_size)
    if not getattr(task, "reseed_steps", True):  # one random stream over the run: keep where it is
        resume["torch_rng"] = torch.get_rng_state()
    if hasattr(task, "loop_state"):
        resume["task"] = task.loop_state()
    return {**task.state(model), "model": model.state_dict(), "step": step, "resume": resume}


def resumed_config(schema: type, config: Any, resume: str | Path | None) -> tuple[Any, dict | None]:
    """``(config, state)`` a run starts from: as given, or for ``resume`` the checkpoint's config (it wins)
    and the checkpoint (:func:`molwm.checkpoints.load_resume_checkpoint`, which falls back to ``prev.pt``)."""
    if resume is None:
        return config, None
    state = checkpoints.load_resume_checkpoint(resume)
    return from_dict(schema, state["config"]), state


def _context(task: Task) -> DistContext:
    """This process's place and device: the config's device for one process; torchrun's otherwise."""
    ctx = init_distributed() if task.distributed else DistContext()
    if not ctx.enabled:  # one process: the config's device (raises ConfigError for a GPU that is not here)
        return replace(ctx, device=resolve_device(task.config.device))
    if task.config.device == "cpu" and ctx.device.type != "cpu":
        warnings.warn(f"device=cpu is ignored under torchrun: this rank trains on {ctx.device} "
                      f"({ctx.backend}); set MOLWM_DIST_BACKEND=gloo to train on the CPU", stacklevel=3)
    return ctx


def drive(task: Task, tracker: Tracker | None = None, state: dict | None = None, progress: bool = True,
          stop_after: int | None = None) -> Run:
    """Train ``task`` from scratch or from a resumed checkpoint ``state``; see the module docstring.

    Args:
        task: The task (its config is the resumed checkpoint's when resuming).
        tracker: Where rank 0 logs; default logs nothing.
        state: A checkpoint from :func:`molwm.checkpoints.load_resume_checkpoint`, or None.
        progress: Show a progress bar (rank 0).
        stop_after: Stop (as if interrupted) once this global step is reached, without the
            end-of-run outputs; used to test resumption.
    """
    config = task.config
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = _context(task)
    if not ctx.is_main:
        tracker, progress = NullTracker(), False
    tracker = tracker or NullTracker()
    resumed = checkpoints.resume_block(state) if state is not None else {}
    if state is not None and int(resumed.get("world_size", 1)) != ctx.world_size:
        warnings.warn(f"resuming a run made with {resumed.get('world_size', 1)} processes on {ctx.world_size}: "
                      "the global batch, the data order and the schedules change from here on", stacklevel=2)
    in_turn(lambda: task.prepare(ctx, progress), ctx)  # rank 0 first: it may write a cache the others read
    total = task.total_steps(ctx.world_size)
    torch.manual_seed(config.seed)
    model = task.build_model()  # on the CPU: the same initial weights on every device
    optimizer = optimizer_for(model, config, task)
    if ctx.device.type != "cpu":
        model.to(ctx.device)  # before restore, so the optimizer state lands on the device too
    start, run_id, history, pending = restore(state, model, optimizer)
    if "torch_rng" in resumed:
        torch.set_rng_state(resumed["torch_rng"])
    if "task" in resumed and hasattr(task, "load_loop_state"):
        task.load_loop_state(resumed["task"])
    trained = wrap(model, ctx)
    ckpt = Path(config.out_dir) / "last.pt"
    with tracker.run(config.run_name or task.run_name, tags=task.tags(), run_id=run_id,
                     nested=getattr(task, "nested", False)) as active_id:
        run_id = active_id
        if state is None:
            tracker.log_config(config)
            tracker.log_params({"device_resolved": str(ctx.device), "steps_total": total})
            task.log_start(tracker, model, ctx, total)
        drop_logged(tracker, pending)
        flush(tracker, pending)
        schedule = LoopSchedule(total, task.samples_per_step(ctx.world_size), config.log_every,
                                config.health_every, config.checkpoint_every, ckpt, rate_name=task.rate_name,
                                max_seconds=config.budget_seconds,
                                elapsed=float(resumed.get("elapsed", 0.0)),
                                dedupe=state is not None, writer=ctx.is_main)
        probe = task.probe(model) if ctx.is_main else None
        schedule.probe_every = probe[1] if probe is not None else 0

        def state_fn(nxt: int) -> dict:
            return _state(task, model, optimizer, nxt, run_id, history, pending, schedule.elapsed, ctx.world_size)

        def step_fn(step: int, batch) -> dict[str, float]:
            steps = schedule_total(step, total, schedule, config.budget_seconds)
            metrics = mean_over_ranks(train_step(trained, optimizer, task, batch, step, steps, step == 0), ctx)
            if hasattr(task, "after_step"):  # e.g. validation at an epoch's end, early stopping
                extra, stop = task.after_step(model, step)
                if extra and ctx.is_main:
                    record(history, pending, extra, step)
                if stop:
                    schedule.total = step + 1  # this step is the last, as when a budget is spent
            return metrics

        done, last_loss = run_steps(
            schedule, start, tracker, history, pending,
            batch_fn=lambda step: to_device(task.batch(step, ctx), ctx.device),
            step_fn=step_fn, health_fn=lambda b: task.health(model, b), state_fn=state_fn,
            progress=progress, stop_after=stop_after, desc=task.desc, probe_fn=probe[0] if probe else None,
            agree=(lambda seconds: from_main(seconds, ctx)) if ctx.enabled else None)
        check_in_sync(model, ctx)
        if done < schedule.total:
            return Run(run_id, None, ckpt, done, last_loss, history, model, finished=False)
        model_uri = None
        if ctx.is_main:
            model_uri = task.finish(model, tracker, history, ckpt,
                                    lambda: checkpoints.save_checkpoint(state_fn(schedule.total), ckpt))
    return Run(run_id, model_uri, ckpt, schedule.total, last_loss, history, model, finished=True)
