"""The molecular graph as a modality: atoms are tokens, hidden atom blocks are the targets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoder
from molwm.jepa.masking import GraphMasks, sample_graph_masks
from molwm.jepa.modalities.base import HiddenQuery, ModalityUnit


class GraphUnit(ModalityUnit):
    """Molecules (:class:`~molwm.data.batch.GraphBatch`), masked by connected atom blocks
    (:func:`molwm.jepa.masking.sample_graph_masks`); raw content: the atoms' categories."""

    name = "graph"
    head_name = "atom_heads"
    draw_rank = 0

    def encoder(self, spec, n_assays: int, config) -> nn.Module:
        return GraphEncoder(spec, config.graph)

    def pos_dim(self, n_assays: int, config) -> int:
        return config.graph.pe_dim

    def prepare(self, part: GraphBatch, config, generator: torch.Generator | None) -> None:
        config.graph.prepare(part, generator)

    def encode(self, encoder, part: GraphBatch, rows: Tensor, keep: Tensor | None):
        return encoder.tokens(part, keep=keep), rows  # [Bg, T, D]: every molecule keeps a token row

    def sample_mask(self, part: GraphBatch, config, grid: int, rng: np.random.Generator, whole: np.ndarray,
                    gone: np.ndarray) -> GraphMasks:
        inner = sample_graph_masks(part, config.graph, rng)
        if not whole.any() and not gone.any():
            return inner
        mol = part.batch.numpy()
        whole_atom, gone_atom = whole[mol], gone[mol]  # [N]
        block = np.full(part.num_nodes, -1, dtype=np.int64)
        block[inner.target_idx.numpy()] = inner.target_block.numpy()
        n_blocks = int(inner.target_block.max()) + 1 if len(inner.target_block) else 0
        block[whole_atom] = n_blocks + mol[whole_atom]  # one new block per wholly hidden molecule
        block[gone_atom] = -1  # left out of the context, and not predicted either
        target_idx = np.flatnonzero(block >= 0)  # atoms are grouped by molecule, so this stays grouped
        keep = inner.keep.numpy() & ~whole_atom & ~gone_atom
        return GraphMasks(keep=torch.from_numpy(keep), target_idx=torch.from_numpy(target_idx),
                          target_block=torch.from_numpy(block[target_idx]),
                          target_mol=torch.from_numpy(mol[target_idx]))

    def has_hidden(self, mask: GraphMasks) -> bool:
        return mask.target_idx.numel() > 0

    def second_view(self, part: GraphBatch, mask: GraphMasks) -> GraphMasks:
        keep = torch.zeros(part.num_nodes, dtype=torch.bool, device=mask.target_idx.device)
        keep[mask.target_idx] = True
        return replace(mask, keep=keep)

    def query(self, index: int, encoder, part: GraphBatch, mask: GraphMasks, rows: Tensor,
              size: int) -> HiddenQuery | None:
        if len(mask.target_idx) == 0:
            return None
        pos, real = to_dense_batch(part.pe[mask.target_idx], rows[mask.target_mol], batch_size=size)
        return HiddenQuery(index, pos, ~real, mask.target_idx)

    def hidden_targets(self, tx: Tensor, tpad: Tensor, select: Tensor) -> Tensor:
        return tx[~tpad][select]  # atoms in batch order, then the hidden ones

    def raw_head(self, spec, config) -> nn.Module:
        return nn.ModuleList(nn.Linear(config.dim, n) for n in spec.atom_sizes)

    def raw_target(self, part: GraphBatch, select: Tensor, config) -> tuple[Tensor, None]:
        return part.x[select].clone(), None  # [Nt, Ca] atom categories

    def raw_loss(self, head: nn.Module, h: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        return torch.stack([F.cross_entropy(lin(h), target[:, j]) for j, lin in enumerate(head)]).mean()
