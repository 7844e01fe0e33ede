"""Multimodal pretraining: the JEPA over graphs, assay panels and images, or the contrastive baseline.

The same data, step loop, budget and checkpoints for both objectives, so
they compare at equal compute. Everything random is a function of
``(seed, step)`` and runs resume exactly (see :mod:`molwm.train.loop`).
At the end, a ridge probe maps the graph-only joint embedding to every
assay of the panel (training cells only), so a query can return predicted
assay values for a new molecule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.config import ConfigError, from_dict, to_dict
from molwm.data.mm_sources import MultimodalBuild, MultimodalDataConfig, build_multimodal_data
from molwm.data.multimodal import MODALITIES, MultimodalBatch, MultimodalData
from molwm.jepa.health import embedding_health
from molwm.jepa.mm_masking import MultimodalMaskConfig, add_pe, sample_multimodal_masks
from molwm.jepa.multimodal import MultimodalJEPAConfig
from molwm.objectives.lab_probes import LabProbeConfig, LabProbeSuite
from molwm.objectives import ObjectiveInputs, build_objective, objective_settings
from molwm.tasks.probes import RidgeProbe
from molwm.models import load_encoder
from molwm.models.multimodal import kind_for as mm_kind_for
from molwm.packaging import package_for
from molwm.tracking import NullTracker, Tracker, temporary_artifact_dir
from molwm.train.common import TrainingDiverged, all_finite, lr_at, plot_curves
from molwm.checkpoints import load_resume_checkpoint
from molwm.train.loop import (LoopSchedule, check_schedule, count_parameters, drop_logged, flush, restore, run_steps,
                              schedule_total)


@dataclass
class MultimodalPretrainConfig:
    """A multimodal pretraining run.

    Attributes:
        kind: Always ``multimodal`` (tells ``molwm pretrain`` which schema a YAML file uses).
        objective: ``jepa`` (predict hidden embeddings), ``generative`` (predict the hidden
            raw content: pixels MAE-style, assay values, atom attributes), ``contrastive_views``
            (InfoNCE between two disjoint masked views) or ``contrastive`` (CLOOME-style
            InfoNCE between molecules and images); see :mod:`molwm.objectives.multimodal`.
        objective_settings: That objective's settings (e.g. ``temperature`` for the contrastive ones).
        modalities: Modalities the model is shown (the others are left out of every batch),
            e.g. ``[image]`` to pretrain the image encoder alone.
        data: Sources.
        model: Encoders, fusion, predictor, objective weights.
        mask: Masks at the three levels.
        batch_size: Samples per step.
        epochs: Passes over the samples (ignored when ``max_steps`` is set).
        max_steps: Stop after this many steps.
        budget_samples: Stop once this many samples have been seen (equal data).
        budget_seconds: Stop once training has taken this many seconds (probes and
            checkpoints not counted; LR and EMA schedules projected from the time per step).
        probes: Frozen-encoder probes on a synthetic lab's ground truth (None: none).
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warmup.
        grad_clip: Max gradient norm.
        seed: Seeds data order, masks, init.
        log_every: Steps between metric points.
        health_every: Steps between embedding-health points.
        checkpoint_every: Steps between checkpoints.
        out_dir: Where checkpoints go.
        threads: torch intra-op threads (0: torch's default).
        experiment: MLflow experiment.
        run_name: MLflow run name.
        register_name: Register the final model under this name.
        init_graph: Start the graph encoders (context and target) from this
            pretrained checkpoint or model URI (e.g. a graph JEPA), so the
            multimodal objective builds on a graph-only pretraining.
    """

    kind: Literal["multimodal"] = "multimodal"
    objective: str = "jepa"
    objective_settings: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    data: MultimodalDataConfig = field(default_factory=lambda: MultimodalDataConfig(moleculeace=True))
    model: MultimodalJEPAConfig = field(default_factory=MultimodalJEPAConfig)
    mask: MultimodalMaskConfig = field(default_factory=MultimodalMaskConfig)
    batch_size: int = 64
    epochs: int = 1
    max_steps: int | None = None
    budget_samples: int | None = None
    budget_seconds: float | None = None
    probes: LabProbeConfig | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    health_every: int = 50
    checkpoint_every: int = 200
    out_dir: str = "outputs/pretrain-multimodal"
    threads: int = 0
    experiment: str = "molwm-pretrain"
    run_name: str | None = None
    register_name: str | None = None
    init_graph: str | None = None

    def validate(self) -> None:
        check_schedule(self)
        objective_settings("multimodal", self.objective, self.objective_settings)  # known objective and keys
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ConfigError(f"modalities: unknown {bad} (known: {list(MODALITIES)})")
        if self.probes is not None and self.data.lab is None:
            raise ConfigError("probes read a synthetic lab's ground truth: set data.lab")


@dataclass
class MultimodalPretrainResult:
    """What a multimodal run left behind."""

    run_id: str | None
    model_uri: str | None
    checkpoint: Path
    steps: int
    final_loss: float
    history: dict[str, list[tuple[int, float]]]
    build: MultimodalBuild


class MultimodalSteps:
    """Deterministic batches: step ``s`` always yields the same samples and masks."""

    def __init__(self, data: MultimodalData, config: MultimodalPretrainConfig):
        self.data, self.config = data, config

        self.drop = tuple(m for m in MODALITIES if m not in config.modalities)
        self.data_rows = np.flatnonzero(data.present(config.modalities))  # samples showing a kept modality
        self.steps_per_epoch = max(1, len(self.data_rows) // config.batch_size)

    def total_steps(self) -> int:
        steps = self.config.max_steps or self.config.epochs * self.steps_per_epoch
        if self.config.budget_samples:
            steps = min(steps, -(-self.config.budget_samples // self.config.batch_size))
        return steps

    def batch(self, step: int):
        """``(MultimodalBatch with pe, masks)`` for ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = self.data_rows[np.random.default_rng([self.config.seed, epoch]).permutation(len(self.data_rows))]
        bs = self.config.batch_size
        b = self.data.batch(perm[pos * bs:(pos + 1) * bs], drop=self.drop)
        add_pe(b, self.config.model, torch.Generator().manual_seed(self.config.seed * 1_000_003 + step))
        grid = self.config.model.image.grid
        masks = sample_multimodal_masks(b, self.config.mask, grid, np.random.default_rng([self.config.seed, 1, step]))
        return b, masks


def build_model(config: MultimodalPretrainConfig, n_assays: int):
    """Model and optimizer for the configured objective, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    inputs = ObjectiveInputs(GRAPH_SPEC, config.model, max(1, n_assays))
    model = build_objective("multimodal", config.objective, inputs, config.objective_settings)
    if config.init_graph:
        encoder = load_encoder(config.init_graph)
        if to_dict(encoder.config) != to_dict(config.model.graph):
            raise ConfigError(f"init_graph {config.init_graph}: its graph encoder {to_dict(encoder.config)} "
                              f"differs from model.graph {to_dict(config.model.graph)}")
        for holder in (model.encoders, getattr(model, "targets", None)):
            if holder is not None:
                holder["graph"].load_state_dict(encoder.state_dict())
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=config.lr)


def train_step(model, optimizer, batch, masks, config: MultimodalPretrainConfig, step: int, total: int,
               check_grads: bool = False) -> dict[str, float]:
    """Forward, backward, clip, step, EMA; raises TrainingDiverged on a non-finite loss or gradient."""
    model.train()
    torch.manual_seed(config.seed * 7919 + step)
    lr = lr_at(step, config.lr, config.warmup_steps, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    out = model(batch, masks)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    if check_grads:
        # an encoder whose modality this batch does not show may rightly have no gradient
        unseen = model.untrained_parameters(batch, masks)
        missing = [n for n, p in model.named_parameters()
                   if p.requires_grad and p.grad is None and not n.startswith(unseen)]
        if missing:
            raise RuntimeError(f"parameters without gradient on step {step}: {missing[:5]}")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    if not all_finite(out.loss.detach(), grad_norm):
        raise TrainingDiverged(f"loss {out.loss.item()} / gradient norm {grad_norm.item()} at step {step}")
    optimizer.step()
    model.ema_update(model.momentum_at(step, total))
    metrics = {"loss": float(out.loss.detach()), "pred_loss": float(out.pred_loss.detach()),
               "pooled_loss": float(out.pooled_loss.detach()), "anti_collapse": float(out.reg.detach()),
               "grad_norm": float(grad_norm), "lr": lr}
    metrics.update({f"loss.{k}": float(v.detach()) for k, v in out.per_modality.items()})
    return metrics


def shown_parameters(model, modalities) -> int:
    """Trainable parameters a run showing only ``modalities`` can train: the encoders, predictor
    position codes and generative heads of the other modalities are left out."""
    heads = {"graph": "atom_heads.", "assay": "value_head.", "image": "pixel_head."}
    unused = tuple(p for m in MODALITIES if m not in modalities
                   for p in (f"encoders.{m}.", f"predictor.pos.{MODALITIES.index(m)}.", heads[m]))
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith(unused))


@torch.no_grad()
def health(model, batch, masks) -> dict[str, float]:
    """Embedding health of the joint (or molecule) embedding on one batch."""
    model.eval()
    out = model(batch, masks)
    return embedding_health(out.joint, out.pred, out.target)


@torch.no_grad()
def graph_features(model, data: MultimodalData, rows: np.ndarray | None = None,
                   batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """Frozen molecule features from the graph alone (NaN rows without a graph).

    JEPA: ``(shared [n, 2D], per_assay [n, A, D] float16)`` from
    :meth:`MultimodalJEPA.assay_readout`; contrastive: ``(projected molecule
    embedding [n, D], None)``.
    """
    rows = np.arange(len(data)) if rows is None else np.asarray(rows)
    shared, per = None, None
    for i in range(0, len(rows), batch_size):
        b = add_pe(data.batch(rows[i:i + batch_size], drop=("assay", "image")), model.config)
        if b.graph is None:
            continue
        at = i + b.graph_rows.numpy()
        feats, tokens = model.graph_readout(b)
        if shared is None:
            shared = np.full((len(rows), feats.shape[1]), np.nan, dtype=np.float32)
            if tokens is not None:
                per = np.full((len(rows), *tokens.shape[1:]), np.nan, dtype=np.float16)
        shared[at] = feats.numpy()
        if tokens is not None:
            per[at] = tokens.numpy()
    return (shared if shared is not None else np.zeros((len(rows), 0), np.float32)), per


def readout_columns(shared: np.ndarray, per: np.ndarray, values: np.ndarray, columns: list[int]):
    """Per-assay design matrices for :meth:`RidgeProbe.fit_columns`.

    Assay ``j`` (column ``columns[j]`` of the model's vocabulary) gets the rows
    where ``values[:, j]`` is observed and features ``[shared, predicted token of that assay]``.
    """
    xs, ys = [], []
    for j, col in enumerate(columns):
        obs = np.isfinite(values[:, j]) & np.isfinite(shared).all(1)
        xs.append(np.concatenate([shared[obs], per[obs, col].astype(np.float32)], axis=1))
        ys.append(values[obs, j])
    return xs, ys


def fit_assay_probe(model, data: MultimodalData) -> RidgeProbe | None:
    """Per-assay ridge from graph-only features (normalised units), on the training samples;
    the penalty of each assay is chosen by leave-one-out error."""
    if not data.n_assays:
        return None
    rows = np.flatnonzero((data.graph_of >= 0) & (~np.isnan(data.assay_values)).any(1))
    if len(rows) == 0:
        return None
    shared, per = graph_features(model, data, rows)
    xs, ys = readout_columns(shared, per, data.assay_values[rows], list(range(data.n_assays)))
    return RidgeProbe.fit_columns(xs, ys)


def _state(model, optimizer, config, step, run_id, history, pending, build: MultimodalBuild, probe=None,
           elapsed: float = 0.0) -> dict:
    return {
        "kind": mm_kind_for(config.objective), "elapsed": float(elapsed),
        "config": to_dict(config), "spec": GRAPH_SPEC.to_dict(), "step": step,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "run_id": run_id or "",
        "assay_names": list(build.train.assay_names), "normalizer": build.normalizer.to_dict(),
        "synthetic": bool(build.synthetic),
        "image_stats": build.image_stats.to_dict() if build.image_stats is not None else None,
        "probe": probe.to_dict() if probe is not None else None,
        "history": {k: [list(p) for p in v] for k, v in history.items()},
        "pending": [[k, float(v), int(s)] for k, v, s in pending],
    }


def run_multimodal_pretrain(config: MultimodalPretrainConfig, tracker: Tracker | None = None,
                            resume: str | Path | None = None, progress: bool = True,
                            stop_after: int | None = None, data: MultimodalBuild | None = None
                            ) -> MultimodalPretrainResult:
    """Pretrain on multimodal samples; returns where the run and the model are.

    Args:
        config: The run (ignored when resuming: the checkpoint's config wins).
        tracker: Where to log; default logs nothing.
        resume: Checkpoint to continue from.
        progress: Show progress bars.
        stop_after: Stop (as if interrupted) at this step, without end-of-run outputs.
        data: Data already built from ``config.data`` (e.g. by the previous run of an
            ablation); read again when None.
    """
    tracker = tracker or NullTracker()
    state = None
    if resume is not None:
        state = load_resume_checkpoint(resume)
        config = from_dict(MultimodalPretrainConfig, state["config"])
    if config.threads:
        torch.set_num_threads(config.threads)
    build = data if data is not None else build_multimodal_data(config.data, progress=progress)
    steps = MultimodalSteps(build.train, config)
    total = steps.total_steps()
    model, optimizer = build_model(config, build.train.n_assays)
    start_step, run_id, history, pending = restore(state, model, optimizer)
    ckpt = Path(config.out_dir) / "last.pt"
    tags = {"molwm.stage": "pretrain", "objective": config.objective, "modalities": ",".join(config.modalities),
            "molwm.synthetic": str(build.synthetic).lower()}
    with tracker.run(config.run_name or f"pretrain-multimodal-{config.objective}", tags=tags,
                     run_id=run_id) as active_id:
        run_id = active_id
        if state is None:
            tracker.log_config(config)
            counts = {f"data.{k}": v for k, v in build.train.counts().items()}
            tracker.log_params({**counts, "data.rejected": len(build.rejects), "steps_total": total,
                                "params": count_parameters(model)})
            if build.rejects:
                tracker.log_dict({"rejects": build.rejects}, "rejects.json")
        drop_logged(tracker, pending)
        flush(tracker, pending)
        schedule = LoopSchedule(total, config.batch_size, config.log_every, config.health_every,
                                config.checkpoint_every, ckpt, max_seconds=config.budget_seconds,
                                probe_every=config.probes.every if config.probes else 0,
                                elapsed=float(state.get("elapsed", 0.0)) if state is not None else 0.0,
                                dedupe=state is not None)
        probes = LabProbeSuite(config.probes, build.heldout, config.data.lab) if config.probes else None
        done, last_loss = run_steps(
            schedule, start_step, tracker, history, pending, batch_fn=steps.batch,
            step_fn=lambda step, b: train_step(model, optimizer, b[0], b[1], config, step,
                                               schedule_total(step, total, schedule, config.budget_seconds),
                                               step == 0),
            health_fn=lambda b: health(model, b[0], b[1]),
            state_fn=lambda nxt: _state(model, optimizer, config, nxt, run_id, history, pending, build,
                                        elapsed=schedule.elapsed),
            progress=progress, stop_after=stop_after, desc=f"pretrain ({config.objective})",
            probe_fn=(lambda step: probes(model)) if probes else None)
        if done < schedule.total:
            return MultimodalPretrainResult(run_id, None, ckpt, done, last_loss, history, build)
        total = schedule.total
        readable = config.objective == "jepa" and "graph" in config.modalities
        probe = fit_assay_probe(model, build.train) if readable else None
        from molwm.checkpoints import save_checkpoint

        save_checkpoint(_state(model, optimizer, config, total, run_id, history, pending, build, probe,
                               schedule.elapsed), ckpt)
        model_uri = _log_outputs(tracker, history, ckpt, config)
    return MultimodalPretrainResult(run_id, model_uri, ckpt, total, last_loss, history, build)


def _log_outputs(tracker: Tracker, history, ckpt: Path, config: MultimodalPretrainConfig) -> str | None:
    with temporary_artifact_dir() as d:
        for name, keys, log_y in [
            ("loss_curve.png", ["loss", "loss.graph", "loss.assay", "loss.image", "pooled_loss"], True),
            ("embedding_health.png", ["health.std_mean", "health.std_min", "health.rankme",
                                      "health.pred_target_cos"], False),
        ]:
            path = plot_curves(history, keys, d / name, f"multimodal {config.objective} pretraining", log_y)
            if path is not None:
                tracker.log_artifact(path, "plots")
    return tracker.log_model(ckpt, package_for(mm_kind_for(config.objective)), name="encoder",
                             registered_name=config.register_name)
