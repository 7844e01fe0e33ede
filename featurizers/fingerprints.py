"""Morgan fingerprints, computed here and nowhere else: bit vectors (ECFP-like) and count vectors.

Every Morgan fingerprint molwm uses comes from :func:`morgan_generator` (RDKit's
``rdFingerprintGenerator``): the forests' and SVM's inputs (:mod:`molwm.baselines`), the
applicability domain's Tanimoto neighbours, the extra inputs of fine-tuned heads, the world model's
compound features and the synthetic lab's mechanisms. RDKit is imported on first use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np


@lru_cache(maxsize=8)
def morgan_generator(radius: int = 2, n_bits: int = 2048):
    """RDKit's Morgan generator for ``radius`` and ``n_bits`` (cached: one per setting)."""
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def morgan_fingerprints(smiles: Sequence[str], radius: int = 2, n_bits: int = 2048) -> np.ndarray:
    """``[N, n_bits]`` uint8 Morgan (ECFP-like) bit vectors; all-zero rows for unparsable SMILES."""
    from rdkit import Chem, DataStructs, rdBase

    gen = morgan_generator(radius, n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.uint8)
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s)
            if mol is not None:
                DataStructs.ConvertToNumpyArray(gen.GetFingerprint(mol), out[i])
    return out


def morgan_counts(smiles: Sequence[str], n_bits: int = 1024, radius: int = 2) -> np.ndarray:
    """``[N, n_bits]`` float32 ``log1p`` Morgan counts; zero rows for unparsable SMILES."""
    from rdkit import Chem, rdBase

    gen = morgan_generator(radius, n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.float32)
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
            if mol is not None:
                out[i] = gen.GetCountFingerprintAsNumPy(mol)
    return np.log1p(out)


def morgan_bits_of(mol, radius: int = 2, n_bits: int = 2048) -> np.ndarray:
    """``[n_bits]`` Morgan bits of one parsed RDKit molecule (RDKit's own NumPy form)."""
    return morgan_generator(radius, n_bits).GetFingerprintAsNumPy(mol)
