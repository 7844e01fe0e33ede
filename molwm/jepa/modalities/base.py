"""What a modality is to the multimodal model: one :class:`ModalityUnit` per modality.

A unit says, for its modality, how to build the encoder, how to encode a batch
(or only its visible tokens), how to draw the masks, where the hidden tokens
are (the predictor's queries), and what the raw content of a hidden token is
(the generative objective's target). The data side (which samples have the
modality, and how to collate them) is its store in :mod:`molwm.data.multimodal`.

The multimodal JEPA, its masks and the objectives beside it loop over the
registered units (:mod:`molwm.jepa.modalities`); nothing there names a modality.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from molwm.config import from_dict


@dataclass
class TokenMask:
    """Masks over one modality's padded tokens (assay measurements, image patches, ...).

    Attributes:
        keep: ``[Bm, T]`` bool, tokens the context sees.
        target: ``[Bm, T]`` bool, tokens the predictor must forecast (disjoint from ``keep``).
    """

    keep: Tensor
    target: Tensor


@dataclass
class HiddenQuery:
    """The hidden tokens of one modality, as the predictor is asked about them.

    Attributes:
        modality: Index of the modality in the registry.
        pos: ``[B, Tq, P]`` positional codes of the hidden tokens (batch rows, padded per row).
        pad: ``[B, Tq]`` bool, True where a row has no query.
        select: Which tokens they are, in the unit's own terms (graph: ``[Nt]`` atom indices;
            padded-token modalities: ``[Bm, T]`` bool over that modality's rows and positions).
    """

    modality: int
    pos: Tensor
    pad: Tensor
    select: Tensor


def place(x: Tensor, pad: Tensor, rows: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Scatter ``x [Bm, T, *]`` / ``pad [Bm, T]`` into ``size`` batch rows (absent rows all pad)."""
    out = x.new_zeros((size, *x.shape[1:]))
    out_pad = torch.ones(size, x.shape[1], dtype=torch.bool, device=x.device)
    out[rows], out_pad[rows] = x, pad
    return out, out_pad


class ModalityUnit(ABC):
    """One modality of the multimodal model. Subclasses set the class attributes and the methods.

    Attributes:
        name: The modality's name (its key in batches, stores, encoders and configs).
        head_name: Attribute of the generative objective's raw-content head for this modality.
        draw_rank: Position of this modality's draws from the shared mask generator (lowest
            first): the built-ins keep the order their masks were first drawn in, so seeded
            runs repeat; a new modality draws after them.
        settings: Dataclass of this modality's own settings, read from the
            ``modality_settings: {<name>: {...}}`` blocks of the model and mask configs
            (None: the built-ins, whose settings are fields of those configs).
    """

    name: str = ""
    head_name: str = ""
    draw_rank: int = 100
    settings: type | None = None

    def options(self, config: Any) -> Any:
        """This unit's settings from a model or mask config's ``modality_settings``."""
        return from_dict(self.settings, dict(getattr(config, "modality_settings", {}).get(self.name, {})))

    # ---- model ----------------------------------------------------------------------------------
    @abstractmethod
    def encoder(self, spec, n_assays: int, config) -> nn.Module:
        """The modality's encoder for the joint model ``config`` (a ``MultimodalJEPAConfig``)."""
        ...

    @abstractmethod
    def pos_dim(self, n_assays: int, config) -> int:
        """Width of the positional code of one of its tokens (the predictor's query input)."""
        ...

    def prepare(self, part: Any, config, generator: torch.Generator | None) -> None:
        """Fill what the batch needs before encoding (e.g. the graph's positional code); default none."""

    @abstractmethod
    def encode(self, encoder: nn.Module, part: Any, rows: Tensor, keep: Tensor | None):
        """Tokens of the rows that keep any token: ``(Tokens with x [Bk, T, D], their batch rows)``
        (``(None, rows)`` if none does)."""
        ...

    # ---- masks ----------------------------------------------------------------------------------
    @abstractmethod
    def sample_mask(self, part: Any, config, grid: int, rng: np.random.Generator, whole: np.ndarray,
                    gone: np.ndarray) -> Any:
        """Masks inside the modality for its ``Bm`` rows, then ``whole [Bm]`` rows hidden entirely
        (every token a target) and ``gone [Bm]`` rows left out (neither seen nor predicted)."""
        ...

    def keep(self, mask: Any) -> Tensor:
        """The encoder's ``keep`` argument for ``mask``."""
        return mask.keep

    def has_visible(self, mask: Any) -> bool:
        """Does the context see any token of this modality?"""
        return bool(self.keep(mask).any())

    def has_hidden(self, mask: Any) -> bool:
        """Is any token of this modality to be predicted?"""
        return bool(mask.target.any())

    def second_view(self, part: Any, mask: Any) -> Any:
        """The hidden tokens as a context (the contrastive views objective's second view)."""
        return TokenMask(keep=mask.target, target=mask.target)

    # ---- predictor queries and targets ------------------------------------------------------------
    @abstractmethod
    def query(self, index: int, encoder: nn.Module, part: Any, mask: Any, rows: Tensor,
              size: int) -> HiddenQuery | None:
        """The predictor's queries for the hidden tokens (None if nothing is hidden)."""
        ...

    def hidden_targets(self, tx: Tensor, tpad: Tensor, select: Tensor) -> Tensor:
        """The hidden tokens' target embeddings ``[Nt, D]`` from all target tokens ``tx [Bm, T, D]``,
        in the order of the predictor's answers (rows ascending, then positions)."""
        return tx[select]

    # ---- the generative objective ---------------------------------------------------------------
    @abstractmethod
    def raw_head(self, spec, config) -> nn.Module:
        """Head mapping a predicted token ``[Nt, D]`` to the raw hidden content."""
        ...

    @abstractmethod
    def raw_target(self, part: Any, select: Tensor, config) -> tuple[Tensor, Tensor | None]:
        """The raw hidden content read from the input: ``(target, weight or None)``."""
        ...

    @abstractmethod
    def raw_loss(self, head: nn.Module, h: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        """Loss of the head's answer for the hidden tokens ``h [Nt, D]``."""
        ...
