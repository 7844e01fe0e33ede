"""Cell Painting image encoder: a channel-aware ViT over patches.

Each channel's patches go through one shared linear patch embedding plus a
learned embedding of *which* channel it is (DNA, ER, RNA, AGP, Mito); a
patch token is the mean over the channels that were actually imaged. A
dataset with one to five channels, or a site missing a channel, is encoded
from what is present: an absent channel contributes nothing, it is never a
plane of zeros pretending to be data. Patch positions are fixed 2-D sin-cos
codes, so the context encoder can drop hidden patches (I-JEPA) and the
predictor can ask for any patch by position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from molwm.encoders.tokens import Tokens


@dataclass
class ImageEncoderConfig:
    """ViT sizes.

    Attributes:
        dim: Token width ``D``.
        layers: Transformer layers.
        heads: Attention heads.
        patch: Patch side in pixels (``image_size`` must be a multiple).
        image_size: Side of the square crops the encoder takes.
        channels: Number of channel slots (Cell Painting: 5).
        dropout: Dropout inside the layers.
        pos_dim: Width of the 2-D sin-cos positional code handed to predictors.
        token_norm: Layer-normalise every output token (the encoder's final LayerNorm, and the
            per-token layer norm of the JEPA's targets and readouts of this encoder). False is the
            variant of issue 18 that keeps each token's absolute scale.
    """

    dim: int = 128
    layers: int = 4
    heads: int = 4
    patch: int = 12
    image_size: int = 96
    channels: int = 5
    dropout: float = 0.0
    pos_dim: int = 16
    token_norm: bool = True

    def validate(self) -> None:
        from molwm.config import ConfigError

        if self.image_size % self.patch:
            raise ConfigError(f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})")
        if self.dim % self.heads:
            raise ConfigError(f"image dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.pos_dim % 4:
            raise ConfigError(f"pos_dim must be a multiple of 4, got {self.pos_dim}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def n_patches(self) -> int:
        return self.grid**2


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos code of a ``grid x grid`` patch layout: ``[grid*grid, dim]`` (row-major)."""
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        arg = coord[:, None] * freqs[None, :] * (math.pi / 2)  # [G*G, dim/4]
        parts += [torch.sin(arg), torch.cos(arg)]
    return torch.cat(parts, dim=1)  # [G*G, dim]


def gather_tokens(x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pack the kept tokens of each row to the front.

    Shapes:
        x: ``[B, T, D]``; keep: ``[B, T]`` bool -> ``(x [B, K, D], pad [B, K], index [B, K])``
        with ``K`` the most tokens any row keeps; ``index`` is each packed
        token's original position (0 where padded).
    """
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept first, in position order
    k = max(1, int(keep.sum(1).max()))
    index = order[:, :k]  # [B, K]
    pad = ~torch.gather(keep, 1, index)
    packed = torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # [B, K, D]
    return packed, pad, index.masked_fill(pad, 0)


class ImageEncoder(nn.Module):
    """Channel-aware ViT.

    Args:
        config: Sizes.

    Shapes:
        tokens(pixels [B, C, H, W], present [B, C], keep [B, Np] or None) ->
        ``Tokens(x [B, K, D], pad [B, K], pos [B, K, pos_dim])`` where ``K`` is
        ``Np`` without ``keep`` and the most kept patches with it.
    """

    def __init__(self, config: ImageEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or ImageEncoderConfig()
        d = config.dim
        self.patch_embed = nn.Linear(config.patch**2, d)
        self.channel_embed = nn.Parameter(torch.randn(config.channels, d) * 0.02)
        self.register_buffer("pos_code", sincos_2d(config.grid, config.pos_dim), persistent=False)
        self.register_buffer("pos_embed", sincos_2d(config.grid, d), persistent=False)
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=config.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d) if config.token_norm else nn.Identity()

    @property
    def pos_dim(self) -> int:
        return self.config.pos_dim

    def patch_tokens(self, pixels: Tensor, present: Tensor) -> Tensor:
        """Per-patch tokens averaged over present channels: ``[B, Np, D]``."""
        p = self.config.patch
        patches = rearrange(pixels, "b c (h p1) (w p2) -> b (h w) c (p1 p2)", p1=p, p2=p)  # [B, Np, C, p*p]
        per_channel = self.patch_embed(patches) + self.channel_embed  # [B, Np, C, D]
        weight = present.to(per_channel.dtype)[:, None, :, None]  # [B, 1, C, 1]
        count = weight.sum(2).clamp(min=1.0)  # [B, 1, 1]
        return (per_channel * weight).sum(2) / count + self.pos_embed  # [B, Np, D]

    def tokens(self, pixels: Tensor, present: Tensor, keep: Tensor | None = None) -> Tokens:
        """Encode all patches, or only those ``keep`` marks (the I-JEPA context)."""
        x = self.patch_tokens(pixels, present)  # [B, Np, D]
        b, n = x.shape[:2]
        if keep is None:
            pad = torch.zeros(b, n, dtype=torch.bool, device=x.device)
            index = torch.arange(n, device=x.device).expand(b, n)
        else:
            x, pad, index = gather_tokens(x, keep)  # [B, K, D]
        x = self.blocks(x, src_key_padding_mask=pad)
        x = self.out_norm(x).masked_fill(pad.unsqueeze(-1), 0.0)
        return Tokens(x=x, pad=pad, pos=self.pos_code[index])
