"""Multimodal pretraining: the JEPA over graphs, assay panels and images, or the contrastive baseline.

The same data, driver, budget and checkpoints for every objective, so they
compare at equal compute (the multimodal task of :mod:`molwm.train.driver`).
Everything random is a function of ``(seed, step)`` and runs resume exactly.
At the end, a ridge probe maps the graph-only joint embedding to every
assay of the panel (training cells only), so a query can return predicted
assay values for a new molecule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.config import ConfigError, to_dict
from molwm.data.mm_sources import MultimodalBuild, MultimodalDataConfig, build_multimodal_data
from molwm.data.multimodal import MultimodalData
from molwm.jepa.health import embedding_health
from molwm.jepa.mm_masking import MultimodalMaskConfig, add_pe, sample_multimodal_masks
from molwm.jepa.modalities import modality_names, units
from molwm.jepa.multimodal import MultimodalJEPAConfig
from molwm.kinds import load_encoder
from molwm.kinds.multimodal import MultimodalCheckpoint
from molwm.kinds.multimodal import kind_for as mm_kind_for
from molwm.objectives import ObjectiveInputs, build_objective, objective_settings, objective_spec
from molwm.evaluation.lab_probes import LabProbeConfig, LabProbeSuite
from molwm.packaging import package_for
from molwm.run_config import RunConfig
from molwm.evaluation.ridge_probes import RidgeProbe
from molwm.tracking import Tracker
from molwm.train import driver
from molwm.train.common import log_training_plots
from molwm.train.loop import count_parameters


@dataclass(kw_only=True)
class MultimodalPretrainConfig(RunConfig):
    """A multimodal pretraining run (the shared run settings are those of :class:`RunConfig`).

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
        probes: Frozen-encoder probes on a synthetic lab's ground truth (None: none).
        init_graph: Start the graph encoders (context and target) from this
            pretrained checkpoint or model URI (e.g. a graph JEPA), so the
            multimodal objective builds on a graph-only pretraining.
    """

    kind: Literal["multimodal"] = "multimodal"
    objective: str = "jepa"
    objective_settings: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=lambda: list(modality_names()))
    data: MultimodalDataConfig = field(default_factory=lambda: MultimodalDataConfig(moleculeace=True))
    model: MultimodalJEPAConfig = field(default_factory=MultimodalJEPAConfig)
    mask: MultimodalMaskConfig = field(default_factory=MultimodalMaskConfig)
    probes: LabProbeConfig | None = None
    batch_size: int = 64
    warmup_steps: int = 50
    out_dir: str = "outputs/pretrain-multimodal"
    experiment: str = "molwm-pretrain"
    init_graph: str | None = None

    def validate(self) -> None:
        super().validate()
        objective_settings("multimodal", self.objective, self.objective_settings)  # known objective and keys
        needs = [m for m in objective_spec("multimodal", self.objective).needs if m not in self.modalities]
        if needs:
            raise ConfigError(f"objective {self.objective} needs the modalities {needs}, which modalities "
                              f"{self.modalities} leaves out")
        bad = [m for m in self.modalities if m not in modality_names()]
        if bad or not self.modalities:
            raise ConfigError(f"modalities: unknown {bad} (known: {list(modality_names())})")
        if self.probes is not None and self.data.lab is None:
            raise ConfigError("probes read a synthetic lab's ground truth: set data.lab")
        if "image" in self.modalities and self.data.image_size != self.model.image.image_size:
            raise ConfigError(f"data.image_size ({self.data.image_size}) must equal model.image.image_size "
                              f"({self.model.image.image_size}): the image encoder reads crops of that side")


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

        self.drop = tuple(m for m in modality_names() if m not in config.modalities)
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


def resolved_model(config: MultimodalPretrainConfig, data: MultimodalData) -> MultimodalPretrainConfig:
    """``config`` with what its model takes from the data and the registry written down, so the checkpoint
    rebuilds the same model: the modalities it has parts for (every registered one unless given) and the
    width of each store that declares one (``features``, e.g. the profile's). A unit reads its settings
    from the model and the mask configs: the model's are copied into the mask's (masks are drawn over
    the model's tokens), and the two may not disagree."""
    model = config.model
    settings = {k: dict(v) for k, v in model.modality_settings.items()}
    for name, store in data.stores.items():
        width = getattr(store, "features", None)
        if width is None or name not in config.modalities:
            continue
        given = settings.setdefault(name, {}).get("features", 0)
        if given and given != width:
            raise ConfigError(f"model.modality_settings.{name}.features is {given} but the data have {width}")
        settings[name]["features"] = width
    names = model.modalities if model.modalities is not None else list(modality_names())
    missing = [m for m in config.modalities if m not in names]
    if missing:
        raise ConfigError(f"modalities {missing} are not among the model's (model.modalities: {names})")
    masks = {k: dict(v) for k, v in config.mask.modality_settings.items()}
    for name, given in settings.items():
        clash = [k for k in given if k in masks.get(name, {}) and masks[name][k] != given[k]]
        if clash:
            raise ConfigError(f"mask.modality_settings.{name}.{clash[0]} differs from model.modality_settings."
                              f"{name}.{clash[0]}: set it once, in the model")
        masks[name] = {**given, **masks.get(name, {})}
    return replace(config, model=replace(model, modalities=list(names), modality_settings=settings),
                   mask=replace(config.mask, modality_settings=masks))


def build_objective_model(config: MultimodalPretrainConfig, n_assays: int) -> torch.nn.Module:
    """The configured objective's module (graph encoders from ``init_graph`` if set); seed torch first."""
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
    return model


def build_model(config: MultimodalPretrainConfig, n_assays: int):
    """Model and optimizer for the configured objective, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    model = build_objective_model(config, n_assays)
    return model, driver.optimizer_for(model, config)


def train_step(model, optimizer, batch, masks, config: MultimodalPretrainConfig, step: int, total: int,
               check_grads: bool = False) -> dict[str, float]:
    """One step of the driver (:func:`molwm.train.driver.train_step`) on a multimodal batch and its masks."""
    return driver.train_step(model, optimizer, MultimodalTask(config), (batch, masks), step, total, check_grads)


def shown_parameters(model, modalities) -> int:
    """Trainable parameters a run showing only ``modalities`` can train: the encoders, predictor
    position codes and generative heads of the other modalities are left out."""
    unused = tuple(p for j, u in enumerate(units()) if u.name not in modalities
                   for p in (f"encoders.{u.name}.", f"predictor.pos.{j}.", f"{u.head_name}."))
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


class MultimodalTask:
    """Multimodal pretraining as a task of the training driver (see :class:`molwm.train.driver.Task`).

    Args:
        config: The run.
        build: Data already built from ``config.data`` (None: read it in :meth:`prepare`).
    """

    rate_name = "samples_per_s"
    distributed = False

    def __init__(self, config: MultimodalPretrainConfig, build: MultimodalBuild | None = None):
        self.config, self.build = config, build
        self.desc, self.run_name = f"pretrain ({config.objective})", f"pretrain-multimodal-{config.objective}"
        self.steps: MultimodalSteps | None = None
        self.probe_fit: RidgeProbe | None = None

    def prepare(self, ctx, progress: bool) -> None:
        if self.build is None:
            self.build = build_multimodal_data(self.config.data, progress=progress)
        self.config = resolved_model(self.config, self.build.train)
        self.steps = MultimodalSteps(self.build.train, self.config)

    def total_steps(self, world_size: int) -> int:
        return self.steps.total_steps()

    def samples_per_step(self, world_size: int) -> int:
        return self.config.batch_size

    def build_model(self) -> torch.nn.Module:
        return build_objective_model(self.config, self.build.train.n_assays)

    def batch(self, step: int, ctx):
        return self.steps.batch(step)

    def loss(self, model, batch, step: int) -> driver.StepLoss:
        out = model(batch[0], batch[1])
        metrics = {"loss": out.loss, "pred_loss": out.pred_loss, "pooled_loss": out.pooled_loss,
                   "anti_collapse": out.reg}
        metrics.update({f"loss.{k}": v for k, v in out.per_modality.items()})
        return driver.StepLoss(out.loss, metrics)

    def untrained_parameters(self, model, batch) -> tuple[str, ...]:
        # an encoder whose modality this batch does not show may rightly have no gradient
        return model.untrained_parameters(*batch)

    def health(self, model, batch) -> dict[str, float]:
        return health(model, batch[0], batch[1])

    def state(self, model) -> dict[str, Any]:
        build, probe = self.build, self.probe_fit
        return MultimodalCheckpoint(
            self.config.objective, to_dict(self.config), list(build.train.assay_names), build.normalizer.to_dict(),
            bool(build.synthetic), build.image_stats.to_dict() if build.image_stats is not None else None,
            build.profiles.stats() if build.profiles is not None else None,
            probe.to_dict() if probe is not None else None).to_state()

    def tags(self) -> dict[str, str]:
        c = self.config
        return {"molwm.stage": "pretrain", "objective": c.objective, "modalities": ",".join(c.modalities),
                "molwm.synthetic": str(self.build.synthetic).lower()}

    def log_start(self, tracker: Tracker, model, ctx, total: int) -> None:
        build = self.build
        counts = {f"data.{k}": v for k, v in build.train.counts().items()}
        tracker.log_params({**counts, "data.rejected": len(build.rejects), "params": count_parameters(model)})
        if build.rejects:
            tracker.log_dict({"rejects": build.rejects}, "rejects.json")

    def probe(self, model):
        c = self.config
        if not c.probes:
            return None
        probes = LabProbeSuite(c.probes, self.build.heldout, c.data.lab)
        return (lambda step: probes(model)), c.probes.every

    def finish(self, model, tracker: Tracker, history, checkpoint: Path, save) -> str | None:
        c = self.config
        if c.objective == "jepa" and "graph" in c.modalities:  # assay values readable from a molecule alone
            self.probe_fit = fit_assay_probe(model, self.build.train)
        save()
        log_training_plots(tracker, history, f"multimodal {c.objective} pretraining",
                           ["loss", "loss.graph", "loss.assay", "loss.image", "loss.profile", "pooled_loss"])
        return tracker.log_model(checkpoint, package_for(mm_kind_for(c.objective)), name="encoder",
                                 registered_name=c.register_name)


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
    config, state = driver.resumed_config(MultimodalPretrainConfig, config, resume)
    task = MultimodalTask(config, data)
    run = driver.drive(task, tracker, state, progress, stop_after)
    return MultimodalPretrainResult(run.run_id, run.model_uri, run.checkpoint, run.steps, run.final_loss,
                                    run.history, task.build)
