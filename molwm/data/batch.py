"""The typed graph batch that crosses module boundaries, built straight from cached arrays.

Building a batch from the cache's flat arrays is vectorised NumPy (no per-molecule
``Data`` objects), which keeps data loading far below the model's step time.
"""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from featurizers.graphs import GraphArrays


@dataclass
class GraphBatch:
    """Many molecules as one disconnected graph.

    Attributes:
        x: ``[N, C_atom]`` long atom categories.
        edge_index: ``[2, E]`` long, both directions of every bond, batch-global.
        edge_attr: ``[E, C_bond]`` long bond categories.
        batch: ``[N]`` long molecule id of each atom.
        ptr: ``[B + 1]`` long atom offsets.
        index: ``[B]`` long row of each molecule in its source table.
        y: ``[B, T]`` float labels (NaN where missing), or None.
        pe: ``[N, P]`` float positional code, filled by the collator.
        targets: ``[B, K]`` float per-molecule pretraining targets (e.g. standardised descriptors;
            NaN where missing), filled by the collator of objectives that need them.
    """

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    ptr: Tensor
    index: Tensor
    y: Tensor | None = None
    pe: Tensor | None = None
    targets: Tensor | None = None
    extras: dict = field(default_factory=dict)

    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    def to(self, device) -> "GraphBatch":
        """Move every tensor to ``device``."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()
                 if k != "extras"}
        return replace(self, **moved)

    @classmethod
    def from_arrays(cls, arrays: GraphArrays, rows: Sequence[int] | np.ndarray,
                    y: np.ndarray | None = None) -> "GraphBatch":
        """Gather molecules ``rows`` (positions in ``arrays``) into a batch.

        Args:
            arrays: Flat featurized molecules (e.g. a memory-mapped cache shard).
            rows: Which molecules, in batch order.
            y: Optional ``[len(arrays), T]`` labels aligned with ``arrays``.
        """
        rows = np.asarray(rows, dtype=np.int64)
        a_ptr = np.asarray(arrays.atom_ptr)
        b_ptr = np.asarray(arrays.bond_ptr)
        n_atoms = a_ptr[rows + 1] - a_ptr[rows]
        n_bonds = b_ptr[rows + 1] - b_ptr[rows]
        atom_rows = _ranges(a_ptr[rows], n_atoms)
        bond_rows = _ranges(b_ptr[rows], n_bonds)
        new_ptr = np.concatenate([[0], np.cumsum(n_atoms)])
        mol_of_bond = np.repeat(np.arange(len(rows)), n_bonds)
        local = np.asarray(arrays.bond_index[bond_rows], dtype=np.int64)  # [Eb, 2]
        glob = local + new_ptr[:-1][mol_of_bond][:, None]
        # both directions, consecutive: (u->v), (v->u)
        ei = np.stack([glob, glob[:, ::-1]], axis=1).reshape(-1, 2).T  # [2, 2Eb]
        ea = np.repeat(np.asarray(arrays.bond_x[bond_rows], dtype=np.int64), 2, axis=0)
        return cls(
            x=torch.from_numpy(np.asarray(arrays.atom_x[atom_rows], dtype=np.int64)),
            edge_index=torch.from_numpy(np.ascontiguousarray(ei)),
            edge_attr=torch.from_numpy(ea),
            batch=torch.from_numpy(np.repeat(np.arange(len(rows)), n_atoms)),
            ptr=torch.from_numpy(new_ptr.astype(np.int64)),
            index=torch.from_numpy(np.asarray(arrays.index)[rows].astype(np.int64)),
            y=None if y is None else torch.from_numpy(np.asarray(y[rows], dtype=np.float32)),
        )

    def select(self, order: Sequence[int] | np.ndarray) -> "GraphBatch":
        """The molecules at positions ``order`` of this batch, in that order."""
        order = np.asarray(order, dtype=np.int64)
        ptr = self.ptr.numpy()
        sizes = np.diff(ptr)
        atoms = _ranges(ptr[order], sizes[order])
        mol_of_edge = self.batch[self.edge_index[0]].numpy()
        e_sizes = np.bincount(mol_of_edge, minlength=self.num_graphs)
        e_ptr = np.concatenate([[0], np.cumsum(e_sizes)])
        edges = _ranges(e_ptr[order], e_sizes[order])  # edges are grouped by molecule
        new_id = np.empty(self.num_nodes, dtype=np.int64)
        new_id[atoms] = np.arange(len(atoms))
        ei = torch.from_numpy(new_id[self.edge_index[:, edges].numpy()])
        return GraphBatch(
            x=self.x[atoms],
            edge_index=ei,
            edge_attr=self.edge_attr[edges],
            batch=torch.from_numpy(np.repeat(np.arange(len(order)), sizes[order])),
            ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(sizes[order])]).astype(np.int64)),
            index=self.index[order],
            y=None if self.y is None else self.y[order],
            pe=None if self.pe is None else self.pe[atoms],
            targets=None if self.targets is None else self.targets[order],
        )

    @classmethod
    def from_graphs(cls, graphs: Sequence) -> "GraphBatch":
        """Batch PyG graphs made by :mod:`featurizers.molecule` (``y`` kept if present)."""
        sizes = [g.num_nodes for g in graphs]
        ptr = np.concatenate([[0], np.cumsum(sizes)])
        ei = torch.cat([g.edge_index + int(o) for g, o in zip(graphs, ptr[:-1])], dim=1)
        y = None
        if graphs and getattr(graphs[0], "y", None) is not None:
            y = torch.cat([g.y.reshape(1, -1) for g in graphs]).float()
        return cls(
            x=torch.cat([g.x for g in graphs]),
            edge_index=ei,
            edge_attr=torch.cat([g.edge_attr for g in graphs]),
            batch=torch.repeat_interleave(torch.arange(len(graphs)), torch.tensor(sizes)),
            ptr=torch.from_numpy(ptr.astype(np.int64)),
            index=torch.tensor([int(g.index) for g in graphs], dtype=torch.long),
            y=y,
        )


def concat_batches(parts: Sequence[GraphBatch]) -> GraphBatch:
    """Join batches (molecule order kept), shifting atom ids and molecule ids."""
    if len(parts) == 1:
        return parts[0]
    atom_off = np.cumsum([0] + [p.num_nodes for p in parts[:-1]])
    mol_off = np.cumsum([0] + [p.num_graphs for p in parts[:-1]])
    ptr = torch.cat([parts[0].ptr[:1]] + [p.ptr[1:] + int(o) for p, o in zip(parts, atom_off)])
    y = None if parts[0].y is None else torch.cat([p.y for p in parts])
    return GraphBatch(
        x=torch.cat([p.x for p in parts]),
        edge_index=torch.cat([p.edge_index + int(o) for p, o in zip(parts, atom_off)], dim=1),
        edge_attr=torch.cat([p.edge_attr for p in parts]),
        batch=torch.cat([p.batch + int(o) for p, o in zip(parts, mol_off)]),
        ptr=ptr,
        index=torch.cat([p.index for p in parts]),
        y=y,
    )


class CachedGraphs:
    """Random access to a prepared dataset's molecules as :class:`GraphBatch` es.

    Shards stay memory-mapped, so memory does not grow with the dataset; labels
    (if any) are read from the shards' meta tables. Every ``release_every`` batches
    the shard pages read so far are unmapped from this process (``madvise``
    ``MADV_DONTNEED``; they stay in the kernel's page cache, so reading them again
    costs a minor fault, not a disk read). Without that, resident memory grows with
    the share of the cache a run has touched, up to the cache's size on disk: each
    random batch of 256 maps ~80 MiB (the kernel maps 64 KiB around every page
    read), and all of MOSES's 750 MiB is mapped after a few dozen batches. Releasing
    after every batch costs a few ms per batch (docs/benchmarks.md, "Streaming at scale").

    Args:
        cache: A :class:`~molwm.data.cache.GraphCache`.
        with_labels: Load the target columns as ``y``.
        limit: Only the first ``limit`` molecules of the cache (None: all). Reads the
            same shards as the whole cache (no second cache is built), so a subset and
            the whole set can be compared on identical files.
        release_every: Batches between unmapping the pages read (0: never).
    """

    def __init__(self, cache, with_labels: bool = True, limit: int | None = None, release_every: int = 1):
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.cache = cache
        self.release_every = release_every
        self._served = 0
        self.shards = []
        counts: list[int] = []
        for i in range(len(cache.shard_names)):
            if limit is not None and sum(counts) >= limit:
                break  # shards past the limit are never opened
            self.shards.append(cache.shard_arrays(i))
            n = len(self.shards[-1])
            counts.append(n if limit is None else min(n, limit - sum(counts)))
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.labels = None
        if with_labels and cache.target_names:
            self.labels = [cache.shard_meta(i)[cache.target_names].to_numpy(np.float32)[:n]
                           for i, n in enumerate(counts)]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def source_index(self) -> np.ndarray:
        """Source-table row of every molecule, in cache order."""
        if not self.shards:
            return np.zeros(0, np.int64)
        return np.concatenate([np.asarray(a.index)[:n] for a, n in zip(self.shards, np.diff(self.offsets))])

    def atom_counts(self) -> np.ndarray:
        """Atoms of every molecule, in cache order (read from the shards' offsets, no graph built)."""
        if not self.shards:
            return np.zeros(0, np.int64)
        return np.concatenate([np.diff(np.asarray(a.atom_ptr))[:n] for a, n in zip(self.shards, np.diff(self.offsets))])

    def batch(self, rows: Sequence[int] | np.ndarray) -> GraphBatch:
        """Molecules at cache positions ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows must be in [0, {len(self)}), got {rows.min()}..{rows.max()}")
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        shards = np.unique(shard_of)
        self._served += 1
        if self.release_every and self._served % self.release_every == 0:
            self.release()  # before this batch: it reads only the pages it needs
        if len(shards) == 1:
            labels = None if self.labels is None else self.labels[shards[0]]
            return GraphBatch.from_arrays(self.shards[shards[0]], rows - self.offsets[shards[0]], labels)
        parts, taken = [], []
        for s in shards:
            picked = np.flatnonzero(shard_of == s)
            labels = None if self.labels is None else self.labels[s]
            parts.append(GraphBatch.from_arrays(self.shards[s], rows[picked] - self.offsets[s], labels))
            taken.append(picked)
        joined = concat_batches(parts)
        # joined holds molecules shard by shard; put them back in the order asked for
        inverse = np.empty(len(rows), dtype=np.int64)
        inverse[np.concatenate(taken)] = np.arange(len(rows))
        return joined.select(inverse)

    def release(self) -> None:
        """Unmap the shard pages read so far from this process (they stay in the page cache)."""
        if not hasattr(mmap, "MADV_DONTNEED"):  # e.g. Windows: nothing to do
            return
        for arrays in self.shards:
            for name in arrays.FIELDS:
                mapped = getattr(getattr(arrays, name), "_mmap", None)  # set by np.load(mmap_mode="r")
                if isinstance(mapped, mmap.mmap):
                    with contextlib.suppress(OSError, ValueError):  # a memory hint: never fail a batch for it
                        mapped.madvise(mmap.MADV_DONTNEED)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets
