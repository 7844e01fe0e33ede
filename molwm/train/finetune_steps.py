"""One fine-tuned ensemble member's pieces: the labelled molecules, prediction and scoring, and the tabular head.

A network member is trained by the driver (:mod:`molwm.train.finetune_task`);
:func:`fit_tabular_member` fits the tabular head (a forest on the frozen embedding
joined with RDKit descriptors and Morgan counts), its leaf size and feature share
chosen on validation rows. :mod:`molwm.train.finetune` runs one per seed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.data.batch import CachedGraphs, GraphBatch
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
from molwm.predictors.extras import ExtraInputs, FeatureScaler, extra_features
from molwm.predictors.forest import ArrayForest
from molwm.predictors.heads import HeadConfig, PropertyModel, TabularMember
from molwm.evaluation.metrics import primary_metric, task_metrics
from molwm.tracking import Tracker, temporary_artifact_dir
from molwm.train.common import plot_curves


@dataclass
class TabularConfig:
    """The tabular head (``mode: tabular``): a random forest per task on the frozen embedding
    joined with the extra features of ``extra`` (RDKit descriptors and Morgan counts by default).

    Attributes:
        n_estimators: Trees per forest.
        min_samples_leaf: Leaf sizes tried; the best on validation rows is kept.
        max_features: Shares of the features tried at each split; the best on validation is kept.
        n_jobs: Fitting processes (-1: every core).
    """

    n_estimators: int = 300
    min_samples_leaf: list[int] = field(default_factory=lambda: [1, 3])
    max_features: list[float] = field(default_factory=lambda: [0.1, 0.3])
    n_jobs: int = -1


class LabelledGraphs:
    """All molecules of a labelled cache (PE computed per batch), their labels and, when asked, extra features."""

    def __init__(self, graphs: CachedGraphs, enc: GraphEncoderConfig, smiles: list[str],
                 extra: ExtraInputs | None = None):
        self.graphs, self.enc, self.smiles, self.extra_config = graphs, enc, smiles, extra
        self.y = np.concatenate(graphs.labels) if graphs.labels else None
        self.extra = extra_features(smiles, extra) if extra is not None and extra.enabled else None

    def batch(self, rows: np.ndarray, generator: torch.Generator | None = None) -> GraphBatch:
        """Molecules ``rows`` with their positional code; ``generator`` draws the Laplacian signs (training).

        The code of each molecule is computed once (its eigendecomposition was ~15% of a CPU
        fine-tune's time when redone for every batch of every epoch) and gathered per batch; the
        random signs are drawn per batch exactly as :func:`~molwm.encoders.graph.structural_pe` draws them.
        """
        batch = self.graphs.batch(rows)
        pe = self._pe_rows(np.asarray(rows, dtype=np.int64))
        lap_k = self.enc.lap_k
        if generator is not None and lap_k:
            signs = torch.randint(0, 2, (batch.num_graphs, 1, lap_k), generator=generator, device=generator.device)
            signs = (signs.to(pe) * 2 - 1)[:, 0][batch.batch]  # [N, lap_k]
            pe = torch.cat([pe[:, : pe.shape[1] - lap_k], pe[:, pe.shape[1] - lap_k:] * signs], 1)
        batch.pe = pe
        return batch

    def _pe_rows(self, rows: np.ndarray) -> torch.Tensor:
        """``[N, P]`` canonical positional code of molecules ``rows``, atoms in batch order."""
        if getattr(self, "_pe", None) is None:
            n = len(self.graphs)
            order = np.argsort(self.graphs.atom_counts(), kind="stable")  # chunks of similar size: little padding
            parts: list = [None] * n
            for i in range(0, n, 256):
                chunk = order[i: i + 256]
                b = self.enc.prepare(self.graphs.batch(chunk))
                for k, piece in zip(chunk, torch.split(b.pe, b.ptr.diff().tolist())):
                    parts[k] = piece
            sizes = np.array([len(x) for x in parts], dtype=np.int64)
            self._pe, self._pe_ptr = torch.cat(parts), np.concatenate([[0], np.cumsum(sizes)])
        starts, sizes = self._pe_ptr[rows], np.diff(self._pe_ptr)[rows]
        atoms = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(sizes.sum())
        return self._pe[torch.from_numpy(atoms)]


def predict_rows(model, data: LabelledGraphs, rows: np.ndarray, task: str, scaler,
                 cached_emb: torch.Tensor | None = None, extra: torch.Tensor | None = None) -> np.ndarray:
    """Predictions (probabilities, or values in label units) of one member for cache positions ``rows``."""
    if isinstance(model, TabularMember):
        out = model.predict_features(tabular_features(model, data, rows))
    else:
        model.eval()
        device = next(model.parameters()).device
        outs = []
        with torch.no_grad():
            for i in range(0, len(rows), 256):
                chunk = rows[i: i + 256]
                x = None if extra is None else extra[chunk].to(device)
                z = cached_emb[chunk].to(device) if cached_emb is not None else model.embed(data.batch(chunk).to(device))
                outs.append(model.head_input(z, x).cpu())
        out = torch.cat(outs).numpy() if outs else np.zeros((0, 1), np.float32)
    if task == "classification":
        return 1.0 / (1.0 + np.exp(-out))
    return out * scaler[1] + scaler[0]


def head_config(mode: str, head: HeadConfig) -> HeadConfig:
    """The head actually trained: a linear one for a linear probe."""
    if mode == "linear_probe":
        return HeadConfig(layers=1, pooling=head.pooling)
    return head


@torch.no_grad()
def fold_standardisation(head: torch.nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make ``head(x)`` equal the trained ``head((x - mean) / std)``, so the saved model takes raw embeddings."""
    head.bias.sub_(head.weight @ (mean / std))
    head.weight.div_(std)


def target_scaler(y: np.ndarray, train: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Train-row mean and std of each regression target (0 / 1 for classification)."""
    if task != "regression":
        return np.zeros(y.shape[1], np.float32), np.ones(y.shape[1], np.float32)
    std = np.nanstd(y[train], axis=0)
    return np.nanmean(y[train], axis=0), np.where(std > 0, std, 1.0)


def set_encoder_trainable(model: PropertyModel, trainable: bool) -> None:
    """Freeze or unfreeze a member's encoder."""
    for p in model.encoder.parameters():
        p.requires_grad_(trainable)


def score_member(model, data: LabelledGraphs, split, task: str, scaler, cached=None, extra=None) -> dict[str, float]:
    """``test_*`` and ``val_*`` metrics of a trained member."""
    _, val, test = split
    test_pred = predict_rows(model, data, test, task, scaler, cached, extra)
    val_pred = predict_rows(model, data, val, task, scaler, cached, extra)
    metrics = {f"test_{k}": v for k, v in task_metrics(task, data.y[test], test_pred).items()}
    metrics.update({f"val_{k}": v for k, v in task_metrics(task, data.y[val], val_pred).items()})
    return metrics


def log_member(config, tracker: Tracker, data: LabelledGraphs, split, task: str, seed: int, names: list[str],
                metrics: dict, model, scaler, curves: dict) -> None:
    """Log a member's metrics, its test parity (or ROC) plot and its training curves."""
    from molwm.evaluation.plots import parity_plot, roc_plot

    test = split[2]
    tracker.log_metrics(metrics)
    test_pred = predict_rows(model, data, test, task, scaler, None, _extra_tensor(model, data))
    with temporary_artifact_dir() as d:
        title = f"{config.dataset} seed {seed} test ({config.mode})"
        plot = roc_plot if task == "classification" else parity_plot
        tracker.log_artifact(plot(data.y[test], test_pred, d / f"test_{'roc' if task == 'classification' else 'parity'}.png",
                                  title, names), "plots")
        curve = plot_curves(curves, list(curves), d / "training_curves.png", title) if curves else None
        if curve:
            tracker.log_artifact(curve, "plots")


def _extra_tensor(model, data: LabelledGraphs) -> torch.Tensor | None:
    if isinstance(model, PropertyModel) and model.extra is not None:
        return torch.from_numpy(model.extra_scaler.transform(data.extra))
    return None


def member_predictor(model, data: LabelledGraphs, task: str, scaler):
    """``rows -> predictions`` of a trained member (what calibration and the summary read)."""
    extra = _extra_tensor(model, data)
    return lambda rows: predict_rows(model, data, rows, task, scaler, None, extra)


# ---- the tabular head --------------------------------------------------------------------------------------

@torch.no_grad()
def _embeddings(encoder: GraphEncoder, data: LabelledGraphs, pooling: str) -> np.ndarray:
    encoder.eval()
    rows = np.arange(len(data.graphs))
    return torch.cat([encoder.embed(data.batch(rows[i: i + 256]), pooling)
                      for i in range(0, len(rows), 256)]).numpy().astype(np.float64)


def tabular_features(member: TabularMember, data: LabelledGraphs, rows: np.ndarray) -> np.ndarray:
    """Forest inputs of cache positions ``rows`` (embeddings cached on ``data`` per member encoder)."""
    key = id(member.encoder)
    cache = getattr(data, "_tabular_emb", {})
    if key not in cache:
        cache[key] = _embeddings(member.encoder, data, member.pooling)
        data._tabular_emb = cache
    x = np.concatenate([cache[key][rows], data.extra[rows].astype(np.float64)], axis=1)
    return np.where(np.isnan(x), member.fill, x)


def fit_tabular_member(config, data: LabelledGraphs, split, task: str, seed: int, pretrained: GraphEncoder,
                       tracker: Tracker, names: list[str]):
    """Fit the tabular head of one seed; returns ``(member, metrics, scaler)`` like :func:`train_member`."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    train, val, _ = split
    mean, std = target_scaler(data.y, train, task)
    tab: TabularConfig = config.tabular
    encoder = copy.deepcopy(pretrained).eval()
    emb = _embeddings(encoder, data, config.head.pooling)
    x_all = np.concatenate([emb, data.extra.astype(np.float64)], axis=1)
    fill = np.nanmedian(x_all[train], axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    x_all = np.where(np.isnan(x_all), fill, x_all)
    metric, higher = primary_metric(task)
    best = None
    for leaf in tab.min_samples_leaf:
        for share in tab.max_features:
            forests = []
            for j in range(data.y.shape[1]):
                ok = train[~np.isnan(data.y[train, j])]
                kind = RandomForestClassifier if task == "classification" else RandomForestRegressor
                rf = kind(n_estimators=tab.n_estimators, min_samples_leaf=leaf, max_features=share,
                          random_state=seed, n_jobs=tab.n_jobs)
                target = data.y[ok, j].astype(int) if task == "classification" else (data.y[ok, j] - mean[j]) / std[j]
                forests.append(ArrayForest.from_sklearn(rf.fit(x_all[ok], target)))
            member = TabularMember(encoder, config.head.pooling, data.extra_config, forests, fill, task)
            data._tabular_emb = {id(encoder): emb}
            score = task_metrics(task, data.y[val], predict_rows(member, data, val, task, (mean, std)))[metric]
            if best is None or (score > best[0] if higher else score < best[0]):
                best = (score, member, leaf, share)
    _, member, leaf, share = best
    metrics = score_member(member, data, split, task, (mean, std))
    metrics.update({"best_epoch": -1, "tabular.min_samples_leaf": float(leaf), "tabular.max_features": share})
    log_member(config, tracker, data, split, task, seed, names, metrics, member, (mean, std), {})
    return member, metrics, (mean, std)
