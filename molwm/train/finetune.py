"""Fine-tune property predictors on scaffold splits, one nested MLflow run per seed.

Modes: ``scratch`` (random init), ``linear_probe`` (frozen pretrained encoder,
linear head; embeddings computed once), ``full`` (pretrained encoder and
head trained together; ``freeze_epochs`` trains the head alone first) and
``tabular`` (a forest on the frozen embedding joined with RDKit descriptors and
Morgan counts). ``extra`` joins normalised RDKit descriptors (and/or Morgan
counts) to the embedding a network head reads. Missing labels are masked out of the loss; regression
targets are standardised with train-set statistics only; the model kept is
the epoch with the best validation metric. The split of every seed is logged
as ``split.json`` (Chemprop's ``--splits-file`` format) and can be given back
through ``split.file``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from molwm.atomic import write_text_atomic
from molwm.checkpoints import load_resume_checkpoint, save_checkpoint
from molwm.config import ConfigError, check_ranges, to_dict
from molwm.data.batch import CachedGraphs
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.data.splits import dataset_record, load_splits, make_split, save_splits
from molwm.encoders.graph import GraphEncoderConfig
from molwm.kinds import load_encoder
from molwm.kinds.property import member_state, property_state
from molwm.packaging import package_for
from molwm.predictors.extras import ExtraInputs
from molwm.predictors.heads import HeadConfig
from molwm.uncertainty.fit import CalibrationConfig, UncertaintyFit, fit_from_members
from molwm.run_config import RunConfig
from molwm.tracking import NullTracker, Tracker, temporary_artifact_dir
from molwm.train.finetune_steps import (
    LabelledGraphs,
    TabularConfig,
    fit_tabular_member,
    fold_standardisation,
    head_config,
    member_predictor,
)
from molwm.train.finetune_task import FinetuneMemberTask, train_member
from molwm.train.stack import StackConfig, run_stack

_fold_standardisation = fold_standardisation  # the old private name (tests and notebooks import it)


@dataclass
class SplitConfig:
    """How rows are split.

    Attributes:
        kind: ``scaffold`` (default), ``random`` or ``stratified``.
        fractions: Train, validation, test.
        file: A Chemprop ``--splits-file`` JSON of source-row indices; one entry
            per seed (or a single entry used for every seed). Overrides ``kind``.
        train_fraction: Keep only this share of the training rows (a seeded subset per
            seed; validation and test unchanged): label-efficiency curves. The logged
            ``split.json`` lists the rows actually used.
        shared: Every seed uses the first seed's split, so the seeds vary initialisation and batch order
            (the default: the ensemble is then calibrated and checked on rows none of its members trained
            on). ``false``: one split per seed (the spread then covers splits too); the calibration is then
            fitted and reported on the first member's own rows (:mod:`molwm.uncertainty.fit`).
    """

    kind: Literal["scaffold", "random", "stratified"] = "scaffold"
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    file: str | None = None
    train_fraction: float = 1.0
    shared: bool = True

    def validate(self) -> None:
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        fr = self.fractions
        # fine-tuning needs every part: train to fit, validation to stop early, test to report
        if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1) > 1e-6:
            raise ConfigError(f"fractions must be (train, val, test), each above 0, summing to 1; got {list(fr)}")


@dataclass(kw_only=True)
class FinetuneConfig(RunConfig):
    """A fine-tuning run: one member per seed, each a task of the training driver.

    The shared run settings (:class:`~molwm.run_config.RunConfig`: ``device``, ``max_steps``,
    ``budget_samples``/``budget_seconds`` per member, ``grad_clip``, ``lr_schedule``,
    ``log_every``, ``health_every``, ``checkpoint_every``, ``threads``) mean what they mean in
    pretraining; fine-tuning's defaults differ where its recipe always did (below). ``seed`` is
    not used: ``seeds`` lists the members.

    Attributes:
        dataset: Labelled card (regression or classification, one or more targets).
        limit: First N rows only.
        cache_dir: Featurization cache root.
        mode: ``full``, ``linear_probe``, ``scratch``, ``tabular`` or ``stack`` (diverse members, weights
            fitted on validation rows: :mod:`molwm.train.stack`).
        from_model: Pretrained checkpoint or MLflow model URI (needed unless ``scratch``).
        encoder: Encoder sizes for ``scratch`` (a pretrained model brings its own).
        head: Prediction head (``linear_probe`` always uses a linear head).
        split: Split kind, fractions, or a split file.
        seeds: One model per seed; metrics reported as mean ± std.
        epochs: Maximum epochs.
        batch_size: Molecules per step.
        lr: Learning rate of the head (and of the encoder in ``scratch``); constant by default
            (``lr_schedule``), no warm-up (``warmup_steps``).
        encoder_lr_ratio: Encoder learning rate relative to ``lr`` in ``full`` mode.
        freeze_epochs: ``full`` mode: train the head alone on the frozen encoder for this many
            epochs, then everything (staged unfreezing; 0: from the start).
        extra: Molecule features joined to the embedding before the head (RDKit descriptors,
            Morgan counts), standardised on each member's training rows.
        tabular: The forest of ``mode: tabular`` (its features: the embedding plus ``extra``,
            RDKit descriptors and Morgan counts when ``extra`` names none).
        weight_decay: AdamW weight decay (every parameter of the member).
        grad_clip: Max gradient norm.
        patience: Epochs without validation improvement before stopping.
        out_dir: Where the checkpoint goes (each member's rolling checkpoint under ``members/``).
        experiment: MLflow experiment.
        run_name: MLflow run name.
        register_name: Register the result in the MLflow model registry under this name.
        alias: Alias to point at the registered version (e.g. ``champion``).
        calibration: Uncertainty calibration and applicability domain (molwm.uncertainty.fit).
        stack: The members of ``mode: stack`` (:class:`molwm.train.stack.StackConfig`).
    """

    dataset: str
    limit: int | None = None
    cache_dir: str | None = None
    mode: Literal["full", "linear_probe", "scratch", "tabular", "stack"] = "full"
    from_model: str | None = None
    encoder: GraphEncoderConfig = field(default_factory=GraphEncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    encoder_lr_ratio: float = 0.5
    freeze_epochs: int = 0
    extra: ExtraInputs = field(default_factory=ExtraInputs)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    lr_schedule: Literal["cosine", "constant"] = "constant"
    grad_clip: float = 5.0
    patience: int = 15
    out_dir: str = "outputs/finetune"
    experiment: str = "molwm-finetune"
    run_name: str | None = None
    register_name: str | None = None
    alias: str | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    stack: StackConfig = field(default_factory=StackConfig)

    def validate(self) -> None:
        super().validate()
        if self.seed != 0 and self.seed not in self.seeds:
            raise ConfigError(f"fine-tuning trains one member per entry of seeds; set seeds=[{self.seed}] "
                              f"instead of seed={self.seed}")
        needs_model = self.mode != "stack" or any(m in ("molwm_base", "molwm_tabular") for m in self.stack.members)
        if self.mode != "scratch" and needs_model and not self.from_model:
            raise ConfigError(f"mode '{self.mode}' needs from_model (a pretrained checkpoint or model URI)"
                              + (": the stack's molwm_base and molwm_tabular members start from it"
                                 if self.mode == "stack" else ""))
        if self.mode == "scratch" and self.from_model:  # a user who names a model expects it used
            raise ConfigError("--from/from_model was given but mode is scratch; "
                              "set mode=full or mode=linear_probe")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):  # twin members would report a spread of 0
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")
        check_ranges(self, at_least_one=("epochs", "batch_size", "patience", "limit"),
                     positive=("encoder_lr_ratio",))
        if self.freeze_epochs < 0 or (self.freeze_epochs and self.mode != "full"):
            raise ConfigError(f"freeze_epochs ({self.freeze_epochs}) needs mode=full and must not be negative")
        if self.freeze_epochs >= self.epochs:
            raise ConfigError(f"freeze_epochs ({self.freeze_epochs}) must be below epochs ({self.epochs})")

    def extra_used(self) -> ExtraInputs:
        """The extra features actually computed (the tabular head's default: descriptors and Morgan counts)."""
        if self.mode == "tabular" and not self.extra.enabled:
            return ExtraInputs(descriptors=True, morgan_counts=True, morgan_bits=self.extra.morgan_bits)
        return self.extra


@dataclass
class FinetuneResult:
    """Per-seed and summary metrics, and where the model went."""

    run_id: str | None
    model_uri: str | None
    checkpoint: Path
    task: str
    per_seed: list[dict[str, float]]
    summary: dict[str, float]
    split_file: Path
    uncertainty: dict[str, float] = field(default_factory=dict)


def _splits(config: FinetuneConfig, cache, graphs: CachedGraphs, y: np.ndarray) -> list[tuple]:
    """One (train, val, test) of cache positions per seed (training rows subsampled by ``split.train_fraction``)."""
    return [subsample_train(s, config.split.train_fraction, seed) for s, seed in
            zip(_full_splits(config, cache, graphs, y), config.seeds)]


def subsample_train(split: tuple, fraction: float, seed: int) -> tuple:
    """``split`` with a seeded ``fraction`` of its training rows (at least 2), sorted; val and test unchanged."""
    if fraction >= 1.0:
        return split
    train, val, test = split
    keep = max(2, int(round(fraction * len(train))))
    sub = np.sort(np.random.default_rng([seed, 20_251]).choice(np.asarray(train), min(keep, len(train)),
                                                                 replace=False))
    return sub, val, test


def _full_splits(config: FinetuneConfig, cache, graphs: CachedGraphs, y: np.ndarray) -> list[tuple]:
    source = graphs.source_index
    if config.split.file:
        pos_of = {int(r): i for i, r in enumerate(source)}
        n_rows = int(cache.manifest["n_input"])
        loaded = load_splits(config.split.file, n_rows, dataset_record(source, cache.meta()["smiles"], n_rows),
                             f"dataset '{cache.manifest['dataset']}'")
        if len(loaded) not in (1, len(config.seeds)):
            raise ConfigError(f"split.file has {len(loaded)} entries for {len(config.seeds)} seeds")
        out = []
        for part in (loaded * len(config.seeds))[: len(config.seeds)]:
            kept = tuple(np.array([pos_of[int(r)] for r in p if int(r) in pos_of], dtype=np.int64) for p in part)
            dropped = sum(len(p) for p in part) - sum(len(k) for k in kept)
            if dropped:
                print(f"split.file: {dropped} rows are not featurized (see the rejects report) and were left out")
            out.append(kept)
        return out
    smiles = cache.meta()["smiles"].tolist()
    labels = y[:, 0] if y is not None else None
    seeds = [config.seeds[0]] * len(config.seeds) if config.split.shared else config.seeds
    return [make_split(config.split.kind, smiles, tuple(config.split.fractions), seed, labels) for seed in seeds]


def run_finetune(config: FinetuneConfig, tracker: Tracker | None = None, progress: bool = True,
                 nested: bool = False, log_model: bool = True, resume: bool = False) -> FinetuneResult:
    """Fine-tune on every seed; log nested runs, the split file, summary and the model.

    Args:
        config: The run.
        tracker: Where to log (default: nowhere).
        progress: Progress bars.
        nested: Open the run under the active one (a search's trial or refit).
        log_model: Log the checkpoint as an MLflow model (a search's trials do not).
        resume: Continue each network member from its rolling checkpoint under ``out_dir/members``
            where there is one (a finished member only redoes its outputs; exact, as the driver
            resumes every task); members without one start afresh. The fine-tune's tracked run is
            continued too (its id is kept in ``out_dir/members/run_id.txt``), so a killed run does not
            stay ``RUNNING`` beside a new one.
    """
    tracker = tracker or NullTracker()
    if config.threads:
        torch.set_num_threads(config.threads)
    prep = prepare_dataset(PrepareConfig(dataset=config.dataset, limit=config.limit, cache_dir=config.cache_dir,
                                         progress=progress))
    card = prep.card
    task = "classification" if "classification" in card.task.type else "regression"
    if not card.columns.target_names:
        raise ConfigError(f"dataset '{card.name}' has no targets to fine-tune on")
    graphs = CachedGraphs(prep.cache, with_labels=True)
    pretrained = load_encoder(config.from_model) if config.from_model and config.mode != "scratch" else None
    enc_cfg = pretrained.config if pretrained is not None else config.encoder
    smiles = prep.cache.meta()["smiles"].tolist()
    names = card.columns.target_names
    splits = _splits(config, prep.cache, graphs, np.concatenate(graphs.labels))
    source = graphs.source_index
    tags = {"molwm.stage": "finetune", "dataset": card.name, "mode": config.mode}
    out_dir = Path(config.out_dir)
    # a resumed fine-tune continues its run (as its members continue theirs), not a new one beside it
    run_file = out_dir / "members" / "run_id.txt"
    reopened = run_file.read_text().strip() if resume and run_file.is_file() else None
    with tracker.run(config.run_name or f"finetune-{card.name}-{config.mode}", tags=tags, nested=nested,
                     run_id=reopened or None) as run_id:
        if run_id and not reopened:
            run_file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_file, run_id + "\n")
        if not reopened:  # params are logged once (MLflow refuses a changed value)
            tracker.log_config(config)
            tracker.log_params({"task": task, "n_molecules": len(graphs), "encoder_used.dim": enc_cfg.dim,
                                "encoder_used.layers": enc_cfg.layers})
        fit = run_stack if config.mode == "stack" else _fit_ensemble
        with temporary_artifact_dir() as d:  # calibration and domain on validation rows, figures on test rows
            state, per_seed, unc = fit(config, graphs, enc_cfg, smiles, splits, task, names, pretrained, tracker,
                                       progress, tags, resume, d, f"{card.name} ({config.mode})")
            for plot in unc.plots:
                tracker.log_artifact(plot, "plots")
        summary = {}
        for key in per_seed[0]:
            vals = np.array([m[key] for m in per_seed], dtype=float)
            summary[f"{key}_mean"] = float(np.mean(vals))
            summary[f"{key}_std"] = float(np.std(vals))
        tracker.log_metrics(summary)
        record = dataset_record(source, prep.cache.meta()["smiles"], int(prep.cache.manifest["n_input"]))
        split_file = save_splits([tuple(source[p] for p in s) for s in splits], out_dir / "split.json", record)
        tracker.log_artifact(split_file)
        tracker.log_metrics(unc.metrics)
        print("\n".join(unc.lines))
        ckpt = save_checkpoint(state, out_dir / "model.pt")
        results = {"per_seed": per_seed, "summary": summary, "uncertainty": unc.metrics}
        write_text_atomic(out_dir / "results.json", json.dumps(results, indent=1))
        tracker.log_artifact(out_dir / "results.json")
        model_uri = tracker.log_model(ckpt, package_for(state["kind"]), name="model",
                                      registered_name=config.register_name, alias=config.alias) if log_model else None
    return FinetuneResult(run_id, model_uri, ckpt, task, per_seed, summary, split_file, unc.metrics)


def _fit_ensemble(config: FinetuneConfig, graphs: CachedGraphs, enc_cfg, smiles: list[str], splits, task: str,
                  names: list[str], pretrained, tracker: Tracker, progress: bool, tags: dict, resume: bool,
                  plot_dir: Path, title: str) -> tuple[dict, list[dict], UncertaintyFit]:
    """A deep ensemble (one network or tabular member per seed): ``(checkpoint state, per-seed metrics,
    calibration and domain)``."""
    data = LabelledGraphs(graphs, enc_cfg, smiles, config.extra_used())
    models, members, per_seed, scalers = [], [], [], []
    for seed, split in zip(config.seeds, splits):
        if config.mode == "tabular":
            with tracker.run(f"seed-{seed}", tags={**tags, "seed": str(seed)}, nested=True):
                tracker.log_params({"seed": seed, "n_train": len(split[0]), "n_val": len(split[1]),
                                    "n_test": len(split[2])})
                model, metrics, scaler = fit_tabular_member(config, data, split, task, seed, pretrained,
                                                            tracker, names)
        else:  # a task of the training driver, which opens the seed's nested run
            ckpt = FinetuneMemberTask.checkpoint_path(config, seed)
            state = load_resume_checkpoint(ckpt) if resume and ckpt.is_file() else None
            if state is not None:
                print(f"seed {seed}: resuming from {ckpt} (step {state['step']})")
            model, metrics, scaler = train_member(config, data, split, task, len(names), seed, pretrained,
                                                  tracker, names, progress, tags=tags, state=state)
        models.append(model)
        members.append(member_state(model))
        per_seed.append(metrics)
        scalers.append(scaler)
    predictors = [member_predictor(m, data, task, sc) for m, sc in zip(models, scalers)]
    unc = fit_from_members(config.calibration, task, splits, data.y, data.smiles, lambda k, rows: predictors[k](rows),
                           lambda rows: models[0].embed(data.batch(rows)), plot_dir, title)
    state = property_state(config=to_dict(config), encoder_config=enc_cfg,
                           head_config=head_config(config.mode, config.head), extra=config.extra_used(),
                           member_kind="tabular" if config.mode == "tabular" else "network", task=task,
                           targets=names, seeds=list(config.seeds), members=members, scalers=scalers,
                           metrics=per_seed, uncertainty=unc.state,
                           train_targets=data.y[splits[0][0]])  # the first seed's training labels
    return state, per_seed, unc
