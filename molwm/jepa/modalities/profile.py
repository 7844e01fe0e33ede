"""The well profile as a modality: chunks of CellProfiler features are tokens, dose and time condition them.

Data: :class:`~molwm.data.profile_store.ProfileStore` (one well per sample, features standardised per feature
with statistics of the pretraining wells only; the published values are already normalised to each
plate's DMSO wells and feature-selected upstream, so this only puts every feature on one scale).
Encoder: :class:`~molwm.encoders.profile.ProfileEncoder`. Masks: a random ``hidden_fraction`` of a
profile's chunks (at least one hidden and one seen), or the whole profile (whole-modality masking: the
molecule alone must predict it). Queries: each hidden chunk's index plus the well's dose (log10 uM),
time and control flag, so the predictor is asked "this chunk, at this dose and time". Raw content (the
generative objective): the chunk's normalised feature values (feature-space regression; padded entries
carry no loss).

Tokens or an MLP: ``chunk`` (features per token) is the setting; the measurement that chose its default
is in ``benchmarks/real_profiles_molwm.py`` (``--chunks 16,352,1``) and the issue 27 note.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molwm.data.profile_store import ProfileBatch
from molwm.encoders.image import gather_tokens
from molwm.encoders.profile import CONDITION_DIM, ProfileEncoder, ProfileSettings, token_layout
from molwm.jepa.modalities.assay import select_rows
from molwm.jepa.modalities.base import HiddenQuery, ModalityUnit, TokenMask, place


def chunk_masks(n: int, tokens: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hide ``fraction`` of each row's ``tokens`` chunks at random: ``(keep [n, C], target [n, C])``,
    disjoint, at least one of each per row; a single-token profile is kept whole (only whole-modality
    masking can hide it)."""
    keep = np.ones((n, tokens), dtype=bool)
    target = np.zeros((n, tokens), dtype=bool)
    if tokens < 2:
        return keep, target
    k = min(max(1, int(round(fraction * tokens))), tokens - 1)
    for i in range(n):
        hide = rng.choice(tokens, size=k, replace=False)
        keep[i, hide], target[i, hide] = False, True
    return keep, target


class ProfileUnit(ModalityUnit):
    """Well profiles (:class:`~molwm.data.profile_store.ProfileBatch`) conditioned on dose and time."""

    name = "profile"
    head_name = "profile_head"
    draw_rank = 4
    settings = ProfileSettings

    def encoder(self, spec, n_assays: int, config) -> nn.Module:
        return ProfileEncoder(config.dim, self.options(config))

    def pos_dim(self, n_assays: int, config) -> int:
        s = self.options(config)
        return token_layout(s.features, s.chunk)[0] + CONDITION_DIM

    def encode(self, encoder: ProfileEncoder, part: ProfileBatch, rows: Tensor, keep: Tensor | None):
        sel = select_rows(keep, len(rows), rows.device)
        if len(sel) == 0:
            return None, rows
        return encoder.tokens(part.select(sel), None if keep is None else keep[sel]), rows[sel]

    def sample_mask(self, part: ProfileBatch, config, grid: int, rng: np.random.Generator, whole: np.ndarray,
                    gone: np.ndarray) -> TokenMask:
        s = self.options(config)
        tokens, _ = token_layout(part.values.shape[1], s.chunk)
        keep, target = chunk_masks(len(part.values), tokens, s.hidden_fraction, rng)
        keep[whole], target[whole] = False, True
        keep[gone], target[gone] = False, False
        return TokenMask(torch.from_numpy(keep), torch.from_numpy(target))

    def query(self, index: int, encoder: ProfileEncoder, part: ProfileBatch, mask: TokenMask, rows: Tensor,
              size: int) -> HiddenQuery | None:
        if not bool(mask.target.any()):
            return None
        pos, qpad, _ = gather_tokens(encoder.positions(part), mask.target)  # [Bp, K, P]
        pos, qpad = place(pos, qpad, rows, size)
        return HiddenQuery(index, pos, qpad, mask.target)

    def raw_head(self, spec, config) -> nn.Module:
        s = self.options(config)
        return nn.Linear(config.dim, token_layout(s.features, s.chunk)[1])

    def raw_target(self, part: ProfileBatch, select: Tensor, config) -> tuple[Tensor, Tensor]:
        b, f = part.values.shape
        n, k = token_layout(f, self.options(config).chunk)
        values = F.pad(part.values, (0, n * k - f)).reshape(b, n, k)  # [Bp, C, k]
        real = F.pad(torch.ones_like(part.values), (0, n * k - f)).reshape(b, n, k)
        return values[select], real[select]  # [Nt, k] each

    def raw_loss(self, head: nn.Module, h: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        err = (head(h) - target) ** 2 * weight  # [Nt, k]
        return err.sum() / weight.sum().clamp(min=1.0)
