"""The joint space: modality-type embeddings and a joint transformer.

Each modality's tokens (already width ``D``) get a learned embedding of their
modality type and are concatenated, after one learned global token, into one
sequence per sample; a small transformer lets them attend across modalities.
The global token's output is the sample's joint embedding. A sample that
lacks a modality (or had it hidden) simply has no tokens from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class FusionConfig:
    """Joint transformer sizes.

    Attributes:
        layers: Transformer layers across modalities.
        heads: Attention heads.
        dropout: Dropout inside the layers.
    """

    layers: int = 1
    heads: int = 4
    dropout: float = 0.0


@dataclass
class FusedTokens:
    """The joint sequence.

    Attributes:
        x: ``[B, 1 + T, D]`` outputs; position 0 is the global token.
        pad: ``[B, 1 + T]`` bool.
        modality: ``[1 + T]`` long modality index of each position (-1: global).
        pooled: Per modality index, the mean of its encoder's (pre-fusion)
            tokens for the rows that have any: ``[B_m, D]``; for per-modality
            anti-collapse terms.
    """

    x: Tensor
    pad: Tensor
    modality: Tensor
    pooled: dict[int, Tensor] = field(default_factory=dict)

    @property
    def joint(self) -> Tensor:
        """``[B, D]`` joint embedding (the global token)."""
        return self.x[:, 0]


class Fusion(nn.Module):
    """Modality embeddings + joint transformer.

    Args:
        dim: Token width ``D``.
        n_modalities: How many modality types exist.
        config: Sizes.
    """

    def __init__(self, dim: int, n_modalities: int, config: FusionConfig | None = None):
        super().__init__()
        config = config or FusionConfig()
        self.modality_embed = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)
        self.global_token = nn.Parameter(torch.randn(dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, config.heads, 2 * dim, dropout=config.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False) if config.layers else None
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, parts: list[tuple[int, Tensor, Tensor]]) -> FusedTokens:
        """Fuse ``[(modality index, x [B, T_m, D], pad [B, T_m]), ...]`` (all over the same ``B`` rows)."""
        b = parts[0][1].shape[0]
        g = self.global_token.expand(b, 1, -1)  # [B, 1, D]
        xs, pads, mods = [g], [torch.zeros(b, 1, dtype=torch.bool, device=g.device)], [-1]
        pooled = {}
        for m, x, pad in parts:
            real = (~pad).unsqueeze(-1).to(x.dtype)  # [B, T_m, 1]
            rows = real.sum(1).squeeze(-1) > 0
            if bool(rows.any()):
                pooled[m] = (x * real).sum(1)[rows] / real.sum(1)[rows]  # [B_m, D]
            xs.append(x + self.modality_embed[m])
            pads.append(pad)
            mods += [m] * x.shape[1]
        x, pad = torch.cat(xs, dim=1), torch.cat(pads, dim=1)  # [B, 1 + T, D]
        if self.blocks is not None:
            x = self.blocks(x, src_key_padding_mask=pad)
        x = self.out_norm(x).masked_fill(pad.unsqueeze(-1), 0.0)
        return FusedTokens(x=x, pad=pad, modality=torch.tensor(mods, device=x.device), pooled=pooled)
