"""A graph encoder with a property head on its pooled embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from molwm.config import check_ranges
from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoder
from molwm.predictors.extras import ExtraInputs, FeatureScaler, extra_features
from molwm.predictors.forest import ArrayForest


@dataclass
class HeadConfig:
    """The prediction head.

    Attributes:
        hidden: Hidden width of the MLP (ignored when ``layers == 1``).
        layers: 1 is a linear head; 2 or more an MLP.
        dropout: Dropout before each hidden layer.
        pooling: How atom embeddings become a molecule embedding: ``mean``,
            ``sum`` or ``mean_sum`` (both; size-dependent properties such as
            solubility need the sum).
    """

    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    pooling: Literal["mean", "sum", "mean_sum"] = "mean_sum"

    def validate(self) -> None:
        check_ranges(self, at_least_one=("hidden", "layers"), fraction=("dropout",))


def make_head(in_dim: int, out_dim: int, config: HeadConfig) -> nn.Module:
    """Linear or MLP head ``[B, in_dim] -> [B, out_dim]``."""
    if config.layers <= 1:
        return nn.Linear(in_dim, out_dim)
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(config.layers - 1):
        layers += [nn.Dropout(config.dropout), nn.Linear(d, config.hidden), nn.GELU()]
        d = config.hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class PropertyModel(nn.Module):
    """Encoder -> pooled molecule embedding (+ extra molecule features) -> head.

    Args:
        encoder: The graph encoder.
        n_tasks: Outputs.
        head: Head sizes and pooling.
        extra: Features joined to the embedding before the head (None: none); their
            standardisation (:class:`~molwm.predictors.extras.FeatureScaler`) is ``extra_scaler``,
            fitted on the member's training rows.

    Shapes:
        ``forward(batch, extra)`` returns ``[B, n_tasks]`` (scaled regression values or logits);
        ``extra`` is ``[B, F]`` standardised features.
    """

    def __init__(self, encoder: GraphEncoder, n_tasks: int, head: HeadConfig, extra: ExtraInputs | None = None):
        super().__init__()
        self.encoder = encoder
        self.pooling = head.pooling
        self.extra = extra if extra is not None and extra.enabled else None
        self.extra_scaler: FeatureScaler | None = None
        width = encoder.dim * (2 if head.pooling == "mean_sum" else 1)
        self.head = make_head(width + (self.extra.width() if self.extra else 0), n_tasks, head)

    def forward(self, batch: GraphBatch, extra: Tensor | None = None) -> Tensor:
        return self.head_input(self.encoder.embed(batch, self.pooling), extra)

    def head_input(self, z: Tensor, extra: Tensor | None) -> Tensor:
        """The head's answer for pooled embeddings ``z [B, E]`` and standardised extras ``[B, F]``."""
        return self.head(z if self.extra is None else torch.cat([z, extra], dim=1))

    @torch.no_grad()
    def embed(self, batch: GraphBatch) -> Tensor:
        return self.encoder.embed(batch, self.pooling)

    @torch.no_grad()
    def head_from(self, z: Tensor, smiles: Sequence[str]) -> Tensor:
        """The head's answer for embeddings ``z`` of molecules ``smiles`` (extras computed from them)."""
        if self.extra is None:
            return self.head(z)
        x = torch.from_numpy(self.extra_scaler.transform(extra_features(smiles, self.extra)))
        return self.head_input(z, x)


class TabularMember(nn.Module):
    """A frozen encoder's pooled embedding joined with RDKit descriptors and Morgan counts, read by a
    random forest per task (MapLight+GNN's recipe).

    Args:
        encoder: The frozen graph encoder.
        pooling: Its pooling.
        extra: The molecule features beside the embedding.
        forests: One :class:`~molwm.predictors.forest.ArrayForest` per task (regression: scaled
            targets; classification: P(positive)).
        fill: ``[E + F]`` training medians that replace NaN features.
        task: ``regression`` or ``classification``.

    Shapes:
        :meth:`head_from` returns ``[B, n_tasks]`` like a network head: scaled values or logits.
    """

    def __init__(self, encoder: GraphEncoder, pooling: str, extra: ExtraInputs, forests: list[ArrayForest],
                 fill: np.ndarray, task: str):
        super().__init__()
        self.encoder, self.pooling, self.extra = encoder, pooling, extra
        self.forests, self.fill, self.task = forests, np.asarray(fill, np.float64), task

    @torch.no_grad()
    def embed(self, batch: GraphBatch) -> Tensor:
        return self.encoder.embed(batch, self.pooling)

    def features(self, z: np.ndarray, smiles: Sequence[str]) -> np.ndarray:
        """``[B, E + F]`` forest inputs: embedding, then the extras; NaN -> training median."""
        x = np.concatenate([np.asarray(z, np.float64), extra_features(smiles, self.extra)], axis=1)
        return np.where(np.isnan(x), self.fill, x)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """``[B, T]`` scaled values, or logits of the forests' probabilities."""
        out = np.stack([f.predict(x) for f in self.forests], axis=1)
        if self.task == "classification":
            p = np.clip(out, 1e-6, 1 - 1e-6)
            out = np.log(p / (1 - p))
        return out

    @torch.no_grad()
    def head_from(self, z: Tensor, smiles: Sequence[str]) -> Tensor:
        return torch.from_numpy(self.predict_features(self.features(z.numpy(), smiles)))

    def to_state(self) -> dict:
        """What a checkpoint keeps of this member (tensors and plain lists only)."""
        return {"encoder": self.encoder.state_dict(), "forests": [f.to_state() for f in self.forests],
                "fill": self.fill.tolist()}
