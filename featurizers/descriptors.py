"""Molecular descriptors as pretraining targets: a fast, documented set of RDKit 2D descriptors.

``rdkit2d-fast`` (:data:`DESCRIPTOR_SET`) is every descriptor RDKit computes in C++
in one pass, plus the E-state index extremes:

* the 43 of ``rdMolDescriptors.Properties`` (weights, H-bond donors and acceptors,
  rotatable bonds, ring and stereo counts, ``labuteASA``, ``tpsa``, Crippen logP and
  MR, the chi and kappa connectivity indices, ``Phi``);
* the MOE-style surface-area bins ``SlogP_VSA1-12``, ``SMR_VSA1-10``, ``PEOE_VSA1-14``;
* the 42 molecular quantum numbers ``MQN1-42`` (atom, bond, polarity and topology counts);
* ``Max/Min/MaxAbs/MinAbsEStateIndex``.

125 values per molecule. RDKit's full ``Descriptors.descList`` (217) is about 10x slower
(``qed``, the E-state VSA bins, the 85 ``fr_`` SMARTS counts and ``BCUT2D`` dominate:
measured in docs/benchmarks.md), too slow for the 1.6M MOSES molecules on this machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

DESCRIPTOR_SET = "rdkit2d-fast"
DESCRIPTOR_VERSION = 1
"""Bumped whenever the set or how it is computed changes (caches key on it)."""


@dataclass(frozen=True)
class DescriptorSpec:
    """What :func:`compute_descriptors` returns.

    Attributes:
        name: The descriptor set.
        version: Its version.
        names: Column names, in order.
        rdkit: The RDKit version that computes them (part of every cache key).
    """

    name: str
    version: int
    names: tuple[str, ...]
    rdkit: str

    @property
    def size(self) -> int:
        """Number of descriptors."""
        return len(self.names)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "names": list(self.names), "rdkit": self.rdkit}

    def digest(self) -> str:
        """Content digest of the spec (16 hex chars)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def descriptor_spec() -> DescriptorSpec:
    """The spec of :data:`DESCRIPTOR_SET` for the installed RDKit."""
    import rdkit
    from rdkit.Chem import rdMolDescriptors as rd

    names = list(rd.Properties().GetPropertyNames())
    names += [f"SlogP_VSA{i}" for i in range(1, 13)] + [f"SMR_VSA{i}" for i in range(1, 11)]
    names += [f"PEOE_VSA{i}" for i in range(1, 15)] + [f"MQN{i}" for i in range(1, 43)]
    names += ["MaxEStateIndex", "MinEStateIndex", "MaxAbsEStateIndex", "MinAbsEStateIndex"]
    return DescriptorSpec(DESCRIPTOR_SET, DESCRIPTOR_VERSION, tuple(names), rdkit.__version__)


def compute_descriptors(smiles: Sequence[str]) -> np.ndarray:
    """``[N, K]`` float32 descriptors of :func:`descriptor_spec` (``K = spec.size``).

    Rows of unparsable SMILES are all NaN; a value RDKit cannot compute, or that is not
    finite, is NaN too. Never raises on bad input.
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import EState
    from rdkit.Chem import rdMolDescriptors as rd

    spec = descriptor_spec()
    out = np.full((len(smiles), spec.size), np.nan, dtype=np.float64)
    props = rd.Properties()
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
            if mol is None:
                continue
            try:
                e = np.asarray(EState.EStateIndices(mol), dtype=np.float64)
                row = [*props.ComputeProperties(mol), *rd.SlogP_VSA_(mol), *rd.SMR_VSA_(mol), *rd.PEOE_VSA_(mol),
                       *rd.MQNs_(mol)]
                row += [e.max(), e.min(), np.abs(e).max(), np.abs(e).min()] if len(e) else [np.nan] * 4
            except Exception:  # RDKit failing on one exotic molecule leaves its row NaN, never the batch
                continue
            out[i] = row
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)
