"""SMILES to molecular graphs (PyG ``Data``), fast, with every bad input reported.

Features are categorical indices declared in :data:`GRAPH_SPEC`; encoders embed
each column from its declared size. The work is split in two layers:

* :func:`featurize_arrays` turns SMILES into compact concatenated NumPy arrays
  (:class:`GraphArrays`): cheap to pickle between processes and to store as
  cache shards.
* :meth:`GraphArrays.to_graphs` turns those into one :class:`MolGraph` per
  molecule.

:func:`featurize_smiles` chains both, optionally across processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
from typing import Iterator, Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import Atom, Bond

from featurizers.errors import FeaturizationError, Reject
from featurizers.graphs import GraphArrays, MolGraph
from featurizers.spec import CategoricalFeature, GraphSpec

DEFAULT_MAX_SMILES_LENGTH = 1000
"""Longest SMILES accepted by default; longer strings become ``too_long`` rejects."""

ATOM_FEATURES = (
    CategoricalFeature("atomic_num", 119, "atomic number 1-118 (0 never occurs: dummy atoms are rejected)"),
    CategoricalFeature("degree", 7, "explicit neighbours in the graph; 6 means 6 or more"),
    CategoricalFeature("formal_charge", 7, "formal charge + 3, charges clipped to [-3, +3]"),
    CategoricalFeature("num_hs", 5, "total attached hydrogens (implicit + explicit); 4 means 4 or more"),
    CategoricalFeature("hybridization", 9, "RDKit HybridizationType: 0 unspecified, 1 s, 2 sp, 3 sp2, 4 sp3, 5 sp2d, 6 sp3d, 7 sp3d2, 8 other"),
    CategoricalFeature("aromatic", 2, "1 if the atom is aromatic"),
    CategoricalFeature("in_ring", 2, "1 if the atom is in a ring"),
    CategoricalFeature("chirality", 9, "RDKit ChiralType: 0 unspecified, 1 CW, 2 CCW, 3 other, 4-8 non-tetrahedral tags"),
)
BOND_FEATURES = (
    CategoricalFeature("bond_type", 5, "0 single, 1 double, 2 triple, 3 aromatic, 4 other (dative, ...)"),
    CategoricalFeature("conjugated", 2, "1 if the bond is conjugated"),
    CategoricalFeature("in_ring", 2, "1 if the bond is in a ring"),
    CategoricalFeature("stereo", 8, "RDKit BondStereo: 0 none, 1 any, 2 Z, 3 E, 4 cis, 5 trans, 6-7 atropisomer"),
)
GRAPH_SPEC = GraphSpec(atom=ATOM_FEATURES, bond=BOND_FEATURES, version="1")
"""The spec of every graph this module makes."""

_MolFromSmiles = Chem.MolFromSmiles
_GetAtomicNum = Atom.GetAtomicNum
_GetFormalCharge = Atom.GetFormalCharge
_GetTotalNumHs = Atom.GetTotalNumHs
_GetHybridization = Atom.GetHybridization
_GetIsAromatic = Atom.GetIsAromatic
_GetChiralTag = Atom.GetChiralTag
_GetBeginAtomIdx = Bond.GetBeginAtomIdx
_GetEndAtomIdx = Bond.GetEndAtomIdx
_GetBondTypeAsDouble = Bond.GetBondTypeAsDouble
_GetBondType = Bond.GetBondType
_GetIsConjugated = Bond.GetIsConjugated
_BondIsInRing = Bond.IsInRing
_GetStereo = Bond.GetStereo

# bond order as double -> category; anything else is "other" (4)
_BOND_ORDER_CODE = {1.0: 0, 2.0: 1, 3.0: 2, 1.5: 3}
# exact bond types, used only when the SMILES has dative arrows (whose order reads as 1.0)
_BOND_TYPE_ORDER = {
    Chem.BondType.SINGLE: 1.0,
    Chem.BondType.DOUBLE: 2.0,
    Chem.BondType.TRIPLE: 3.0,
    Chem.BondType.AROMATIC: 1.5,
}
_WHITESPACE = re.compile(r"\s")


def _precheck(s, max_length: int) -> tuple[str, str] | None:
    """Cheap string checks before RDKit sees the input; returns (code, reason) or None."""
    if not isinstance(s, str):
        kind = type(s).__name__
        if s is None or (isinstance(s, float) and s != s):
            return "not_string", f"missing value ({s!r}), expected a SMILES string"
        return "not_string", f"expected a SMILES string, got {kind} {s!r:.40}"
    if not s:
        return "empty", "empty SMILES"
    if len(s) > max_length:
        return "too_long", f"SMILES has {len(s)} characters, longer than the limit of {max_length} (the max_smiles_length setting of data prepare and fine-tuning)"
    if _WHITESPACE.search(s):
        return "whitespace", "SMILES contains whitespace; give one SMILES per entry (names or ids belong in another column)"
    if ">" in s and ">" in s.replace("->", "").replace("<-", ""):
        return "reaction", "reaction SMILES (contains '>'); expected a single molecule"
    if "*" in s:
        return "dummy_atom", "contains a dummy atom '*' (wildcard or attachment point); featurize the capped molecule instead"
    return None


def _unbalanced(s: str) -> str | None:
    """Name the most common SMILES syntax slip, if any."""
    if s.count("(") != s.count(")"):
        return "unbalanced parentheses"
    if s.count("[") != s.count("]"):
        return "unbalanced square brackets"
    outside = re.sub(r"\[[^\]]*\]", "", s)
    ring_labels = re.findall(r"%\d\d|\d", outside)
    open_labels = {lab for lab in set(ring_labels) if ring_labels.count(lab) % 2}
    if open_labels:
        return f"unclosed ring bond {', '.join(sorted(open_labels))}"
    return None


def _diagnose(s: str) -> tuple[str, str]:
    """Explain why RDKit refused ``s`` (only called on failure, so speed is irrelevant)."""
    raw = _MolFromSmiles(s, sanitize=False)
    if raw is None:
        slip = _unbalanced(s)
        detail = slip or "syntax error or unknown element symbol"
        return "parse_error", f"could not parse SMILES: {detail}"
    problems = Chem.DetectChemistryProblems(raw)
    if not problems:
        return "sanitize", "RDKit could not sanitize the molecule"
    kind, msg = problems[0].GetType(), problems[0].Message().strip()
    if "Valence" in kind:
        return "valence", f"valence error: {msg}"
    if "Kekulize" in kind:
        return "kekulize", f"aromaticity error (check lowercase aromatic atoms and [nH]): {msg}"
    return "sanitize", f"chemistry problem ({kind}): {msg}"


class _Accumulator:
    """Flat Python lists that grow molecule by molecule, then become arrays."""

    def __init__(self):
        self.z, self.charge, self.hs, self.hyb, self.arom, self.chir = [], [], [], [], [], []
        self.begin, self.end, self.btype, self.conj, self.bring, self.stereo = [], [], [], [], [], []
        self.n_atoms, self.n_bonds, self.index = [], [], []

    def add(self, mol, s: str, index: int) -> str | None:
        """Append one sanitized molecule; return a reject reason instead if it has none/dummy atoms."""
        atoms = list(mol.GetAtoms())
        if not atoms:
            return "no_atoms"
        z = list(map(_GetAtomicNum, atoms))
        if 0 in z:
            return "dummy_atom"
        n = len(atoms)
        self.z += z
        self.charge += map(_GetFormalCharge, atoms)
        self.hs += map(_GetTotalNumHs, atoms)
        self.hyb += map(_GetHybridization, atoms)
        self.arom += map(_GetIsAromatic, atoms)
        # chiral tags and bond stereo only come from '@' and '/', '\' in SMILES
        if "@" in s:
            self.chir += map(_GetChiralTag, atoms)
        else:
            self.chir += [0] * n
        bonds = list(mol.GetBonds())
        nb = len(bonds)
        self.begin += map(_GetBeginAtomIdx, bonds)
        self.end += map(_GetEndAtomIdx, bonds)
        if "->" in s or "<-" in s:
            self.btype += [_BOND_TYPE_ORDER.get(t, -1.0) for t in map(_GetBondType, bonds)]
        else:
            self.btype += map(_GetBondTypeAsDouble, bonds)
        self.conj += map(_GetIsConjugated, bonds)
        self.bring += map(_BondIsInRing, bonds)
        if "/" in s or "\\" in s:
            self.stereo += map(_GetStereo, bonds)
        else:
            self.stereo += [0] * nb
        self.n_atoms.append(n)
        self.n_bonds.append(nb)
        self.index.append(index)
        return None

    def finish(self) -> GraphArrays:
        if not self.index:
            return GraphArrays.empty(len(ATOM_FEATURES), len(BOND_FEATURES))
        atom_ptr = np.zeros(len(self.n_atoms) + 1, np.int64)
        np.cumsum(self.n_atoms, out=atom_ptr[1:])
        bond_ptr = np.zeros(len(self.n_bonds) + 1, np.int64)
        np.cumsum(self.n_bonds, out=bond_ptr[1:])
        n_total = int(atom_ptr[-1])
        begin = np.asarray(self.begin, np.int32)
        end = np.asarray(self.end, np.int32)
        # global atom ids of bond ends, to derive degree and ring membership vectorised
        mol_of_bond = np.repeat(np.arange(len(self.n_bonds)), self.n_bonds)
        g_begin = begin + atom_ptr[:-1][mol_of_bond]
        g_end = end + atom_ptr[:-1][mol_of_bond]
        degree = np.bincount(g_begin, minlength=n_total) + np.bincount(g_end, minlength=n_total)
        bring = np.asarray(self.bring, np.bool_)
        atom_ring = np.zeros(n_total, np.bool_)
        atom_ring[g_begin[bring]] = True
        atom_ring[g_end[bring]] = True
        btype = np.asarray(self.btype, np.float64)
        bcode = np.full(len(btype), 4, np.uint8)
        for order, code in _BOND_ORDER_CODE.items():
            bcode[btype == order] = code
        atom_x = np.stack(
            [
                np.clip(self.z, 0, 118),
                np.minimum(degree, 6),
                np.clip(self.charge, -3, 3) + 3,
                np.minimum(self.hs, 4),
                np.asarray(self.hyb, np.int64),
                np.asarray(self.arom, np.int64),
                atom_ring,
                np.asarray(self.chir, np.int64),
            ],
            axis=1,
        ).astype(np.uint8)
        bond_x = np.stack(
            [bcode, np.asarray(self.conj, np.uint8), bring.astype(np.uint8), np.asarray(self.stereo, np.uint8)],
            axis=1,
        ).astype(np.uint8)
        return GraphArrays(
            atom_x=atom_x,
            bond_x=bond_x,
            bond_index=np.stack([begin, end], axis=1),
            atom_ptr=atom_ptr,
            bond_ptr=bond_ptr,
            index=np.asarray(self.index, np.int64),
        )


def featurize_arrays(
    smiles: Sequence,
    offset: int = 0,
    max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH,
    largest_fragment: bool = False,
) -> tuple[GraphArrays, list[Reject]]:
    """Featurize SMILES into compact arrays, in one process.

    Args:
        smiles: Inputs; anything that is not a valid single-molecule SMILES
            string becomes a :class:`Reject`.
        offset: Added to each position to form ``index`` (for chunked calls).
        max_smiles_length: Longer strings are rejected as ``too_long``.
        largest_fragment: For multi-fragment SMILES (salts, solvates), keep
            only the fragment with the most heavy atoms; otherwise the graph
            holds every fragment as a disconnected component.

    Returns:
        The arrays of the accepted molecules (input order) and the rejects.
        ``len(arrays) + len(rejects) == len(smiles)``.
    """
    acc = _Accumulator()
    rejects: list[Reject] = []
    with rdBase.BlockLogs():
        for k, raw in enumerate(smiles):
            s = raw.strip() if isinstance(raw, str) else raw
            problem = _precheck(s, max_smiles_length)
            if problem is None:
                mol = _MolFromSmiles(s)
                if mol is None:
                    problem = _diagnose(s)
                else:
                    if largest_fragment and "." in s:
                        mol = _largest_fragment(mol)
                    code = acc.add(mol, s, offset + k)
                    if code == "no_atoms":
                        problem = ("no_atoms", "SMILES describes no atoms")
                    elif code == "dummy_atom":
                        problem = ("dummy_atom", "contains a dummy atom (atomic number 0)")
            if problem is not None:
                rejects.append(Reject(offset + k, s if isinstance(s, str) else repr(s), problem[1], problem[0]))
    return acc.finish(), rejects


def _largest_fragment(mol):
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(frags, key=lambda m: (m.GetNumHeavyAtoms(), m.GetNumAtoms()))


def mol_to_graph(
    smiles: str, max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH, largest_fragment: bool = False
) -> MolGraph:
    """Featurize one SMILES.

    Args:
        smiles: A single-molecule SMILES string.
        max_smiles_length: Longer strings are refused.
        largest_fragment: Keep only the largest fragment of a salt or mixture.

    Returns:
        The molecule's graph, with ``index == 0``.

    Raises:
        FeaturizationError: With a readable ``reason`` and a ``code``, for any
            input that is not a valid molecule.
    """
    arrays, rejects = featurize_arrays([smiles], max_smiles_length=max_smiles_length,
                                       largest_fragment=largest_fragment)
    if rejects:
        raise FeaturizationError(rejects[0].reason, rejects[0].code)
    return arrays.to_graphs([smiles.strip()])[0]


def _worker(args) -> tuple[GraphArrays, list[Reject]]:
    chunk, offset, max_len, largest = args
    return featurize_arrays(chunk, offset, max_len, largest)


def resolve_n_jobs(n_jobs: int) -> int:
    """``n_jobs`` <= 0 means every core this process may use."""
    if n_jobs > 0:
        return n_jobs
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def iter_featurized_chunks(
    smiles: Sequence,
    n_jobs: int = 1,
    chunk_size: int = 2000,
    max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH,
    offset: int = 0,
    largest_fragment: bool = False,
    background: bool = False,
) -> Iterator[tuple[int, int, GraphArrays, list[Reject]]]:
    """Featurize in chunks, in order, optionally over a process pool.

    Workers exchange compact NumPy arrays, never tensors, so two processes
    are close to twice as fast as one.

    Args:
        background: Use worker processes even for ``n_jobs == 1``, so that
            featurization runs ahead while the caller works on earlier chunks.

    Yields:
        ``(start, stop, arrays, rejects)`` per chunk, where ``start:stop`` are
        positions in ``smiles``; indices inside are ``offset + position``.
    """
    n_jobs = resolve_n_jobs(n_jobs)
    bounds = [(i, min(i + chunk_size, len(smiles))) for i in range(0, len(smiles), chunk_size)]
    tasks = ((list(smiles[a:b]), offset + a, max_smiles_length, largest_fragment) for a, b in bounds)
    if (n_jobs == 1 and not background) or len(bounds) <= 1:
        for (a, b), task in zip(bounds, tasks):
            yield (a, b, *_worker(task))
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(n_jobs) as pool:
        for (a, b), result in zip(bounds, pool.imap(_worker, tasks)):
            yield (a, b, *result)


def featurize_smiles(
    smiles: Sequence,
    n_jobs: int = 1,
    progress: bool = False,
    max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH,
    chunk_size: int = 2000,
    largest_fragment: bool = False,
) -> tuple[list[MolGraph], list[Reject]]:
    """Featurize many SMILES into graphs; bad inputs become rejects, never exceptions.

    Args:
        smiles: Input strings (any sequence; non-strings are rejected).
        n_jobs: Processes to use; 1 runs in this process, <= 0 uses every core.
        progress: Show a progress bar.
        max_smiles_length: Longer strings are rejected as ``too_long``.
        chunk_size: Molecules per unit of work.
        largest_fragment: Keep only the largest fragment of salts and mixtures.

    Returns:
        ``(graphs, rejects)``: graphs in input order, each with ``.index`` (its
        input position) and ``.smiles``; rejects with ``.index``, ``.smiles``,
        ``.reason``. ``len(graphs) + len(rejects) == len(smiles)``.
    """
    from tqdm.auto import tqdm

    graphs: list[MolGraph] = []
    rejects: list[Reject] = []
    bar = tqdm(total=len(smiles), desc="featurize", unit="mol", disable=not progress)
    for _, _, arrays, rej in iter_featurized_chunks(
        smiles, n_jobs, chunk_size, max_smiles_length, largest_fragment=largest_fragment
    ):
        texts = [smiles[i].strip() for i in arrays.index.tolist()]
        graphs.extend(arrays.to_graphs(texts))
        rejects.extend(rej)
        bar.update(len(arrays) + len(rej))
    bar.close()
    return graphs, rejects
