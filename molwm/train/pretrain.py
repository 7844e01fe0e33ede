"""JEPA pretraining on cached molecules: small named functions, exact resume.

The graph task of the training driver (:mod:`molwm.train.driver`), which does
resume, devices, ``torchrun``, the optimiser, budgets and checkpoints. Everything
random is a pure function of ``(seed, step)``: the data order (one permutation
per epoch), the masks, the eigenvector sign flips and dropout, so a run resumed
from a checkpoint at step ``s`` continues exactly as the uninterrupted run would.

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

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.config import ConfigError, to_dict
from molwm.data.batch import CachedGraphs, GraphBatch
from molwm.data.descriptors import DescriptorStats, prepare_descriptors
from molwm.data.overlap import excluded_rows, write_exclusions
from molwm.data.prepare import PrepareConfig, PrepareResult, prepare_dataset
from molwm.jepa.health import embedding_health
from molwm.jepa.masking import MaskConfig, sample_graph_masks
from molwm.jepa.model import JEPAConfig
from molwm.kinds.graph import GraphCheckpoint
from molwm.kinds.graph import kind_for as graph_kind_for
from molwm.objectives import ObjectiveInputs, build_objective, objective_settings, objective_spec
from molwm.objectives.graph import encoder_of
from molwm.evaluation.pretrain_probes import ProbeConfig, ProbeSuite
from molwm.packaging import package_for
from molwm.run_config import RunConfig
from molwm.tracking import Tracker, temporary_artifact_dir
from molwm.train import driver
from molwm.train.common import log_training_plots
from molwm.train.distributed import DistContext, rank_slice
from molwm.train.loop import count_parameters


LEGACY_SETTINGS = {"bond_weight", "head_hidden", "view_mask_fraction", "temperature", "projection_dim"}
"""The one settings block every graph objective shared before the objective registry."""


@dataclass
class DescriptorTargets:
    """Where descriptor targets come from (:mod:`molwm.data.descriptors`).

    Attributes:
        n_jobs: Processes computing them the first time (0: every core).
        stats_rows: The median and scale of each descriptor are fitted on a seeded subsample of
            this many pretraining rows (all of them if fewer).
    """

    n_jobs: int = 0
    stats_rows: int = 200_000


@dataclass(kw_only=True)
class PretrainConfig(RunConfig):
    """A graph pretraining run (the shared run settings are those of :class:`RunConfig`).

    Attributes:
        kind: Always ``graph`` (the default kind of a pretraining YAML; see :mod:`molwm.pretraining`).
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
        probes: Frozen-encoder linear probes during the run (None: none).
        descriptors: Descriptor targets, for objectives that need them (``descriptors``,
            ``jepa_descriptors``): computed once beside the cache, statistics fitted on the
            pretraining rows.
        exclude: Datasets (card names) whose molecules never enter pretraining, matched by
            InChIKey (:mod:`molwm.data.overlap`): the benchmarks the encoder will be judged on.
    """

    kind: Literal["graph"] = "graph"
    dataset: str = "moses"
    limit: int | None = 100_000
    cache_dir: str | None = None
    objective: str = "jepa"
    objective_settings: dict[str, Any] = field(default_factory=dict)
    model: JEPAConfig = field(default_factory=JEPAConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    probes: ProbeConfig | None = None
    descriptors: DescriptorTargets = field(default_factory=DescriptorTargets)
    exclude: list[str] = field(default_factory=list)
    out_dir: str = "outputs/pretrain"
    experiment: str = "molwm-pretrain"

    def validate(self) -> None:
        super().validate()
        objective_settings("graph", self.objective, self.objective_settings)  # a known objective, known keys

    @staticmethod
    def upgrade_legacy(data: dict) -> dict:
        """Configs (and checkpoints) from before per-objective settings held one flat settings block
        for every objective; keep the keys the configured objective takes."""
        settings = data.get("objective_settings")
        if isinstance(settings, dict) and set(settings) == LEGACY_SETTINGS:
            spec = objective_spec("graph", data.get("objective", "jepa"))
            known = {f.name for f in fields(spec.settings)} if spec.settings else set()
            data["objective_settings"] = {k: v for k, v in settings.items() if k in known}
        return data


@dataclass
class PretrainResult:
    """What a pretraining run left behind."""

    run_id: str | None
    model_uri: str | None
    checkpoint: Path
    steps: int
    final_loss: float
    history: dict[str, list[tuple[int, float]]]
    model: torch.nn.Module | None = None


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

    def __init__(self, graphs: CachedGraphs, config: PretrainConfig, rank: int = 0, world_size: int = 1,
                 targets: Callable[[np.ndarray], np.ndarray] | None = None, allowed: np.ndarray | None = None):
        self.graphs, self.targets = graphs, targets
        self.allowed = allowed  # cache positions pretraining may use (None: all of them)
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.global_batch = config.batch_size * world_size
        if world_size > 1 and (len(graphs) if allowed is None else len(allowed)) < self.global_batch:
            raise ConfigError(f"{len(graphs) if allowed is None else len(allowed)} molecules cannot fill a global batch of {world_size} "
                              f"processes x batch_size {config.batch_size}; lower batch_size")
        self.n = len(graphs) if allowed is None else len(allowed)
        self.steps_per_epoch = max(1, self.n // self.global_batch)
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
            perm = np.random.default_rng([self.config.seed, epoch]).permutation(self.n)
            self._perm = perm if self.allowed is None else self.allowed[perm]
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
        rows = self.rows(step)
        batch = self.graphs.batch(rows)
        if self.targets is not None:
            batch.targets = torch.from_numpy(self.targets(rows))  # [B, K], before slicing: ranks share one draw
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        enc.prepare(batch, gen)
        masks = sample_graph_masks(batch, self.config.mask, np.random.default_rng([self.config.seed, 1, step]))
        if self.world_size > 1:
            return rank_slice(batch, masks, self.rank, self.world_size)
        return batch, masks


def build_model(config: PretrainConfig, n_targets: int = 0) -> torch.nn.Module:
    """The objective's module (seed torch first for a reproducible initialisation); ``n_targets``: the
    width of the per-molecule targets of objectives that need them."""
    return build_objective("graph", config.objective, ObjectiveInputs(GRAPH_SPEC, config.model, n_targets=n_targets),
                           config.objective_settings)


def needs_descriptors(config: PretrainConfig) -> bool:
    """True if the configured objective regresses descriptors."""
    return "descriptors" in objective_spec("graph", config.objective).needs


def build(config: PretrainConfig, n_targets: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The objective's model and the optimizer, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    model = build_model(config, n_targets)
    return model, driver.optimizer_for(model, config)


def train_step(model: torch.nn.Module, optimizer, batch: GraphBatch, masks, config: PretrainConfig, step: int,
               total_steps: int, check_grads: bool = False) -> dict[str, float]:
    """One step of the driver (:func:`molwm.train.driver.train_step`) on a graph batch and its masks."""
    return driver.train_step(model, optimizer, GraphPretrainTask(config), (batch, masks), step, total_steps,
                             check_grads)


@torch.no_grad()
def evaluate_health(model: torch.nn.Module, batch: GraphBatch, masks) -> dict[str, float]:
    """Embedding health on one batch: the evaluated encoder's std and effective rank (and the
    JEPA's pred/target cosine)."""
    model.eval()
    out = model(batch, masks)
    z = model.embed(batch)
    return embedding_health(z, out.pred, out.target)


