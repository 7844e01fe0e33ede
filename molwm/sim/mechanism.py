"""Hidden mechanism vectors derived from molecular structure.

Every simulated readout (assays, cell states, images, profiles) is a function
of one hidden vector ``m`` per molecule, so the ground truth is known. ``m``
depends only on the molecule and the lab seed, never on which other molecules
are in the batch:

    z   = clip((descriptors - CENTER) / SCALE, -5, 5)          # fixed constants
    f   = morgan_bits / sqrt(max(1, number of bits set))      # radius 2, 2048 bits
    m   = tanh(GAIN_DESC * z @ P_desc + GAIN_FP * f @ P_fp)    # [k], in (-1, 1)

``P_desc ~ N(0, 1/D)`` and ``P_fp ~ N(0, 1)`` are drawn from the lab seed.
See docs/synthetic_lab.md for what this does and does not mimic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import Descriptors

from featurizers import Reject, featurize_arrays
from featurizers.fingerprints import morgan_bits_of

DESCRIPTORS: tuple[tuple[str, float, float], ...] = (
    # name, centre, scale: typical median and spread of drug-like molecules (fixed, not fitted)
    ("MolWt", 360.0, 130.0),
    ("MolLogP", 3.0, 1.9),
    ("TPSA", 75.0, 45.0),
    ("NumHDonors", 1.5, 1.5),
    ("NumHAcceptors", 4.5, 2.2),
    ("NumRotatableBonds", 5.0, 3.7),
    ("RingCount", 3.0, 1.5),
    ("NumAromaticRings", 1.5, 1.2),
    ("FractionCSP3", 0.45, 0.26),
    ("HeavyAtomCount", 25.0, 9.0),
    ("NumHeteroatoms", 6.0, 3.7),
)
"""RDKit 2D descriptors, with the fixed centre and scale used to standardise them."""

MORGAN_RADIUS = 2
MORGAN_BITS = 2048
GAIN_DESC = 0.5
GAIN_FP = 0.7
Z_CLIP = 5.0
# stream ids keep every random draw of the lab independent of the others
STREAM_MECHANISM = 1


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A generator for one named stream of the lab (``seed`` plus stream ids).

    Draws for one stream never shift when another stream draws more numbers,
    so e.g. adding a channel to the renderer leaves the assays unchanged.
    """
    return np.random.default_rng([int(seed), *(int(s) for s in stream)])


@dataclass
class MechanismModel:
    """The fixed random map from structure to mechanism.

    Args:
        seed: Lab seed; the projections are drawn from it.
        k: Mechanism dimension (default 8).

    Attributes:
        p_desc: Projection of standardised descriptors. Shapes: ``[D, k]``.
        p_fp: Projection of normalised Morgan bits. Shapes: ``[2048, k]``.
    """

    seed: int = 0
    k: int = 8
    p_desc: np.ndarray = field(init=False, repr=False)
    p_fp: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"mechanism dimension k must be at least 1, got {self.k}")
        rng = rng_for(self.seed, STREAM_MECHANISM)
        self.p_desc = rng.normal(0.0, 1.0 / np.sqrt(len(DESCRIPTORS)), size=(len(DESCRIPTORS), self.k))
        self.p_fp = rng.normal(0.0, 1.0, size=(MORGAN_BITS, self.k))

    def params(self) -> dict:
        """Everything needed to rebuild the map (the matrices come back from ``seed``)."""
        return {
            "k": self.k,
            "descriptors": [{"name": n, "center": c, "scale": s} for n, c, s in DESCRIPTORS],
            "z_clip": Z_CLIP,
            "morgan_radius": MORGAN_RADIUS,
            "morgan_bits": MORGAN_BITS,
            "gain_desc": GAIN_DESC,
            "gain_fp": GAIN_FP,
            "projection": "p_desc ~ N(0, 1/D), p_fp ~ N(0, 1), drawn from rng([seed, 1]); saved as "
                          "truth/projection_descriptors.npy and truth/projection_morgan.npy",
        }

    def __call__(self, z: np.ndarray, fp: np.ndarray) -> np.ndarray:
        """Map standardised descriptors and fingerprints to mechanisms.

        Shapes:
            z: ``[N, D]``; fp: ``[N, 2048]`` (0/1); returns ``[N, k]``.
        """
        n_on = np.maximum(fp.sum(axis=1, keepdims=True), 1.0)
        pre = GAIN_DESC * (z @ self.p_desc) + GAIN_FP * ((fp / np.sqrt(n_on)) @ self.p_fp)
        return np.tanh(pre)


