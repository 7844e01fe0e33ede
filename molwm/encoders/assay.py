"""Assay-panel encoder: a set transformer over (assay id, value) tokens.

A compound's panel is a *set* of measurements: one token per observed assay,
its embedding the sum of a learned assay-id embedding and an MLP of the
(train-normalised) value. Unmeasured assays are absent tokens, never zeros,
and the transformer has no positional order, so the output does not depend
on the order the assays are listed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molwm.data.multimodal import AssayBatch
from molwm.encoders.tokens import Tokens


@dataclass
class AssayEncoderConfig:
    """Assay encoder sizes.

    Attributes:
        dim: Token width ``D`` (the joint width).
        layers: Self-attention layers.
        heads: Attention heads.
        dropout: Dropout inside the layers.
    """

    dim: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0

    def validate(self) -> None:
        from molwm.config import ConfigError

        if self.dim % self.heads:
            raise ConfigError(f"assay dim ({self.dim}) must be divisible by heads ({self.heads})")


class AssayEncoder(nn.Module):
    """Set transformer over measurement tokens.

    Args:
        n_assays: Size of the assay vocabulary (ids ``0 .. n_assays - 1``).
        config: Sizes.

    Shapes:
        tokens(batch) -> ``Tokens(x [B, T, D], pad [B, T], pos [B, T, n_assays])``;
        ``pos`` is the one-hot assay id, so a predictor can ask for a hidden assay.
    """

    def __init__(self, n_assays: int, config: AssayEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or AssayEncoderConfig()
        self.n_assays = n_assays
        d = config.dim
        self.id_embed = nn.Embedding(n_assays, d)
        self.value_mlp = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=config.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d)

    @property
    def pos_dim(self) -> int:
        return self.n_assays

    def positions(self, ids: Tensor) -> Tensor:
        """One-hot positional code of assay ids: ``[..., n_assays]``."""
        return F.one_hot(ids, self.n_assays).to(torch.float32)

    def tokens(self, batch: AssayBatch, keep: Tensor | None = None) -> Tokens:
        """Encode the measurements ``keep`` allows (all when None).

        Args:
            batch: Padded measurements.
            keep: ``[B, T]`` bool, which measurements the encoder may see;
                every row must keep at least one (callers drop empty rows).
        """
        pad = batch.pad if keep is None else batch.pad | ~keep
        x = self.id_embed(batch.ids) + self.value_mlp(batch.values.unsqueeze(-1))  # [B, T, D]
        x = self.blocks(x, src_key_padding_mask=pad)
        x = self.out_norm(x).masked_fill(pad.unsqueeze(-1), 0.0)
        return Tokens(x=x, pad=pad, pos=self.positions(batch.ids))
