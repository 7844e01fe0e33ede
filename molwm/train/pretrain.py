"""JEPA pretraining on cached molecules: small named functions, exact resume.

Everything random is a pure function of ``(seed, step)``: the data order (one
permutation per epoch), the masks, the eigenvector sign flips and dropout. A
run resumed from a checkpoint at step ``s`` therefore continues exactly as the
uninterrupted run would have. Metrics are buffered and written to the tracker
right after each checkpoint (the pending buffer is stored inside it), so a run
killed at any moment and resumed has no duplicated and no missing steps.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same loop runs data-parallel: each
rank trains on its slice of the step's global batch (see
:mod:`molwm.train.distributed` and docs/distributed.md).

Devices: batches, positional codes and masks are always made on the CPU (so
they are the same on every device) and then moved to the run's device
(``device`` in the config for one process, ``cuda:LOCAL_RANK`` or the CPU under
``torchrun``); checkpoints hold CPU tensors, so a GPU run's checkpoint loads on
a machine without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.config import from_dict, to_dict
from molwm.data.batch import CachedGraphs, GraphBatch
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.encoders.graph import structural_pe
from molwm.jepa.health import embedding_health
from molwm.jepa.masking import MaskConfig, sample_graph_masks
from molwm.jepa.model import JEPAConfig
from molwm.objectives import ObjectiveInputs, build_objective, objective_settings
from molwm.objectives.graph import encoder_of
from molwm.models.graph import kind_for as graph_kind_for
from molwm.objectives.probes import ProbeConfig, ProbeSuite
from molwm.packaging import package_for
from molwm.tracking import NullTracker, Tracker
from molwm.train.common import TrainingDiverged, all_finite, lr_at, plot_curves
from molwm.checkpoints import load_resume_checkpoint
from molwm.train.distributed import (DistContext, check_device_name, check_in_sync, from_main, in_turn,
                                     init_distributed, mean_over_ranks, model_rank, rank_slice,
                                     resolve_device, to_device, unwrap, wrap)
from molwm.train.loop import (LoopSchedule, check_schedule, count_parameters, drop_logged, flush, restore, run_steps,
                              schedule_total)


@dataclass
class PretrainConfig:
    """A pretraining run.

    Attributes:
        dataset: Card to pretrain on (prepared on first use).
        limit: First N molecules of it (None: all).
        cache_dir: Featurization cache root.
        objective: A registered graph objective (:mod:`molwm.objectives`): ``jepa`` (predict target
            embeddings of hidden atom blocks), ``generative`` (predict the hidden atoms' and bonds' raw
            attributes) or ``contrastive`` (GraphCL-style InfoNCE between two views); same encoder,
            data, optimiser and budget.
        objective_settings: That objective's settings (its settings dataclass, e.g. ``bond_weight``
            for ``generative``; the JEPA's live in ``model``).
        model: Encoder, predictor and the JEPA's loss settings.
        mask: Hidden atom blocks (every objective uses the same ones).
        batch_size: Molecules per step and process: under ``torchrun`` with N processes a
            step sees ``N * batch_size`` molecules (the global batch), exactly the ones
            one process with ``batch_size = N * batch_size`` would see.
        epochs: Passes over the data (ignored when ``max_steps`` is set).
        max_steps: Stop after this many steps (for budgets and tests).
        budget_samples: Stop once this many molecules have been seen, over all processes
            (the step count that reaches it caps ``max_steps``/``epochs``): an equal-data budget.
        budget_seconds: Stop once training has taken this many seconds (probes and
            checkpoints not counted): an equal-wall-time budget.
        probes: Frozen-encoder linear probes during the run (None: none).
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warmup.
        grad_clip: Max gradient norm.
        seed: Seeds data order, masks, init and dropout.
        log_every: Steps between metric points.
        health_every: Steps between embedding-health points.
        checkpoint_every: Steps between checkpoints.
        out_dir: Where checkpoints go.
        threads: torch intra-op threads (0: leave torch's default).
        device: Where one process trains: ``auto`` (CUDA if available, else CPU), ``cpu``,
            ``cuda`` or ``cuda:N``. Under ``torchrun`` each rank's device wins (``cuda:LOCAL_RANK``
            with NCCL, the CPU with gloo).
        experiment: MLflow experiment.
        run_name: MLflow run name.
        register_name: If set, register the final encoder under this name.
    """

    dataset: str = "moses"
    limit: int | None = 100_000
    cache_dir: str | None = None
    objective: str = "jepa"
    objective_settings: dict[str, Any] = field(default_factory=dict)
    model: JEPAConfig = field(default_factory=JEPAConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    batch_size: int = 256
    epochs: int = 1
    max_steps: int | None = None
    budget_samples: int | None = None
    budget_seconds: float | None = None
    probes: ProbeConfig | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    health_every: int = 50
    checkpoint_every: int = 200
    out_dir: str = "outputs/pretrain"
    threads: int = 0
    device: str = "auto"
    experiment: str = "molwm-pretrain"
    run_name: str | None = None
    register_name: str | None = None

    def validate(self) -> None:
        check_schedule(self)
        objective_settings("graph", self.objective, self.objective_settings)  # a known objective, known keys
        check_device_name(self.device)  # availability is checked when the run starts, not on load


@dataclass
class PretrainResult:
    """What a pretraining run left behind."""

    run_id: str | None
    model_uri: str | None
    checkpoint: Path
    steps: int
    final_loss: float
    history: dict[str, list[tuple[int, float]]]


class PretrainData:
    """Deterministic batches: step ``s`` always yields the same molecules, masks and codes.

    Args:
        graphs: The cached molecules.
        config: Seed, batch size, budgets, mask and encoder settings.
        rank: This process's rank in a distributed run.
        world_size: Processes in the run; the global batch is ``world_size * batch_size``.

    Raises:
        ConfigError: In a distributed run, if the dataset is smaller than one global batch.
    """

    def __init__(self, graphs: CachedGraphs, config: PretrainConfig, rank: int = 0, world_size: int = 1):
        from molwm.config import ConfigError

        self.graphs = graphs
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.global_batch = config.batch_size * world_size
        if world_size > 1 and len(graphs) < self.global_batch:
            raise ConfigError(f"{len(graphs)} molecules cannot fill a global batch of {world_size} "
                              f"processes x batch_size {config.batch_size}; lower batch_size")
        self.steps_per_epoch = max(1, len(graphs) // self.global_batch)
        self._perm_epoch, self._perm = -1, None

    def total_steps(self) -> int:
        """Steps in the run: ``max_steps``, else whole epochs, capped by ``budget_samples``."""
        steps = self.config.max_steps or self.config.epochs * self.steps_per_epoch
        if self.config.budget_samples:
            steps = min(steps, -(-self.config.budget_samples // self.global_batch))
        return steps

    def rows(self, step: int) -> np.ndarray:
        """Cache positions of the global batch of ``step`` (one permutation per epoch)."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.graphs))
            self._perm_epoch = epoch
        bs = self.global_batch
        return self._perm[pos * bs : (pos + 1) * bs]

    def batch(self, step: int):
        """``(GraphBatch with pe, GraphMasks)`` for ``step``: this rank's share of the global batch.

        Codes and masks are drawn for the whole global batch, then sliced, so the
        ranks together train on exactly what one process would (each rank pays
        the collate cost of the global batch).
        """
        enc = self.config.model.encoder
        batch = self.graphs.batch(self.rows(step))
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        batch.pe = structural_pe(batch.edge_index, batch.batch, batch.num_graphs, enc.rw_steps, enc.lap_k, gen)
        masks = sample_graph_masks(batch, self.config.mask, np.random.default_rng([self.config.seed, 1, step]))
        if self.world_size > 1:
            return rank_slice(batch, masks, self.rank, self.world_size)
        return batch, masks