class GraphPretrainTask:
    """Graph pretraining as a task of the training driver (see :class:`molwm.train.driver.Task`)."""

    rate_name = "graphs_per_s"
    distributed = True

    def __init__(self, config: PretrainConfig):
        self.config = config
        self.desc, self.run_name = f"pretrain ({config.objective})", f"pretrain-{config.dataset}"
        self.prep: PrepareResult | None = None
        self.data: PretrainData | None = None
        self.stats: DescriptorStats | None = None

    def prepare(self, ctx: DistContext, progress: bool) -> None:
        c = self.config
        self.prep = prepare_dataset(PrepareConfig(dataset=c.dataset, limit=c.limit, cache_dir=c.cache_dir,
                                                  progress=progress))
        graphs, targets, allowed = CachedGraphs(self.prep.cache, with_labels=False), None, None
        self.excluded, self.excluded_counts = excluded_rows(self.prep.cache, c.exclude, progress=progress)
        if c.exclude:
            allowed = np.setdiff1d(np.arange(len(graphs)), self.excluded)
        if needs_descriptors(c):
            table = prepare_descriptors(self.prep.cache, c.descriptors.n_jobs, progress)
            # every pretraining row is a training row: the statistics see no benchmark's held-out rows
            rows = np.arange(len(graphs)) if allowed is None else allowed
            self.stats = stats = DescriptorStats.fit(table, rows, c.descriptors.stats_rows, c.seed)

            def targets(rows: np.ndarray) -> np.ndarray:
                return stats.transform(table.rows(rows))  # [B, K'] standardised, NaN where missing
        self.data = PretrainData(graphs, c, ctx.rank, ctx.world_size, targets, allowed)

    def total_steps(self, world_size: int) -> int:
        return self.data.total_steps()

    def samples_per_step(self, world_size: int) -> int:
        return self.data.global_batch

    def build_model(self) -> torch.nn.Module:
        return build_model(self.config, self.stats.size if self.stats is not None else 0)

    def batch(self, step: int, ctx: DistContext):
        return self.data.batch(step)

    def loss(self, model, batch, step: int) -> driver.StepLoss:
        out = model(batch[0], batch[1], generator=torch.Generator().manual_seed(step))
        metrics = {"loss": out.loss, "pred_loss": out.pred_loss, "anti_collapse": out.reg}
        if out.graph_loss is not None:
            metrics["graph_loss"] = out.graph_loss
        return driver.StepLoss(out.loss, {**metrics, **(out.extra or {})})

    def untrained_parameters(self, model, batch) -> tuple[str, ...]:
        return model.untrained_parameters(*batch)

    def health(self, model, batch) -> dict[str, float]:
        return evaluate_health(model, batch[0], batch[1])

    def state(self, model) -> dict[str, Any]:
        return GraphCheckpoint(self.config.objective, model.encoder_prefix, to_dict(self.config),
                               self.stats.to_dict() if self.stats is not None else None).to_state()

    def tags(self) -> dict[str, str]:
        return {"molwm.stage": "pretrain", "dataset": self.config.dataset, "objective": self.config.objective}

    def log_start(self, tracker: Tracker, model, ctx: DistContext, total: int) -> None:
        if self.config.exclude:
            tracker.log_params({"data.excluded": len(self.excluded),
                                **{f"data.excluded.{k}": v for k, v in self.excluded_counts.items()}})
            with temporary_artifact_dir() as d:
                tracker.log_artifact(write_exclusions(d / "excluded.csv", self.prep.cache, self.excluded), "data")
        tracker.log_params({"data.n_molecules": self.data.n, "data.cache_key": self.prep.cache.manifest["key"],
                            "params_encoder": count_parameters(encoder_of(model)),
                            "params_trained": sum(p.numel() for p in model.parameters() if p.requires_grad)})
        if ctx.enabled:
            tracker.log_params({"ddp.world_size": ctx.world_size, "ddp.backend": ctx.backend,
                                "ddp.global_batch": self.data.global_batch})

    def probe(self, model):
        if not self.config.probes:
            return None
        # probes touch the weights only to read them, so rank 0 runs them while the others go on
        probes = ProbeSuite(self.config.probes, self.config.cache_dir)
        return (lambda step: probes(encoder_of(model))), self.config.probes.every

    def finish(self, model, tracker: Tracker, history, checkpoint: Path, save) -> str | None:
        c = self.config
        log_training_plots(tracker, history, f"{c.dataset} {c.objective} pretraining",
                           ["loss", "pred_loss", "graph_loss", "anti_collapse"])
        return tracker.log_model(checkpoint, package_for(graph_kind_for(c.objective)), name="encoder",
                                 registered_name=c.register_name)


def run_pretrain(config: PretrainConfig, tracker: Tracker | None = None, resume: str | Path | None = None,
                 progress: bool = True, stop_after: int | None = None) -> PretrainResult:
    """Pretrain a graph encoder with the configured objective; returns where the run and the model are.

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
    config, state = driver.resumed_config(PretrainConfig, config, resume)
    run = driver.drive(GraphPretrainTask(config), tracker, state, progress, stop_after)
    return PretrainResult(run.run_id, run.model_uri, run.checkpoint, run.steps, run.final_loss, run.history,
                          run.model)
