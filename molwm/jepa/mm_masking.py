"""Masks for the multimodal JEPA, at three levels, made at collate time.

1. Inside a modality: connected atom blocks (graph, :mod:`molwm.jepa.masking`),
   I-JEPA multi-block patch masks (image), a random subset of the observed
   assays (assay panel).
2. A whole modality: a sample that has two or more modalities gets, with
   probability ``whole_modality_prob``, one of them hidden entirely; the
   context sees none of it and the predictor must forecast all its tokens and
   its pooled embedding from the other modalities.
3. Missing in the data: a modality a sample does not have is simply absent.

Everything is drawn from one seeded NumPy generator; the model sees only
boolean and index tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from molwm.data.multimodal import MultimodalBatch
from molwm.jepa.masking import GraphMasks, MaskConfig
from molwm.jepa.modalities import modality_index, modality_names, units
from molwm.jepa.modalities.assay import assay_subset_masks  # noqa: F401 (re-exported)
from molwm.jepa.modalities.image import image_block_masks  # noqa: F401 (re-exported)


@dataclass
class MultimodalMaskConfig:
    """How much to hide at each level.

    Attributes:
        graph: Atom-block masks inside molecules.
        image_blocks: Target blocks per image (I-JEPA uses 4).
        image_block_scale: Range of each target block's share of the patches.
        image_aspect: Range of a target block's height/width ratio (log-uniform).
        image_context_scale: Range of the context block's share (before
            removing target patches).
        assay_fraction: Share of a compound's observed assays hidden.
        whole_modality_prob: Probability that a sample with >= 2 modalities
            has one hidden entirely.
        whole_modality_weights: Relative odds of hiding each modality
            (``graph``, ``assay``, ``image``) when one is hidden.
        context_drop_prob: Probability that a sample with a wholly hidden
            modality and two others also loses one of those others from its
            context (neither seen nor predicted), so that the predictor also
            learns to forecast from a single modality, as queries from a
            molecule alone ask it to.
        modality_settings: Mask settings of modalities beyond the built-ins, by name
            (read by their unit, :mod:`molwm.jepa.modalities`).
    """

    graph: MaskConfig = field(default_factory=MaskConfig)
    image_blocks: int = 4
    image_block_scale: tuple[float, float] = (0.15, 0.2)
    image_aspect: tuple[float, float] = (0.75, 1.5)
    image_context_scale: tuple[float, float] = (0.85, 1.0)
    assay_fraction: float = 0.4
    whole_modality_prob: float = 0.5
    whole_modality_weights: dict[str, float] = field(
        default_factory=lambda: {"graph": 1.0, "assay": 1.0, "image": 1.0})
    context_drop_prob: float = 0.0
    modality_settings: dict[str, dict] = field(default_factory=dict)

    def validate(self) -> None:
        from molwm.config import ConfigError

        if not 0.0 <= self.whole_modality_prob <= 1.0:
            raise ConfigError(f"whole_modality_prob must be in [0, 1], got {self.whole_modality_prob}")
        if not 0.0 <= self.context_drop_prob <= 1.0:
            raise ConfigError(f"context_drop_prob must be in [0, 1], got {self.context_drop_prob}")
        if not 0.0 < self.assay_fraction < 1.0:
            raise ConfigError(f"assay_fraction must be in (0, 1), got {self.assay_fraction}")
        for key in ("whole_modality_weights", "modality_settings"):
            unknown = set(getattr(self, key)) - set(modality_names())
            if unknown:
                raise ConfigError(f"{key}: unknown modality {sorted(unknown)} (known: {list(modality_names())})")


@dataclass
class MultimodalMasks:
    """Which tokens the context sees and which the predictor must forecast.

    Attributes:
        hidden: ``[B]`` long index (registry order, :mod:`molwm.jepa.modalities`) of the
            modality hidden whole, -1 where none is.
        dropped: ``[B]`` long index of a modality left out of the context
            without being predicted, -1 where none is.
        parts: Modality name -> its masks over that modality's batch (graph:
            :class:`~molwm.jepa.masking.GraphMasks`; padded tokens:
            :class:`~molwm.jepa.modalities.TokenMask`), for the modalities the batch has.
    """

    hidden: Tensor
    dropped: Tensor | None = None
    parts: dict[str, Any] = field(default_factory=dict)

    def part(self, modality: str) -> Any:
        """Masks of ``modality`` (None if the batch does not have it)."""
        return self.parts.get(modality)

    # the built-in modalities' masks by name, for readers of one of them
    @property
    def graph(self) -> GraphMasks | None:
        return self.part("graph")

    @property
    def image_keep(self) -> Tensor | None:
        """``[Bi, Np]`` bool context patches."""
        return None if self.part("image") is None else self.parts["image"].keep

    @property
    def image_target(self) -> Tensor | None:
        """``[Bi, Np]`` bool hidden patches."""
        return None if self.part("image") is None else self.parts["image"].target

    @property
    def assay_keep(self) -> Tensor | None:
        """``[Ba, T]`` bool context measurements."""
        return None if self.part("assay") is None else self.parts["assay"].keep

    @property
    def assay_target(self) -> Tensor | None:
        """``[Ba, T]`` bool hidden measurements."""
        return None if self.part("assay") is None else self.parts["assay"].target


def sample_multimodal_masks(batch: MultimodalBatch, config: MultimodalMaskConfig, grid: int,
                            rng: np.random.Generator) -> MultimodalMasks:
    """Masks at all three levels for one batch.

    Args:
        batch: The samples.
        config: Fractions and probabilities.
        grid: Image patch grid side (``image_size // patch``).
        rng: Seeded generator (seed per step for exact resume).
    """
    names = modality_names()
    present = batch.present(names).numpy()  # [B, M]
    weights = np.array([config.whole_modality_weights.get(m, 1.0) for m in names])
    hidden = np.full(batch.size, -1, dtype=np.int64)
    for i in range(batch.size):
        have = np.flatnonzero(present[i] & (weights > 0))
        if present[i].sum() >= 2 and len(have) and rng.random() < config.whole_modality_prob:
            p = weights[have] / weights[have].sum()
            hidden[i] = int(rng.choice(have, p=p))
    dropped = np.full(batch.size, -1, dtype=np.int64)
    for i in np.flatnonzero(hidden >= 0):
        others = [m for m in np.flatnonzero(present[i]) if m != hidden[i]]
        if len(others) >= 2 and rng.random() < config.context_drop_prob:
            dropped[i] = int(rng.choice(others))
    masks = MultimodalMasks(hidden=torch.from_numpy(hidden), dropped=torch.from_numpy(dropped))
    for u in sorted(units(), key=lambda u: u.draw_rank):  # the generator's draws in a fixed order
        part = batch.part(u.name)
        if part is None:
            continue
        rows, j = batch.rows(u.name).numpy(), modality_index(u.name)
        masks.parts[u.name] = u.sample_mask(part, config, grid, rng, hidden[rows] == j, dropped[rows] == j)
    return masks


def unseen_parameters(batch: MultimodalBatch, masks: MultimodalMasks | None) -> tuple[str, ...]:
    """Parameter prefixes of a multimodal model that a batch cannot train: encoders of modalities
    with no visible token, predictor queries of modalities with no hidden token, and the pooled
    query when no modality is hidden whole."""
    if masks is None:
        return ()
    out = []
    for u in units():
        mask = masks.part(u.name)
        if batch.part(u.name) is None or mask is None or not u.has_visible(mask):
            out.append(f"encoders.{u.name}.")
    out += [f"predictor.pos.{modality_index(m)}." for m, has in hidden_tokens(masks).items() if not has]
    if not bool((masks.hidden >= 0).any()):
        out.append("predictor.pooled_query")  # no modality hidden whole: no pooled query asked
    return tuple(out)


def hidden_tokens(masks: MultimodalMasks) -> dict[str, bool]:
    """For each modality: do the masks hide any of its tokens (is there anything to predict)?"""
    return {u.name: masks.part(u.name) is not None and u.has_hidden(masks.part(u.name)) for u in units()}


def add_pe(batch: MultimodalBatch, model_config, generator: torch.Generator | None = None):
    """Fill what each modality needs before encoding, e.g. the graph's positional code (random sign
    flips from ``generator``)."""
    for u in units():
        if batch.part(u.name) is not None:
            u.prepare(batch.part(u.name), model_config, generator)
    return batch
