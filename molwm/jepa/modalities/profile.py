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

Tokens or an MLP (``chunk``, features per token): measured with ``benchmarks/real_profiles_molwm.py
--chunks 1,16,352`` on the cell-injury compact set (graph + profile JEPA, dim 64, batch 32, one thread on a
shared 2-core machine, so times are rough; scaffold fold 0 of 5, seed 0: 134 held-out conditions; retrieval
of the held-out condition's target embedding from its compound's graph, dose and time through the predictor):

=============  ======  =====  =========  ======  =====
chunk          tokens  steps  train (s)  top-5%  MRR
=============  ======  =====  =========  ======  =====
1              352     300    328        0.097   0.058
16             22      300    78         0.030   0.039
16             22      1200   144        0.022   0.032
352 (an MLP)   1       300    29         0.067   0.042
352 (an MLP)   1       3000   346        0.157   0.086
=============  ======  =====  =========  ======  =====

Same fold: ridge from Morgan bits 0.142 / 0.088, Tanimoto nearest neighbour 0.172 / 0.108, chance 0.052 /
0.041. At equal wall time the single token (an MLP over the 352 features) retrieves best; chunk tokens
spend capacity predicting chunk identity (the pooled mean of 22 chunk tokens varies little between wells).
So ``chunk: 0`` (one token) is the default; chunks stay available (and tested) for larger profiles.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molwm.data.profile_store import ProfileBatch
from molwm.encoders.image import gather_tokens
from molwm.encoders.profile import CONDITION_DIM, ProfileEncoder, ProfileSettings, token_layout
from molwm.jepa.modalities.assay import encode_kept_rows
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
        return encode_kept_rows(encoder, part, rows, keep)

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
