"""Featurized molecules as data: one PyG graph per molecule, or many as flat arrays.

:class:`GraphArrays` is the compact form (what worker processes exchange and
what cache shards store); :meth:`GraphArrays.to_graphs` makes one
:class:`MolGraph` per molecule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Data


class MolGraph(Data):
    """A PyG ``Data`` for one molecule.

    Attributes:
        x: ``[num_atoms, 8]`` long, atom categories (see :data:`GRAPH_SPEC`).
        edge_index: ``[2, 2 * num_bonds]`` long, both directions of every bond.
        edge_attr: ``[2 * num_bonds, 4]`` long, bond categories.
        index: Position of the molecule in the input (an ``int``). Unlike
            PyG's ``*index`` convention it is not shifted when batching.
        smiles: The input SMILES (stripped), when known.
    """

    def __inc__(self, key, value, *args, **kwargs):
        if key == "index":
            return 0
        return super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key, value, *args, **kwargs):
        if key == "index":
            return 0
        return super().__cat_dim__(key, value, *args, **kwargs)


@dataclass
class GraphArrays:
    """Many featurized molecules as flat arrays (CSR-style offsets).

    Attributes:
        atom_x: ``[total_atoms, 8]`` uint8 atom categories.
        bond_x: ``[total_bonds, 4]`` uint8 bond categories, one row per bond.
        bond_index: ``[total_bonds, 2]`` int32 atom indices local to each molecule.
        atom_ptr: ``[M + 1]`` int64; molecule ``i`` owns atoms ``atom_ptr[i]:atom_ptr[i+1]``.
        bond_ptr: ``[M + 1]`` int64; same for bonds.
        index: ``[M]`` int64 input position of each molecule.
    """

    atom_x: np.ndarray
    bond_x: np.ndarray
    bond_index: np.ndarray
    atom_ptr: np.ndarray
    bond_ptr: np.ndarray
    index: np.ndarray

    FIELDS = ("atom_x", "bond_x", "bond_index", "atom_ptr", "bond_ptr", "index")

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def empty(cls, atom_cols: int = 8, bond_cols: int = 4) -> "GraphArrays":
        """Arrays holding zero molecules (default widths: the molecule featurizer's 8 atom and 4 bond columns)."""
        return cls(
            np.zeros((0, atom_cols), np.uint8),
            np.zeros((0, bond_cols), np.uint8),
            np.zeros((0, 2), np.int32),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros(0, np.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence["GraphArrays"]) -> "GraphArrays":
        """Concatenate several arrays objects, keeping molecule order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        atom_off = np.cumsum([0] + [p.atom_ptr[-1] for p in parts[:-1]])
        bond_off = np.cumsum([0] + [p.bond_ptr[-1] for p in parts[:-1]])
        return cls(
            np.concatenate([p.atom_x for p in parts]),
            np.concatenate([p.bond_x for p in parts]),
            np.concatenate([p.bond_index for p in parts]),
            np.concatenate([[0]] + [p.atom_ptr[1:] + o for p, o in zip(parts, atom_off)]).astype(np.int64),
            np.concatenate([[0]] + [p.bond_ptr[1:] + o for p, o in zip(parts, bond_off)]).astype(np.int64),
            np.concatenate([p.index for p in parts]),
        )

    def save(self, directory: str | Path) -> None:
        """Write each array as ``<directory>/<field>.npy`` (memory-mappable)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.FIELDS:
            np.save(directory / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> "GraphArrays":
        """Read arrays written by :meth:`save`; memory-mapped by default."""
        directory = Path(directory)
        mode = "r" if mmap else None
        return cls(*(np.load(directory / f"{name}.npy", mmap_mode=mode) for name in cls.FIELDS))

    def slice(self, start: int, stop: int) -> "GraphArrays":
        """Molecules ``start:stop`` as a new arrays object (pointers rebased)."""
        a0, a1 = int(self.atom_ptr[start]), int(self.atom_ptr[stop])
        b0, b1 = int(self.bond_ptr[start]), int(self.bond_ptr[stop])
        return GraphArrays(
            np.asarray(self.atom_x[a0:a1]),
            np.asarray(self.bond_x[b0:b1]),
            np.asarray(self.bond_index[b0:b1]),
            np.asarray(self.atom_ptr[start : stop + 1]) - a0,
            np.asarray(self.bond_ptr[start : stop + 1]) - b0,
            np.asarray(self.index[start:stop]),
        )

    def to_graphs(self, smiles: Sequence[str] | None = None) -> list[MolGraph]:
        """One :class:`MolGraph` per molecule, in order.

        Args:
            smiles: Optional strings aligned with the molecules (``smiles[i]``
                for molecule ``i``), stored as ``graph.smiles``.
        """
        n = len(self)
        if n == 0:
            return []
        x_all = torch.from_numpy(np.asarray(self.atom_x, dtype=np.int64))
        bi = np.asarray(self.bond_index, dtype=np.int64)
        # every bond becomes two consecutive directed edges: (u->v), (v->u)
        ei_all = torch.from_numpy(np.stack([bi, bi[:, ::-1]], axis=1).reshape(-1, 2).T.copy())  # [2, 2E]
        ea_all = torch.from_numpy(np.repeat(np.asarray(self.bond_x, dtype=np.int64), 2, axis=0))  # [2E, F_b]
        n_atoms = np.diff(self.atom_ptr).tolist()
        n_edges = (2 * np.diff(self.bond_ptr)).tolist()
        xs = torch.split(x_all, n_atoms)
        eis = torch.split(ei_all, n_edges, dim=1)
        eas = torch.split(ea_all, n_edges)
        index = self.index.tolist()
        texts = smiles if smiles is not None else [None] * n
        # clone so that one graph never drags the whole chunk's storage along
        return [
            _new_graph(x.clone(), ei.clone(), ea.clone(), i, s)
            for x, ei, ea, i, s in zip(xs, eis, eas, index, texts)
        ]


def _new_graph_fast(x, edge_index, edge_attr, index, smiles) -> MolGraph:
    # Data.__init__ with keywords routes every attribute through __setattr__
    # checks (~10 us per graph); filling the store directly costs ~3 us.
    g = _graph_new(MolGraph)
    _data_init(g)
    store = g._store._mapping
    store["x"] = x
    store["edge_index"] = edge_index
    store["edge_attr"] = edge_attr
    store["index"] = index
    if smiles is not None:
        store["smiles"] = smiles
    return g


def _new_graph_safe(x, edge_index, edge_attr, index, smiles) -> MolGraph:
    g = MolGraph(x=x, edge_index=edge_index, edge_attr=edge_attr, index=index)
    if smiles is not None:
        g.smiles = smiles
    return g


_graph_new = MolGraph.__new__
_data_init = Data.__init__
# fall back to the public constructor if PyG's storage layout ever changes
_new_graph = (
    _new_graph_fast
    if isinstance(getattr(getattr(Data(), "_store", None), "_mapping", None), dict)
    else _new_graph_safe
)