@dataclass
class Molecules:
    """The accepted molecules of a lab and their mechanisms.

    Attributes:
        index: Position of each accepted molecule in the input. Shapes: ``[N]``.
        smiles: Canonical RDKit SMILES.
        inchikeys: Standard InChIKeys ('' where RDKit cannot make one).
        descriptors: Raw descriptor values. Shapes: ``[N, D]``.
        mechanism: Hidden mechanism vectors. Shapes: ``[N, k]``.
        rejects: Inputs that are not valid molecules, with row and reason.
    """

    index: np.ndarray
    smiles: list[str]
    inchikeys: list[str]
    descriptors: np.ndarray
    mechanism: np.ndarray
    rejects: list[Reject]

    def __len__(self) -> int:
        return len(self.smiles)


def standardise(desc: np.ndarray) -> np.ndarray:
    """Robust standardisation with the fixed constants of :data:`DESCRIPTORS`.

    Shapes:
        desc: ``[N, D]``; returns ``[N, D]``.
    """
    centre = np.array([c for _, c, _ in DESCRIPTORS])
    scale = np.array([s for _, _, s in DESCRIPTORS])
    return np.clip((desc - centre) / scale, -Z_CLIP, Z_CLIP)


def _largest_fragment(mol):
    frags = Chem.GetMolFrags(mol, asMols=True)
    return max(frags, key=lambda m: (m.GetNumHeavyAtoms(), m.GetNumAtoms())) if len(frags) > 1 else mol


def describe(smiles: Sequence) -> tuple[Molecules, np.ndarray]:
    """Parse SMILES and compute descriptors and Morgan bits (mechanism left empty).

    Descriptors and bits are those of the largest fragment (the parent of a
    salt); ``smiles`` and ``inchikeys`` describe the input as given.

    Invalid inputs become :class:`featurizers.Reject` entries (row, input, reason),
    checked by the same rules as molwm's featurizer; nothing raises.

    Returns:
        The molecules and their Morgan bits. Shapes: bits ``[N, 2048]``.
    """
    _, rejects = featurize_arrays(list(smiles))
    bad = {r.index for r in rejects}
    fns = [getattr(Descriptors, name) for name, _, _ in DESCRIPTORS]
    index, canon, keys, desc, fps = [], [], [], [], []
    with rdBase.BlockLogs():
        for i, raw in enumerate(smiles):
            if i in bad:
                continue
            mol = Chem.MolFromSmiles(raw.strip())
            if mol is None:  # pragma: no cover - featurize_arrays already rejected it
                rejects.append(Reject(i, str(raw), "could not parse SMILES", "parse_error"))
                continue
            index.append(i)
            canon.append(Chem.MolToSmiles(mol))
            try:
                keys.append(Chem.MolToInchiKey(mol) or "")
            except Exception:  # InChI refuses some exotic molecules; the SMILES still identifies them
                keys.append("")
            parent = _largest_fragment(mol)  # a salt acts through its parent, so HBr does not change m
            desc.append([float(f(parent)) for f in fns])
            fps.append(morgan_bits_of(parent, MORGAN_RADIUS, MORGAN_BITS))
    d = len(DESCRIPTORS)
    return Molecules(
        index=np.asarray(index, np.int64),
        smiles=canon,
        inchikeys=keys,
        descriptors=np.asarray(desc, np.float64).reshape(-1, d),
        mechanism=np.zeros((len(index), 0)),
        rejects=sorted(rejects, key=lambda r: r.index),
    ), np.asarray(fps, np.float64).reshape(-1, MORGAN_BITS)


def compute_mechanisms(smiles: Sequence, seed: int = 0, k: int = 8) -> Molecules:
    """Mechanism vectors for SMILES; deterministic for (SMILES, seed, k).

    Args:
        smiles: Input SMILES; invalid entries are reported in ``rejects``.
        seed: Lab seed.
        k: Mechanism dimension.

    Returns:
        The accepted molecules, in input order, with ``mechanism`` filled.

    Shapes:
        ``mechanism``: ``[N, k]`` with N the number of valid inputs.
    """
    mols, fps = describe(smiles)
    model = MechanismModel(seed, k)
    mols.mechanism = model(standardise(mols.descriptors), fps)
    return mols
