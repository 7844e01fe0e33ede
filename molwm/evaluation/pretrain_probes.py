"""Frozen-encoder linear probes, run every K steps of pretraining: quality per unit of compute.

Each probe task is a packaged labelled set (default: solubility and
b3db_classification) on its scaffold split (seed 0, 80/10/10; train + val fit
the probe, test scores it), at most ``max_rows`` molecules (a seeded subset).
The encoder is frozen and read in eval mode; regression gets a ridge probe
(penalty by exact leave-one-out, test RMSE in the card's units), classification
a logistic regression (test ROC-AUC). The same rows every time, so the curves
of different objectives and steps are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from molwm.data.batch import CachedGraphs
from molwm.encoders.graph import GraphEncoder


@dataclass
class ProbeConfig:
    """Probes during pretraining.

    Attributes:
        datasets: Labelled dataset cards (first target column is probed).
        every: Steps between probe points (0: only at the end of the run).
        max_rows: Molecules per dataset (a seeded subset of its featurized rows).
        seed: Scaffold-split and subset seed.
    """

    datasets: list[str] = field(default_factory=lambda: ["solubility", "b3db_classification"])
    every: int = 0
    max_rows: int = 3000
    seed: int = 0


@dataclass
class _Task:
    name: str
    kind: str
    graphs: CachedGraphs
    rows: np.ndarray
    y: np.ndarray
    fit: np.ndarray
    test: np.ndarray


class ProbeSuite:
    """The probe tasks of a run, prepared once; call it with an encoder to get ``probe.<name>.<metric>`` values."""

    def __init__(self, config: ProbeConfig, cache_dir: str | None = None, progress: bool = False):
        from molwm.data.prepare import PrepareConfig, prepare_dataset
        from molwm.data.registry import get_card
        from molwm.data.splits import scaffold_split

        self.config = config
        self.tasks: list[_Task] = []
        for name in config.datasets:
            card = get_card(name)
            kind = "classification" if "classification" in card.task.type else "regression"
            prep = prepare_dataset(PrepareConfig(dataset=name, cache_dir=cache_dir, progress=progress))
            graphs = CachedGraphs(prep.cache, with_labels=True)
            y = np.concatenate(graphs.labels)[:, 0].astype(np.float64)
            smiles = prep.cache.meta()["smiles"].tolist()
            rows = np.flatnonzero(np.isfinite(y))
            if len(rows) > config.max_rows:
                rows = np.sort(np.random.default_rng(config.seed).choice(rows, config.max_rows, replace=False))
            train, val, test = scaffold_split([smiles[i] for i in rows], (0.8, 0.1, 0.1), config.seed)
            self.tasks.append(_Task(name, kind, graphs, rows, y[rows], np.concatenate([train, val]), test))

    @torch.no_grad()
    def embed(self, encoder: GraphEncoder, task: _Task, batch_size: int = 256) -> np.ndarray:
        """``[rows, D]`` float64 embeddings of a task's molecules, encoded on the encoder's device.

        Batches and positional codes are made on the CPU and moved; the result is NumPy.
        """
        was_training = encoder.training
        encoder.eval()
        out = []
        device = next(encoder.parameters()).device
        for i in range(0, len(task.rows), batch_size):
            b = encoder.config.prepare(task.graphs.batch(task.rows[i:i + batch_size]))
            if device.type != "cpu":
                b = b.to(device)
            out.append(encoder.embed(b).cpu().numpy())
        encoder.train(was_training)
        return np.concatenate(out).astype(np.float64)

    def __call__(self, encoder: GraphEncoder) -> dict[str, float]:
        """Probe metrics of ``encoder`` on every task."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score

        from molwm.evaluation.ridge_probes import RidgeProbe

        out = {}
        for t in self.tasks:
            x = self.embed(encoder, t)
            if t.kind == "regression":
                probe = RidgeProbe.fit(x[t.fit], t.y[t.fit, None])
                pred = probe.predict(x[t.test])[:, 0]
                out[f"probe.{t.name}.rmse"] = float(np.sqrt(np.mean((pred - t.y[t.test]) ** 2)))
            else:
                mean, std = x[t.fit].mean(0), x[t.fit].std(0) + 1e-6
                clf = LogisticRegression(C=1.0, max_iter=2000)
                clf.fit((x[t.fit] - mean) / std, t.y[t.fit].astype(int))
                score = clf.predict_proba((x[t.test] - mean) / std)[:, 1]
                out[f"probe.{t.name}.roc_auc"] = float(roc_auc_score(t.y[t.test].astype(int), score))
        return out
