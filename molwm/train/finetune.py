"""Fine-tune property predictors on scaffold splits, one nested MLflow run per seed.

Modes: ``scratch`` (random init), ``linear_probe`` (frozen pretrained encoder,
linear head; embeddings computed once) and ``full`` (pretrained encoder and
head trained together). Missing labels are masked out of the loss; regression
targets are standardised with train-set statistics only; the model kept is
the epoch with the best validation metric. The split of every seed is logged
as ``split.json`` (Chemprop's ``--splits-file`` format) and can be given back
through ``split.file``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.checkpoints import save_checkpoint
from molwm.config import ConfigError, to_dict
from molwm.data.batch import CachedGraphs, GraphBatch
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.data.splits import load_splits, make_split, save_splits
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig, structural_pe
from molwm.models import load_encoder
from molwm.models.property import PROPERTY_MODEL
from molwm.packaging import package_for
from molwm.tasks.heads import HeadConfig, PropertyModel
from molwm.tasks.metrics import masked_loss, primary_metric, task_metrics
from molwm.tasks.uncertainty import CalibrationConfig, fit_from_members
from molwm.tracking import NullTracker, Tracker, temporary_artifact_dir
from molwm.train.common import plot_curves


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
        shared: Every seed uses the first seed's split (what calibrating the ensemble needs).
    """

    kind: Literal["scaffold", "random", "stratified"] = "scaffold"
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    file: str | None = None
    train_fraction: float = 1.0
    shared: bool = False

    def validate(self) -> None:
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1], got {self.train_fraction}")


@dataclass
class FinetuneConfig:
    """A fine-tuning run.

    Attributes:
        dataset: Labelled card (regression or classification, one or more targets).
        limit: First N rows only.
        cache_dir: Featurization cache root.
        mode: ``full``, ``linear_probe`` or ``scratch``.
        from_model: Pretrained checkpoint or MLflow model URI (needed unless ``scratch``).
        encoder: Encoder sizes for ``scratch`` (a pretrained model brings its own).
        head: Prediction head (``linear_probe`` always uses a linear head).
        split: Split kind, fractions, or a split file.
        seeds: One model per seed; metrics reported as mean ± std.
        epochs: Maximum epochs.
        batch_size: Molecules per step.
        lr: Learning rate of the head (and of the encoder in ``scratch``).
        encoder_lr_ratio: Encoder learning rate relative to ``lr`` in ``full`` mode.
        weight_decay: AdamW weight decay.
        patience: Epochs without validation improvement before stopping.
        threads: torch intra-op threads (0: default).
        out_dir: Where the checkpoint goes.
        experiment: MLflow experiment.
        run_name: MLflow run name.
        register_name: Register the result in the MLflow model registry under this name.
        alias: Alias to point at the registered version (e.g. ``champion``).
        calibration: Uncertainty calibration and applicability domain (molwm.tasks.uncertainty).
    """

    dataset: str
    limit: int | None = None
    cache_dir: str | None = None
    mode: Literal["full", "linear_probe", "scratch"] = "full"
    from_model: str | None = None
    encoder: GraphEncoderConfig = field(default_factory=GraphEncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    encoder_lr_ratio: float = 0.5
    weight_decay: float = 1e-5
    patience: int = 15
    threads: int = 0
    out_dir: str = "outputs/finetune"
    experiment: str = "molwm-finetune"
    run_name: str | None = None
    register_name: str | None = None
    alias: str | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def validate(self) -> None:
        if self.mode != "scratch" and not self.from_model:
            raise ConfigError(f"mode '{self.mode}' needs from_model (a pretrained checkpoint or model URI)")
        if self.mode == "scratch" and self.from_model:  # a user who names a model expects it used
            raise ConfigError("--from/from_model was given but mode is scratch; "
                              "set mode=full or mode=linear_probe")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


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


class _Labelled:
    """All molecules of a labelled cache, with the PE computed per batch."""

    def __init__(self, graphs: CachedGraphs, enc: GraphEncoderConfig):
        self.graphs = graphs
        self.enc = enc
        self.y = np.concatenate(graphs.labels) if graphs.labels else None

    def batch(self, rows: np.ndarray, generator: torch.Generator | None = None) -> GraphBatch:
        b = self.graphs.batch(rows)
        b.pe = structural_pe(b.edge_index, b.batch, b.num_graphs, self.enc.rw_steps, self.enc.lap_k, generator)
        return b


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
        loaded = load_splits(config.split.file)
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


def _predict(model: PropertyModel, data: _Labelled, rows: np.ndarray, task: str, scaler, batch_size: int,
             cached_emb: torch.Tensor | None = None) -> np.ndarray:
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(rows), 256):
            chunk = rows[i : i + 256]
            if cached_emb is not None:
                out = model.head(cached_emb[chunk])
            else:
                out = model(data.batch(chunk))
            outs.append(out)
    out = torch.cat(outs).numpy() if outs else np.zeros((0, 1), np.float32)
    if task == "classification":
        return 1.0 / (1.0 + np.exp(-out))
    return out * scaler[1] + scaler[0]


