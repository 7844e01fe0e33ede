"""A graph encoder with a property head on its pooled embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoder


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
    """Encoder -> pooled molecule embedding -> head.

    Shapes:
        ``forward(batch)`` returns ``[B, n_tasks]`` (scaled regression values or logits).
    """

    def __init__(self, encoder: GraphEncoder, n_tasks: int, head: HeadConfig):
        super().__init__()
        self.encoder = encoder
        self.pooling = head.pooling
        width = encoder.dim * (2 if head.pooling == "mean_sum" else 1)
        self.head = make_head(width, n_tasks, head)

    def forward(self, batch: GraphBatch) -> Tensor:
        return self.head(self.encoder.embed(batch, self.pooling))

    @torch.no_grad()
    def embed(self, batch: GraphBatch) -> Tensor:
        return self.encoder.embed(batch, self.pooling)
