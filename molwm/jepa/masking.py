"""Graph masks for the JEPA, made at collate time with a seeded generator.

Each molecule gets several *target blocks*: connected sets of atoms grown from
a random seed atom, either as a k-hop ball (breadth-first, neighbours in random
order) or ring-first (ring bonds are followed before others, so whole rings
and the fragments hanging off them are hidden together). The blocks cover
about ``target_fraction`` of the atoms; the context is every other atom. The
model only sees index tensors.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from molwm.data.batch import GraphBatch

# column of the in_ring flag in the bond features (featurizers.molecule.BOND_FEATURES)
_BOND_IN_RING = 2


@dataclass
class MaskConfig:
    """How much to hide.

    Attributes:
        target_fraction: Share of each molecule's atoms hidden, over all blocks.
        n_blocks: Target blocks per molecule (fewer for tiny molecules).
        strategy: ``khop`` (breadth-first balls), ``ring`` (ring bonds first)
            or ``mixed`` (each block picks one at random).
        min_context: Atoms always left visible.
    """

    target_fraction: float = 0.3
    n_blocks: int = 2
    strategy: Literal["khop", "ring", "mixed"] = "mixed"
    min_context: int = 2

    def validate(self) -> None:
        from molwm.config import ConfigError

        if not 0.0 < self.target_fraction < 1.0:
            raise ConfigError(f"target_fraction must be in (0, 1), got {self.target_fraction}")
        if self.n_blocks < 1:
            raise ConfigError(f"n_blocks must be >= 1, got {self.n_blocks}")


@dataclass
class GraphMasks:
    """Which atoms the context sees and which it must predict.

    Attributes:
        keep: ``[N]`` bool, True for context atoms.
        target_idx: ``[Nt]`` batch-global ids of hidden atoms.
        target_block: ``[Nt]`` batch-global block id of each hidden atom.
        target_mol: ``[Nt]`` molecule id of each hidden atom.
    """

    keep: Tensor
    target_idx: Tensor
    target_block: Tensor
    target_mol: Tensor


def _grow_block(start: int, size: int, adj: list[list[tuple[int, bool]]], free: np.ndarray,
                ring_first: bool, rng: np.random.Generator) -> list[int]:
    block, seen = [start], {start}
    queue = deque([start])
    while queue and len(block) < size:
        u = queue.popleft()
        nbrs = [v for v, _ in adj[u] if free[v] and v not in seen]
        rng.shuffle(nbrs)
        ring_set = {v for v, in_ring in adj[u] if in_ring} if ring_first else set()
        nbrs.sort(key=lambda v: v not in ring_set)  # stable: ring neighbours first when ring_first
        for v in nbrs:
            if len(block) >= size:
                break
            seen.add(v)
            block.append(v)
            if v in ring_set:
                queue.appendleft(v)  # keep walking around the ring before branching out
            else:
                queue.append(v)
    return block


def sample_graph_masks(batch: GraphBatch, config: MaskConfig, generator: np.random.Generator) -> GraphMasks:
    """Sample target blocks for every molecule of a batch.

    Args:
        batch: The molecules.
        config: Fraction, blocks, strategy.
        generator: Seeded NumPy generator (seed it per step for exact resume).

    Returns:
        :class:`GraphMasks` with connected blocks; molecules too small to hide
        anything while keeping ``min_context`` atoms contribute no targets. They are
        drawn on the CPU (NumPy) and put on the batch's device.
    """
    ptr = batch.ptr.tolist()
    src, dst = batch.edge_index.cpu().numpy()
    ring = batch.edge_attr[:, _BOND_IN_RING].cpu().numpy().astype(bool)
    keep = np.ones(batch.num_nodes, dtype=bool)
    t_idx, t_block, t_mol = [], [], []
    block_id = 0
    # adjacency per molecule from the batch-global edge list (both directions present)
    order = np.argsort(src, kind="stable")
    src, dst, ring = src[order], dst[order], ring[order]
    starts = np.searchsorted(src, np.arange(batch.num_nodes + 1))
    for m in range(batch.num_graphs):
        a0, a1 = ptr[m], ptr[m + 1]
        n = a1 - a0
        budget = min(int(round(config.target_fraction * n)), n - config.min_context)
        if budget < 1:
            continue
        adj = [
            [(int(dst[k]) - a0, bool(ring[k])) for k in range(starts[a0 + i], starts[a0 + i + 1])]
            for i in range(n)
        ]
        free = np.ones(n, dtype=bool)
        n_blocks = max(1, min(config.n_blocks, budget))
        per_block = math.ceil(budget / n_blocks)
        hidden = 0
        for _ in range(n_blocks):
            size = min(per_block, budget - hidden)
            if size < 1:
                break
            candidates = np.flatnonzero(free)
            start = int(generator.choice(candidates))
            ring_first = config.strategy == "ring" or (config.strategy == "mixed" and generator.random() < 0.5)
            block = _grow_block(start, size, adj, free, ring_first, generator)
            free[block] = False
            hidden += len(block)
            t_idx += [a0 + v for v in block]
            t_block += [block_id] * len(block)
            t_mol += [m] * len(block)
            block_id += 1
        keep[a0:a1] = free
    dev = batch.x.device
    return GraphMasks(
        keep=torch.from_numpy(keep).to(dev),
        target_idx=torch.tensor(t_idx, dtype=torch.long, device=dev),
        target_block=torch.tensor(t_block, dtype=torch.long, device=dev),
        target_mol=torch.tensor(t_mol, dtype=torch.long, device=dev),
    )