def _train_one(config: FinetuneConfig, data: _Labelled, split, task: str, n_tasks: int, seed: int,
               pretrained: GraphEncoder | None, tracker: Tracker, names: list[str], progress: bool = True):
    from tqdm.auto import tqdm

    train, val, test = split
    y = data.y
    if task == "regression":
        mean = np.nanmean(y[train], axis=0)
        std = np.nanstd(y[train], axis=0)
        std = np.where(std > 0, std, 1.0)
    else:
        mean, std = np.zeros(n_tasks, np.float32), np.ones(n_tasks, np.float32)
    y_scaled = torch.from_numpy(((y - mean) / std).astype(np.float32))
    torch.manual_seed(seed)
    encoder = copy.deepcopy(pretrained) if pretrained is not None else GraphEncoder(GRAPH_SPEC, config.encoder)
    head_cfg = _head_config(config)
    model = PropertyModel(encoder, n_tasks, head_cfg)
    frozen = config.mode == "linear_probe"
    cached = None
    if frozen:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        model.encoder.eval()
        with torch.no_grad():
            all_rows = np.arange(len(data.graphs))
            cached = torch.cat([model.embed(data.batch(all_rows[i : i + 256]))
                                for i in range(0, len(all_rows), 256)])
        # standardise the frozen features with train statistics; folded into the head after training
        feat_mean = cached[train].mean(0)
        feat_std = cached[train].std(0).clamp(min=1e-6)
        cached = (cached - feat_mean) / feat_std
        groups = [{"params": model.head.parameters(), "lr": config.lr}]
    elif config.mode == "full":
        groups = [{"params": model.head.parameters(), "lr": config.lr},
                  {"params": model.encoder.parameters(), "lr": config.lr * config.encoder_lr_ratio}]
    else:
        groups = [{"params": model.parameters(), "lr": config.lr}]
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    metric, higher = primary_metric(task)
    best, best_state, best_epoch, bad = None, None, -1, 0
    curves: dict[str, list[tuple[int, float]]] = {}
    rng = np.random.default_rng([seed, 17])
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(config.epochs), desc=f"seed {seed}", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        model.train()
        if frozen:
            model.encoder.eval()
        order = rng.permutation(train)
        losses = []
        for i in range(0, len(order), config.batch_size):
            rows = order[i : i + config.batch_size]
            if len(rows) < 2 and not frozen:
                continue
            out = model.head(cached[rows]) if frozen else model(data.batch(rows, gen))
            loss = masked_loss(out, y_scaled[rows], task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(float(loss.detach()))
        val_pred = _predict(model, data, val, task, (mean, std), config.batch_size, cached)
        score = task_metrics(task, y[val], val_pred)[metric]
        curves.setdefault("train_loss", []).append((epoch, float(np.mean(losses)) if losses else float("nan")))
        curves.setdefault(f"val_{metric}", []).append((epoch, score))
        tracker.log_metrics({"train_loss": curves["train_loss"][-1][1], f"val_{metric}": score}, step=epoch)
        improved = best is None or (score > best if higher else score < best)
        if improved and np.isfinite(score):
            best, best_state, best_epoch, bad = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= config.patience:
                break
        bar.set_postfix({metric: f"{score:.3f}"}, refresh=False)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    test_pred = _predict(model, data, test, task, (mean, std), config.batch_size, cached)
    val_pred = _predict(model, data, val, task, (mean, std), config.batch_size, cached)
    metrics = {f"test_{k}": v for k, v in task_metrics(task, y[test], test_pred).items()}
    metrics.update({f"val_{k}": v for k, v in task_metrics(task, y[val], val_pred).items()})
    metrics["best_epoch"] = best_epoch
    if frozen:
        _fold_standardisation(model.head, feat_mean, feat_std)
    tracker.log_metrics(metrics)
    with temporary_artifact_dir() as d:
        from molwm.tasks.plots import parity_plot, roc_plot

        title = f"{config.dataset} seed {seed} test ({config.mode})"
        plot = roc_plot if task == "classification" else parity_plot
        tracker.log_artifact(plot(y[test], test_pred, d / f"test_{'roc' if task == 'classification' else 'parity'}.png",
                                  title, names), "plots")
        curve = plot_curves(curves, list(curves), d / "training_curves.png", title)
        if curve:
            tracker.log_artifact(curve, "plots")
    return model, metrics, (mean, std)


def _head_config(config: FinetuneConfig) -> HeadConfig:
    """The head actually trained: a linear one for a linear probe."""
    if config.mode == "linear_probe":
        return HeadConfig(layers=1, pooling=config.head.pooling)
    return config.head


@torch.no_grad()
def _fold_standardisation(head: torch.nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make ``head(x)`` equal the trained ``head((x - mean) / std)``, so the saved model takes raw embeddings."""
    head.bias.sub_(head.weight @ (mean / std))
    head.weight.div_(std)


def run_finetune(config: FinetuneConfig, tracker: Tracker | None = None, progress: bool = True) -> FinetuneResult:
    """Fine-tune on every seed; log nested runs, the split file, summary and the model."""
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
    data = _Labelled(graphs, enc_cfg)
    names = card.columns.target_names
    splits = _splits(config, prep.cache, graphs, data.y)
    source = graphs.source_index
    tags = {"molwm.stage": "finetune", "dataset": card.name, "mode": config.mode}
    members, per_seed, scalers, models = [], [], [], []
    out_dir = Path(config.out_dir)
    with tracker.run(config.run_name or f"finetune-{card.name}-{config.mode}", tags=tags) as run_id:
        tracker.log_config(config)
        tracker.log_params({"task": task, "n_molecules": len(graphs), "encoder_used.dim": enc_cfg.dim,
                            "encoder_used.layers": enc_cfg.layers})
        for seed, split in zip(config.seeds, splits):
            with tracker.run(f"seed-{seed}", tags={**tags, "seed": str(seed)}, nested=True):
                tracker.log_params({"seed": seed, "n_train": len(split[0]), "n_val": len(split[1]),
                                    "n_test": len(split[2])})
                model, metrics, scaler = _train_one(config, data, split, task, len(names), seed, pretrained,
                                                    tracker, names, progress)
            models.append(model)
            members.append(model.state_dict())
            per_seed.append(metrics)
            scalers.append(scaler)
        summary = {}
        for key in per_seed[0]:
            vals = np.array([m[key] for m in per_seed], dtype=float)
            summary[f"{key}_mean"] = float(np.mean(vals))
            summary[f"{key}_std"] = float(np.std(vals))
        tracker.log_metrics(summary)
        split_file = save_splits([tuple(source[p] for p in s) for s in splits], out_dir / "split.json")
        tracker.log_artifact(split_file)
        with temporary_artifact_dir() as d:  # calibration and domain on validation rows, figures on test rows
            unc = fit_from_members(config.calibration, task, splits, data.y, prep.cache.meta()["smiles"].tolist(),
                                   lambda k, rows: _predict(models[k], data, rows, task, scalers[k], 0),
                                   lambda rows: models[0].embed(data.batch(rows)), d, f"{card.name} ({config.mode})")
            tracker.log_metrics(unc.metrics)
            for plot in unc.plots:
                tracker.log_artifact(plot, "plots")
        print("\n".join(unc.lines))
        state = {
            "kind": PROPERTY_MODEL.name,
            "config": to_dict(config),
            "spec": GRAPH_SPEC.to_dict(),
            "encoder_config": to_dict(enc_cfg),
            "head_config": to_dict(_head_config(config)),
            "task": task,
            "targets": names,
            "seeds": list(config.seeds),
            "members": members,
            "scalers": [[np.asarray(m, np.float64).tolist(), np.asarray(s, np.float64).tolist()] for m, s in scalers],
            "metrics": per_seed,
            "uncertainty": unc.state,
            # the training rows' labels (first seed), drawn behind predicted-property histograms
            "train_targets": np.asarray(data.y[splits[0][0]], np.float64).tolist(),
        }
        ckpt = save_checkpoint(state, out_dir / "model.pt")
        results = {"per_seed": per_seed, "summary": summary, "uncertainty": unc.metrics}
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        tracker.log_artifact(out_dir / "results.json")
        model_uri = tracker.log_model(ckpt, package_for(PROPERTY_MODEL.name), name="model",
                                      registered_name=config.register_name, alias=config.alias)
    return FinetuneResult(run_id, model_uri, ckpt, task, per_seed, summary, split_file, unc.metrics)
