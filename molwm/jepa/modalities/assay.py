"""The assay panel as a modality: measurements are tokens, a random subset of them is hidden."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molwm.data.multimodal import AssayBatch
from molwm.encoders.assay import AssayEncoder
from molwm.encoders.image import gather_tokens
from molwm.jepa.modalities.base import HiddenQuery, ModalityUnit, TokenMask, place


def assay_subset_masks(pad: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hide ``fraction`` of each row's measurements (at least one hidden and one kept where possible).

    Args:
        pad: ``[Ba, T]`` bool, True where a row has no measurement.
    """
    keep = ~pad
    target = np.zeros_like(pad)
    for i in range(pad.shape[0]):
        real = np.flatnonzero(~pad[i])
        if len(real) < 2:
            continue  # a single measurement stays context (whole-modality masking can still hide it)
        k = min(max(1, int(round(fraction * len(real)))), len(real) - 1)
        hide = rng.choice(real, size=k, replace=False)
        target[i, hide] = True
        keep[i, hide] = False
    return keep, target


def select_rows(keep: Tensor | None, n: int, device) -> Tensor:
    """Rows of a padded-token modality that keep any token (all ``n`` without a mask)."""
    return torch.arange(n, device=device) if keep is None else torch.nonzero(keep.any(1)).squeeze(1)


def encode_kept_rows(encoder, part, rows: Tensor, keep: Tensor | None):
    """:meth:`ModalityUnit.encode` of a padded-token modality whose encoder has ``tokens(part, keep)`` and
    whose part has ``select(rows)``: the rows that keep any token, and their batch rows."""
    sel = select_rows(keep, len(rows), rows.device)
    if len(sel) == 0:
        return None, rows
    return encoder.tokens(part.select(sel), None if keep is None else keep[sel]), rows[sel]


class AssayUnit(ModalityUnit):
    """Assay panels (:class:`~molwm.data.multimodal.AssayBatch`), masked by a random subset of the
    observed measurements; raw content: the normalised values."""

    name = "assay"
    head_name = "value_head"
    draw_rank = 2

    def encoder(self, spec, n_assays: int, config) -> nn.Module:
        return AssayEncoder(n_assays, config.assay)

    def pos_dim(self, n_assays: int, config) -> int:
        return n_assays

    def encode(self, encoder, part: AssayBatch, rows: Tensor, keep: Tensor | None):
        return encode_kept_rows(encoder, part, rows, keep)

    def sample_mask(self, part: AssayBatch, config, grid: int, rng: np.random.Generator, whole: np.ndarray,
                    gone: np.ndarray) -> TokenMask:
        pad = part.pad.numpy()
        keep, target = assay_subset_masks(pad, config.assay_fraction, rng)
        keep[whole], target[whole] = False, ~pad[whole]
        keep[gone], target[gone] = False, False
        return TokenMask(torch.from_numpy(keep), torch.from_numpy(target))

    def query(self, index: int, encoder, part: AssayBatch, mask: TokenMask, rows: Tensor,
              size: int) -> HiddenQuery | None:
        if not bool(mask.target.any()):
            return None
        pos, qpad, _ = gather_tokens(encoder.positions(part.ids), mask.target)  # [Ba, K, P]
        pos, qpad = place(pos, qpad, rows, size)
        return HiddenQuery(index, pos, qpad, mask.target)

    def raw_head(self, spec, config) -> nn.Module:
        return nn.Linear(config.dim, 1)

    def raw_target(self, part: AssayBatch, select: Tensor, config) -> tuple[Tensor, None]:
        return part.values[select].clone(), None  # [Nt] values

    def raw_loss(self, head: nn.Module, h: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        return F.mse_loss(head(h).squeeze(-1), target)
