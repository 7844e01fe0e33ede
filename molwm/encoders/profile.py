"""Well-profile encoder: chunks of CellProfiler features as tokens.

A profile of ``F`` features is cut into ``C = ceil(F / chunk)`` consecutive chunks (the last one padded
with zeros that never count); each chunk is projected by its own linear map (its bias is the chunk's
embedding), refined by a shared residual MLP, and the visible chunks attend to each other. ``chunk: 1`` is
a token per feature; ``chunk: 0`` (or ``>= F``) is one token, i.e. an MLP over the whole vector (then only
the whole profile can be hidden: the molecule must predict it). The tokens do not see the well's dose or time: the target embedding describes
the phenotype alone, and the dose and time reach the predictor through the positional code
(:meth:`ProfileEncoder.positions`), as the action that produced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molwm.data.profile_store import ProfileBatch
from molwm.encoders.image import gather_tokens
from molwm.encoders.tokens import Tokens

TIME_SCALE_H = 24.0
"""Hours per unit of the time code (24 h -> 1.0, 48 h -> 2.0)."""
CONDITION_DIM = 3
"""Conditioning entries of every positional code: dose (log10 uM), time (days), control flag."""


@dataclass
class ProfileSettings:
    """The profile modality's settings (``modality_settings: {profile: {...}}`` of the model and mask configs).

    Attributes:
        features: Features per profile ``F`` (0: taken from the data by the pretraining task).
        chunk: Features per token (1: one token per feature; 0 or ``>= F``: one token, an MLP; the default,
            measured best on the cell-injury screen, see :mod:`molwm.jepa.modalities.profile`).
        layers: Attention layers over the profile's tokens.
        heads: Attention heads.
        hidden_fraction: Masks: fraction of a profile's tokens hidden (at least one hidden, one seen).
    """

    features: int = 0
    chunk: int = 0
    layers: int = 1
    heads: int = 4
    hidden_fraction: float = 0.5

    def validate(self) -> None:
        from molwm.config import ConfigError

        if self.features < 0 or self.chunk < 0 or self.layers < 0 or self.heads < 1:
            raise ConfigError("profile: features >= 0, chunk >= 0, layers >= 0 and heads >= 1 are required")
        if not 0.0 < self.hidden_fraction < 1.0:
            raise ConfigError(f"profile.hidden_fraction must be in (0, 1), got {self.hidden_fraction}")


def token_layout(features: int, chunk: int) -> tuple[int, int]:
    """``(tokens C, features per token k)`` of a profile of ``features`` cut into chunks of ``chunk`` (0: one)."""
    f = max(1, features)
    k = f if chunk == 0 else min(chunk, f)
    return math.ceil(f / k), k


class ProfileEncoder(nn.Module):
    """Chunk tokens of a well profile.

    Args:
        dim: Token width ``D``.
        settings: Sizes (``features`` at least 1 is used for a model built without profile data).

    Shapes:
        tokens(batch, keep) -> ``Tokens(x [B, K, D], pad [B, K], pos [B, K, C + 3])``.
    """

    def __init__(self, dim: int, settings: ProfileSettings):
        super().__init__()
        self.features = max(1, settings.features)
        self.n_tokens, self.chunk = token_layout(settings.features, settings.chunk)
        self.proj = nn.Parameter(torch.randn(self.n_tokens, self.chunk, dim) / math.sqrt(self.chunk))
        self.embed = nn.Parameter(torch.randn(self.n_tokens, dim) * 0.02)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        layer = nn.TransformerEncoderLayer(dim, settings.heads, 2 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, settings.layers, enable_nested_tensor=False) if settings.layers else None
        self.out_norm = nn.LayerNorm(dim)

    @property
    def pos_dim(self) -> int:
        return self.n_tokens + CONDITION_DIM

    def chunks(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """Values cut into chunks and which entries are real: ``([B, C, k], [B, C, k] bool)``."""
        b, f = values.shape
        pad = self.n_tokens * self.chunk - f
        real = torch.ones(b, f, dtype=torch.bool, device=values.device)
        values, real = F.pad(values, (0, pad)), F.pad(real, (0, pad))  # [B, C*k]
        return values.reshape(b, self.n_tokens, self.chunk), real.reshape(b, self.n_tokens, self.chunk)

    def positions(self, part: ProfileBatch) -> Tensor:
        """Each token's code: one-hot chunk index, then the well's dose, time and control flag: ``[B, C, C + 3]``."""
        b = len(part.values)
        index = torch.eye(self.n_tokens, device=part.values.device).expand(b, -1, -1)  # [B, C, C]
        cond = torch.stack([part.dose, part.time / TIME_SCALE_H, part.control.float()], 1)  # [B, 3]
        return torch.cat([index, cond.unsqueeze(1).expand(-1, self.n_tokens, -1)], 2)

    def tokens(self, part: ProfileBatch, keep: Tensor | None = None) -> Tokens:
        """Encode the chunks ``keep [B, C]`` allows (all when None); hidden chunks are never computed on."""
        values, _ = self.chunks(part.values)
        x = torch.einsum("bck,ckd->bcd", values, self.proj) + self.embed  # [B, C, D]
        x = x + self.mlp(x)
        pos = self.positions(part)  # [B, C, P]
        if keep is None:
            pad = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            x, pad, _ = gather_tokens(x, keep)  # [B, K, D]
            pos = gather_tokens(pos, keep)[0]
        if self.blocks is not None:
            x = self.blocks(x, src_key_padding_mask=pad)
        x = self.out_norm(x).masked_fill(pad.unsqueeze(-1), 0.0)
        return Tokens(x=x, pad=pad, pos=pos)