def build(config: PretrainConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The objective's model and the optimizer, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    model = build_objective("graph", config.objective, ObjectiveInputs(GRAPH_SPEC, config.model),
                            config.objective_settings)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    return model, optimizer


def train_step(model: torch.nn.Module, optimizer, batch: GraphBatch, masks, config: PretrainConfig, step: int,
               total_steps: int, check_grads: bool = False) -> dict[str, float]:
    """Forward, backward, clip, optimizer step and EMA update for one batch.

    ``model`` may be wrapped in DistributedDataParallel: gradients are then averaged
    over ranks in ``backward`` and each rank draws its own dropout.

    Raises:
        TrainingDiverged: If the loss or the gradient norm is not finite (the
            weights are left as they were before this step).
        RuntimeError: With ``check_grads``, if an optimised parameter got no gradient.
    """
    core = unwrap(model)
    model.train()
    # dropout depends on (seed, step) only, and on the rank so ranks do not share one pattern
    torch.manual_seed(config.seed * 7919 + step + 1_000_003 * model_rank(model))
    lr = lr_at(step, config.lr, config.warmup_steps, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    out = model(batch, masks, generator=torch.Generator().manual_seed(step))
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if check_grads:
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            raise RuntimeError(f"parameters without gradient on step {step}: {missing[:5]}")
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    if not all_finite(out.loss.detach(), grad_norm):
        raise TrainingDiverged(f"loss {out.loss.item()} / gradient norm {grad_norm.item()} at step {step}")
    optimizer.step()
    core.ema_update(core.momentum_at(step, total_steps))  # from the synchronised weights: same on every rank
    metrics = {
        "loss": float(out.loss.detach()),
        "pred_loss": float(out.pred_loss.detach()),
        "anti_collapse": float(out.reg.detach()),
        "grad_norm": float(grad_norm),
        "lr": lr,
    }
    if out.graph_loss is not None:
        metrics["graph_loss"] = float(out.graph_loss.detach())
    metrics.update(out.extra or {})
    return metrics


@torch.no_grad()
def evaluate_health(model: torch.nn.Module, batch: GraphBatch, masks) -> dict[str, float]:
    """Embedding health on one batch: the evaluated encoder's std and effective rank (and the
    JEPA's pred/target cosine)."""
    model.eval()
    out = model(batch, masks)
    z = model.embed(batch)
    return embedding_health(z, out.pred, out.target)


def _state(model, optimizer, config, step, run_id, history, pending, elapsed: float = 0.0,
           world_size: int = 1) -> dict:
    extra = {"world_size": int(world_size)} if world_size > 1 else {}  # one-process checkpoints unchanged
    return {
        **extra,
        "elapsed": float(elapsed),
        "kind": graph_kind_for(config.objective),
        "objective": config.objective,
        "config": to_dict(config),
        "spec": GRAPH_SPEC.to_dict(),
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "run_id": run_id or "",
        "history": {k: [list(p) for p in v] for k, v in history.items()},
        "pending": [[k, float(v), int(s)] for k, v, s in pending],
    }


def run_pretrain(config: PretrainConfig, tracker: Tracker | None = None, resume: str | Path | None = None,
                 progress: bool = True, stop_after: int | None = None) -> PretrainResult:
    """Pretrain a graph JEPA; returns where the run and the model are.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) this joins the process group and trains
    data-parallel: rank 0 alone logs to ``tracker``, shows progress and writes
    checkpoints (the others log nothing); every rank loads ``resume``. Without
    ``WORLD_SIZE`` it is a plain single-process run.

    Args:
        config: The run (ignored when resuming: the checkpoint's config wins).
        tracker: Where to log; default logs nothing.
        resume: A checkpoint to continue from (same MLflow run, same data order).
        progress: Show a progress bar.
        stop_after: Stop (as if interrupted) once this global step is reached,
            without the end-of-run outputs; used to test resumption.
    """
    state = None
    if resume is not None:
        state = load_resume_checkpoint(resume)
        config = from_dict(PretrainConfig, state["config"])
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = init_distributed()
    if not ctx.enabled:  # one process: the config's device (raises ConfigError for a GPU that is not here)
        ctx = replace(ctx, device=resolve_device(config.device))
    elif config.device == "cpu" and ctx.device.type != "cpu":
        import warnings

        warnings.warn(f"device=cpu is ignored under torchrun: this rank trains on {ctx.device} "
                      f"({ctx.backend}); set MOLWM_DIST_BACKEND=gloo to train on the CPU", stacklevel=2)
    if not ctx.is_main:
        tracker, progress = NullTracker(), False
    return _run(config, tracker or NullTracker(), state, progress, stop_after, ctx)


def _run(config: PretrainConfig, tracker: Tracker, state: dict | None, progress: bool, stop_after: int | None,
         ctx: DistContext) -> PretrainResult:
    if state is not None and int(state.get("world_size", 1)) != ctx.world_size:
        import warnings

        warnings.warn(f"resuming a run made with {state.get('world_size', 1)} processes on {ctx.world_size}: "
                      "the global batch, the data order and the schedules change from here on", stacklevel=3)
    # rank 0 featurizes once; the others then find the cache (see in_turn for node-local disks)
    prep = in_turn(lambda: prepare_dataset(PrepareConfig(dataset=config.dataset, limit=config.limit,
                                                         cache_dir=config.cache_dir, progress=progress)), ctx)
    data = PretrainData(CachedGraphs(prep.cache, with_labels=False), config, ctx.rank, ctx.world_size)
    total = data.total_steps()
    model, optimizer = build(config)  # initialised on the CPU (the same weights on every device)
    if ctx.device.type != "cpu":
        model.to(ctx.device)  # before restore, so the optimizer state lands on the device too
    start_step, run_id, history, pending = restore(state, model, optimizer)
    trained = wrap(model, ctx)
    out_dir = Path(config.out_dir)
    ckpt_path = out_dir / "last.pt"
    tags = {"molwm.stage": "pretrain", "dataset": config.dataset, "objective": config.objective}
    with tracker.run(config.run_name or f"pretrain-{config.dataset}", tags=tags, run_id=run_id) as active_id:
        run_id = active_id
        if state is None:
            tracker.log_config(config)
            tracker.log_params({"data.n_molecules": len(data.graphs), "data.cache_key": prep.cache.manifest["key"],
                                "device_resolved": str(ctx.device),
                                "steps_total": total, "params_encoder": count_parameters(encoder_of(model)),
                                "params_trained": sum(p.numel() for p in model.parameters() if p.requires_grad)})
            if ctx.enabled:
                tracker.log_params({"ddp.world_size": ctx.world_size, "ddp.backend": ctx.backend,
                                    "ddp.global_batch": data.global_batch})
        drop_logged(tracker, pending)
        flush(tracker, pending)
        schedule = LoopSchedule(total, data.global_batch, config.log_every, config.health_every,
                                config.checkpoint_every, ckpt_path, rate_name="graphs_per_s",
                                max_seconds=config.budget_seconds,
                                probe_every=config.probes.every if config.probes else 0,
                                elapsed=float(state.get("elapsed", 0.0)) if state is not None else 0.0,
                                dedupe=state is not None, writer=ctx.is_main)
        # probes touch the weights only to read them, so rank 0 runs them while the others go on
        probes = ProbeSuite(config.probes, config.cache_dir) if config.probes and ctx.is_main else None

        def batch_fn(step: int):
            return to_device(*data.batch(step), ctx.device)

        def step_fn(step: int, b) -> dict[str, float]:
            metrics = train_step(trained, optimizer, b[0], b[1], config, step,
                                 schedule_total(step, total, schedule, config.budget_seconds),
                                 check_grads=step == 0)
            return mean_over_ranks(metrics, ctx)

        done, last_loss = run_steps(
            schedule, start_step, tracker, history, pending,
            batch_fn=batch_fn,
            step_fn=step_fn,
            health_fn=lambda b: evaluate_health(model, b[0], b[1]),
            state_fn=lambda nxt: _state(model, optimizer, config, nxt, run_id, history, pending,
                                        schedule.elapsed, ctx.world_size),
            progress=progress, stop_after=stop_after, desc=f"pretrain ({config.objective})",
            probe_fn=(lambda step: probes(encoder_of(model))) if probes else None,
            agree=(lambda seconds: from_main(seconds, ctx)) if ctx.enabled else None)
        check_in_sync(model, ctx)
        if done < schedule.total:
            return PretrainResult(run_id, None, ckpt_path, done, last_loss, history)
        model_uri = _log_outputs(tracker, history, ckpt_path, config) if ctx.is_main else None
    return PretrainResult(run_id, model_uri, ckpt_path, schedule.total, last_loss, history)


def _log_outputs(tracker: Tracker, history, ckpt_path: Path, config: PretrainConfig) -> str | None:
    from molwm.tracking import temporary_artifact_dir

    with temporary_artifact_dir() as d:
        for name, keys, log_y in [
            ("loss_curve.png", ["loss", "pred_loss", "graph_loss", "anti_collapse"], True),
            ("embedding_health.png", ["health.std_mean", "health.std_min", "health.rankme",
                                      "health.pred_target_cos"], False),
        ]:
            path = plot_curves(history, keys, d / name, f"{config.dataset} {config.objective} pretraining", log_y)
            if path is not None:
                tracker.log_artifact(path, "plots")
    return tracker.log_model(ckpt_path, package_for(graph_kind_for(config.objective)), name="encoder",
                             registered_name=config.register_name)
