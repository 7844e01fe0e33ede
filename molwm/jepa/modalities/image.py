"""The Cell Painting site as a modality: patches are tokens, I-JEPA multi-block masks hide them."""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from molwm.data.multimodal import ImageBatch
from molwm.encoders.image import ImageEncoder, gather_tokens
from molwm.jepa.modalities.assay import select_rows
from molwm.jepa.modalities.base import HiddenQuery, ModalityUnit, TokenMask, place


def image_block_masks(n: int, grid: int, config, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """I-JEPA multi-block masks for ``n`` images on a ``grid x grid`` patch layout.

    Args:
        config: A ``MultimodalMaskConfig`` (its ``image_*`` fields).

    Returns:
        ``(keep [n, grid*grid], target [n, grid*grid])``; disjoint, each row
        keeps at least one patch and hides at least one.
    """
    keep = np.zeros((n, grid, grid), dtype=bool)
    target = np.zeros((n, grid, grid), dtype=bool)
    lo_a, hi_a = (math.log(a) for a in config.image_aspect)
    for i in range(n):
        for _ in range(config.image_blocks):
            h, w = _block_shape(rng.uniform(*config.image_block_scale), math.exp(rng.uniform(lo_a, hi_a)), grid)
            y, x = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
            target[i, y:y + h, x:x + w] = True
        h, w = _block_shape(rng.uniform(*config.image_context_scale), 1.0, grid)
        y, x = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
        keep[i, y:y + h, x:x + w] = True
        keep[i] &= ~target[i]
        if not keep[i].any():  # targets covered the context block: keep one free patch
            free = np.flatnonzero(~target[i].reshape(-1))
            if not len(free):  # large blocks covered the whole site: give one target patch back to the context
                back = rng.choice(np.flatnonzero(target[i].reshape(-1)))
                target[i].reshape(-1)[back] = False
                free = np.asarray([back])
            keep[i].reshape(-1)[rng.choice(free)] = True
    return keep.reshape(n, -1), target.reshape(n, -1)


def _block_shape(scale: float, aspect: float, grid: int) -> tuple[int, int]:
    area = scale * grid * grid
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    return min(max(h, 1), grid), min(max(w, 1), grid)


def normalised_patches(pixels: Tensor, patch: int, eps: float = 1e-6) -> Tensor:
    """Pixels as patches, each patch and channel standardised by its own mean and std (MAE's target).

    Shapes:
        pixels ``[B, C, H, W]`` -> ``[B, Np, C, patch*patch]`` (patches row-major, like the encoder's).
    """
    x = rearrange(pixels, "b c (h p1) (w p2) -> b (h w) c (p1 p2)", p1=patch, p2=patch)
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / (var + eps).sqrt()


class ImageUnit(ModalityUnit):
    """Sites (:class:`~molwm.data.multimodal.ImageBatch`), masked by I-JEPA multi-block patch masks;
    raw content: each hidden patch's normalised pixels (MAE-style), absent channels unweighted."""

    name = "image"
    head_name = "pixel_head"
    draw_rank = 1

    def encoder(self, spec, n_assays: int, config) -> nn.Module:
        return ImageEncoder(config.image)

    def pos_dim(self, n_assays: int, config) -> int:
        return config.image.pos_dim

    def encode(self, encoder, part: ImageBatch, rows: Tensor, keep: Tensor | None):
        sel = select_rows(keep, len(rows), rows.device)
        if len(sel) == 0:
            return None, rows
        img = part.select(sel)
        return encoder.tokens(img.pixels, img.present, None if keep is None else keep[sel]), rows[sel]

    def sample_mask(self, part: ImageBatch, config, grid: int, rng: np.random.Generator, whole: np.ndarray,
                    gone: np.ndarray) -> TokenMask:
        keep, target = image_block_masks(len(part.pixels), grid, config, rng)
        keep[whole], target[whole] = False, True
        keep[gone], target[gone] = False, False
        return TokenMask(torch.from_numpy(keep), torch.from_numpy(target))

    def query(self, index: int, encoder, part: ImageBatch, mask: TokenMask, rows: Tensor,
              size: int) -> HiddenQuery | None:
        if not bool(mask.target.any()):
            return None
        pos, qpad, _ = gather_tokens(encoder.pos_code.expand(len(rows), -1, -1), mask.target)  # [Bi, K, P]
        pos, qpad = place(pos, qpad, rows, size)
        return HiddenQuery(index, pos, qpad, mask.target)

    def raw_head(self, spec, config) -> nn.Module:
        return nn.Linear(config.dim, config.image.channels * config.image.patch**2)

    def raw_target(self, part: ImageBatch, select: Tensor, config) -> tuple[Tensor, Tensor]:
        patches = normalised_patches(part.pixels, config.image.patch)  # [Bi, Np, C, p*p]
        present = part.present[:, None, :].expand(-1, patches.shape[1], -1)  # [Bi, Np, C]
        return patches[select], present[select].to(patches.dtype)

    def raw_loss(self, head: nn.Module, h: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        out = head(h).reshape(target.shape)  # [Nt, C, p*p]
        err = ((out - target) ** 2).mean(-1)  # [Nt, C]
        return (err * weight).sum() / weight.sum().clamp(min=1.0)
