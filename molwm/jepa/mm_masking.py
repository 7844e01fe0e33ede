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

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from molwm.data.multimodal import MODALITIES, MultimodalBatch
from molwm.encoders.graph import structural_pe
from molwm.jepa.masking import GraphMasks, MaskConfig, sample_graph_masks


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

    def validate(self) -> None:
        from molwm.config import ConfigError

        if not 0.0 <= self.whole_modality_prob <= 1.0:
            raise ConfigError(f"whole_modality_prob must be in [0, 1], got {self.whole_modality_prob}")
        if not 0.0 <= self.context_drop_prob <= 1.0:
            raise ConfigError(f"context_drop_prob must be in [0, 1], got {self.context_drop_prob}")
        if not 0.0 < self.assay_fraction < 1.0:
            raise ConfigError(f"assay_fraction must be in (0, 1), got {self.assay_fraction}")
        unknown = set(self.whole_modality_weights) - set(MODALITIES)
        if unknown:
            raise ConfigError(f"whole_modality_weights: unknown modality {sorted(unknown)} (known: {MODALITIES})")


@dataclass
class MultimodalMasks:
    """Which tokens the context sees and which the predictor must forecast.

    Attributes:
        hidden: ``[B]`` long index into ``MODALITIES`` of the modality hidden
            whole, -1 where none is.
        dropped: ``[B]`` long index of a modality left out of the context
            without being predicted, -1 where none is.
        graph: Atom masks over ``batch.graph`` (None without graphs).
        image_keep: ``[Bi, Np]`` bool context patches (None without images).
        image_target: ``[Bi, Np]`` bool hidden patches.
        assay_keep: ``[Ba, T]`` bool context measurements (None without assays).
        assay_target: ``[Ba, T]`` bool hidden measurements.
    """

    hidden: Tensor
    dropped: Tensor | None = None
    graph: GraphMasks | None = None
    image_keep: Tensor | None = None
    image_target: Tensor | None = None
    assay_keep: Tensor | None = None
    assay_target: Tensor | None = None


def image_block_masks(n: int, grid: int, config: MultimodalMaskConfig,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """I-JEPA multi-block masks for ``n`` images on a ``grid x grid`` patch layout.

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
            keep[i].reshape(-1)[rng.choice(free)] = True
    return keep.reshape(n, -1), target.reshape(n, -1)


def _block_shape(scale: float, aspect: float, grid: int) -> tuple[int, int]:
    area = scale * grid * grid
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    return min(max(h, 1), grid), min(max(w, 1), grid)


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


def sample_multimodal_masks(batch: MultimodalBatch, config: MultimodalMaskConfig, grid: int,
                            rng: np.random.Generator) -> MultimodalMasks:
    """Masks at all three levels for one batch.

    Args:
        batch: The samples.
        config: Fractions and probabilities.
        grid: Image patch grid side (``image_size // patch``).
        rng: Seeded generator (seed per step for exact resume).
    """
    present = batch.present().numpy()  # [B, M]
    weights = np.array([config.whole_modality_weights.get(m, 1.0) for m in MODALITIES])
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
    if batch.graph is not None:
        masks.graph = _graph_masks(batch, config.graph, hidden, dropped, rng)
    if batch.image is not None:
        keep, target = image_block_masks(len(batch.image_rows), grid, config, rng)
        rows = batch.image_rows.numpy()
        whole, gone = hidden[rows] == MODALITIES.index("image"), dropped[rows] == MODALITIES.index("image")
        keep[whole], target[whole] = False, True
        keep[gone], target[gone] = False, False
        masks.image_keep, masks.image_target = torch.from_numpy(keep), torch.from_numpy(target)
    if batch.assay is not None:
        pad = batch.assay.pad.numpy()
        keep, target = assay_subset_masks(pad, config.assay_fraction, rng)
        rows = batch.assay_rows.numpy()
        whole, gone = hidden[rows] == MODALITIES.index("assay"), dropped[rows] == MODALITIES.index("assay")
        keep[whole], target[whole] = False, ~pad[whole]
        keep[gone], target[gone] = False, False
        masks.assay_keep, masks.assay_target = torch.from_numpy(keep), torch.from_numpy(target)
    return masks


def _graph_masks(batch: MultimodalBatch, config: MaskConfig, hidden: np.ndarray, dropped: np.ndarray,
                 rng: np.random.Generator) -> GraphMasks:
    g = batch.graph
    inner = sample_graph_masks(g, config, rng)
    rows = batch.graph_rows.numpy()
    whole_mol = hidden[rows] == MODALITIES.index("graph")  # [Bg]
    gone_mol = dropped[rows] == MODALITIES.index("graph")
    if not whole_mol.any() and not gone_mol.any():
        return inner
    mol = g.batch.numpy()
    whole_atom, gone_atom = whole_mol[mol], gone_mol[mol]  # [N]
    block = np.full(g.num_nodes, -1, dtype=np.int64)
    block[inner.target_idx.numpy()] = inner.target_block.numpy()
    n_blocks = int(inner.target_block.max()) + 1 if len(inner.target_block) else 0
    block[whole_atom] = n_blocks + mol[whole_atom]  # one new block per wholly hidden molecule
    block[gone_atom] = -1  # left out of the context, and not predicted either
    target_idx = np.flatnonzero(block >= 0)  # atoms are grouped by molecule, so this stays grouped
    keep = inner.keep.numpy() & ~whole_atom & ~gone_atom
    return GraphMasks(
        keep=torch.from_numpy(keep),
        target_idx=torch.from_numpy(target_idx),
        target_block=torch.from_numpy(block[target_idx]),
        target_mol=torch.from_numpy(mol[target_idx]),
    )


def unseen_parameters(batch: MultimodalBatch, masks: MultimodalMasks | None) -> tuple[str, ...]:
    """Parameter prefixes of a multimodal model that a batch cannot train: encoders of modalities
    with no visible token, predictor queries of modalities with no hidden token, and the pooled
    query when no modality is hidden whole."""
    if masks is None:
        return ()
    keeps = {"graph": masks.graph.keep if masks.graph is not None else None,
             "assay": masks.assay_keep, "image": masks.image_keep}
    out = [f"encoders.{m}." for m, keep in keeps.items()
           if getattr(batch, m) is None or keep is None or not bool(keep.any())]
    out += [f"predictor.pos.{MODALITIES.index(m)}." for m, has in hidden_tokens(masks).items() if not has]
    if not bool((masks.hidden >= 0).any()):
        out.append("predictor.pooled_query")  # no modality hidden whole: no pooled query asked
    return tuple(out)


def hidden_tokens(masks: MultimodalMasks) -> dict[str, bool]:
    """For each modality: do the masks hide any of its tokens (is there anything to predict)?"""
    return {"graph": masks.graph.target_idx.numel() > 0 if masks.graph is not None else False,
            "assay": masks.assay_target is not None and bool(masks.assay_target.any()),
            "image": masks.image_target is not None and bool(masks.image_target.any())}


def add_pe(batch: MultimodalBatch, model_config, generator: torch.Generator | None = None):
    """Fill the graph's positional code (random sign flips from ``generator``)."""
    if batch.graph is not None:
        g, enc = batch.graph, model_config.graph
        g.pe = structural_pe(g.edge_index, g.batch, g.num_graphs, enc.rw_steps, enc.lap_k, generator)
    return batch
