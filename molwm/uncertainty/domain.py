"""Applicability domain: how far a query molecule is from the molecules a model was trained on.

Two distances per query, both to the training molecules stored with the model:

* ``max_tanimoto``: the largest Tanimoto similarity of its Morgan fingerprint (radius 2, 2048 bits) to
  a training molecule's;
* ``embedding_distance``: ``1 -`` the largest cosine similarity of its embedding (the pooled features
  the first ensemble member's head reads, centred on the training mean) to a training molecule's.

``in_domain`` is ``embedding_distance <= threshold``, the threshold fitted on validation rows
(:func:`fit_threshold`): the smallest validation distance quantile beyond which the mean absolute
error is at least ``factor`` times the error within it; and the query's heavy-atom count within the
training molecules' range. Both distances can miss a molecule unlike any seen: a 500-carbon chain
sets the same few Morgan bits as octane (``max_tanimoto`` 1.0) and its embedding distance fell within
the fitted threshold, so size is checked on its own. (Checkpoints written before the range was stored
have no size check.)

The training molecules are stored compactly in the checkpoint: fingerprints bit-packed (256 bytes a
molecule) and unit embeddings as float16; nothing is recomputed at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from featurizers.fingerprints import morgan_fingerprints

RADIUS, BITS = 2, 2048
QUANTILES = np.round(np.arange(0.5, 0.951, 0.05), 2)
"""Validation distance quantiles tried as the domain threshold."""


def _unit(x: np.ndarray, centre: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32) - centre
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_threshold(distance: np.ndarray, abs_error: np.ndarray, factor: float, min_beyond: int = 5
                  ) -> tuple[float, float, bool]:
    """The domain threshold on ``distance`` from validation rows (both ``[N]``).

    Tries the validation distance quantiles in :data:`QUANTILES` from the smallest: the first ``d``
    with at least ``min_beyond`` rows beyond it whose mean absolute error is ``factor`` times or more
    the mean absolute error of the rows at or within ``d``. Without one, the largest validation
    distance (only molecules farther than every validation molecule are out of the domain).

    Returns:
        ``(threshold, error ratio at it (NaN when no quantile crossed), crossed)``.
    """
    ok = np.isfinite(distance) & np.isfinite(abs_error)
    d, e = distance[ok], abs_error[ok]
    if not len(d):
        return float("inf"), float("nan"), False
    for q in QUANTILES:
        t = float(np.quantile(d, q))
        beyond = d > t
        if beyond.sum() < min_beyond or (~beyond).sum() == 0:
            continue
        inside = float(e[~beyond].mean())
        ratio = float(e[beyond].mean()) / inside if inside > 0 else float("inf")
        if ratio >= factor:
            return t, ratio, True
    return float(d.max()), float("nan"), False


@dataclass
class Domain:
    """The training molecules of a model, for distances, and its fitted threshold.

    Attributes:
        fingerprints: ``[R, BITS / 8]`` uint8 bit-packed Morgan fingerprints of the training molecules.
        unit: ``[R, E]`` their centred, L2-normalised embeddings (float16 when stored).
        centre: ``[E]`` the training embeddings' mean.
        threshold: ``embedding_distance`` at or below which a molecule is in the domain.
        factor: The validation error ratio the threshold was fitted for.
        info: How it was fitted (validation rows, ratio, whether the factor was reached).
        heavy_atoms: ``(fewest, most)`` heavy atoms of a training molecule; a query outside is out of
            the domain (None: not checked, a checkpoint written before it was stored).
    """

    fingerprints: np.ndarray
    unit: np.ndarray
    centre: np.ndarray
    threshold: float
    factor: float
    info: dict = field(default_factory=dict)
    heavy_atoms: tuple[int, int] | None = None
    _bits: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(cls, train_smiles: Sequence[str], train_emb: np.ndarray, factor: float) -> "Domain":
        """From the training molecules; the threshold is set by :meth:`fit` (infinite until then)."""
        centre = np.asarray(train_emb, np.float32).mean(0)
        fps = np.packbits(morgan_fingerprints(list(train_smiles), RADIUS, BITS), axis=1)
        atoms = heavy_atom_counts(train_smiles)
        atoms = atoms[atoms > 0]
        size = (int(atoms.min()), int(atoms.max())) if len(atoms) else None
        return cls(fps, _unit(train_emb, centre).astype(np.float16), centre, float("inf"), factor,
                   heavy_atoms=size)

    def fit(self, val_emb: np.ndarray, val_abs_error: np.ndarray) -> "Domain":
        """Set the threshold from validation embeddings and absolute errors (:func:`fit_threshold`)."""
        dist = self.embedding_distance(val_emb)
        self.threshold, ratio, crossed = fit_threshold(dist, val_abs_error, self.factor)
        self.info = {"n_val": int(np.isfinite(dist).sum()), "val_error_ratio": ratio, "crossed": crossed}
        return self

    def embedding_distance(self, emb: np.ndarray, block: int = 2048) -> np.ndarray:
        """``[N]`` ``1 -`` max cosine similarity to the training embeddings (NaN rows stay NaN)."""
        emb = np.asarray(emb, np.float32)
        out = np.full(len(emb), np.nan)
        ok = np.flatnonzero(np.isfinite(emb).all(1))
        train = self.unit.astype(np.float32)
        for i in range(0, len(ok), block):
            rows = ok[i : i + block]
            out[rows] = 1.0 - np.clip((_unit(emb[rows], self.centre) @ train.T).max(1), -1.0, 1.0)  # [b]
        return out

    def max_tanimoto(self, smiles: Sequence[str], block: int = 1024) -> np.ndarray:
        """``[N]`` largest Tanimoto similarity to a training molecule (NaN for unparsable SMILES)."""
        if self._bits is None:
            self._bits = np.unpackbits(self.fingerprints, axis=1)[:, :BITS].astype(np.float32)  # [R, BITS]
        train = self._bits
        counts = train.sum(1)
        out = np.full(len(smiles), np.nan)
        for i in range(0, len(smiles), block):
            q = morgan_fingerprints(list(smiles[i : i + block]), RADIUS, BITS).astype(np.float32)  # [b, BITS]
            inter = q @ train.T  # [b, R]
            union = q.sum(1, keepdims=True) + counts[None] - inter
            sim = np.where(union > 0, inter / np.maximum(union, 1), 0.0).max(1)
            sim[q.sum(1) == 0] = np.nan  # no bits: not parsed
            out[i : i + block] = sim
        return out

    def frame(self, smiles: Sequence[str], emb: np.ndarray | None, status: Sequence[str]) -> pd.DataFrame:
        """``max_tanimoto``, ``embedding_distance``, ``in_domain`` per input (rejected rows empty)."""
        ok = np.array([s == "ok" for s in status], dtype=bool)
        tan = np.full(len(smiles), np.nan)
        if ok.any():
            tan[ok] = self.max_tanimoto([smiles[i] for i in np.flatnonzero(ok)])
        dist = self.embedding_distance(emb) if emb is not None else np.full(len(smiles), np.nan)
        dist[~ok] = np.nan
        inside = dist <= self.threshold
        if self.heavy_atoms is not None:
            atoms = heavy_atom_counts(smiles)
            inside &= (atoms >= self.heavy_atoms[0]) & (atoms <= self.heavy_atoms[1])
        flag = pd.array([bool(i) if np.isfinite(d) else pd.NA for i, d in zip(inside, dist)], dtype="boolean")
        return pd.DataFrame({"max_tanimoto": tan, "embedding_distance": dist, "in_domain": flag})

    def to_state(self) -> dict:
        """Plain data and tensors (loads with ``weights_only=True``)."""
        return {"fingerprints": torch.from_numpy(np.ascontiguousarray(self.fingerprints)),
                "unit": torch.from_numpy(np.ascontiguousarray(self.unit.astype(np.float16))),
                "centre": torch.from_numpy(np.asarray(self.centre, np.float32)),
                "threshold": float(self.threshold), "factor": float(self.factor), "info": dict(self.info),
                "radius": RADIUS, "bits": BITS,
                "heavy_atoms": None if self.heavy_atoms is None else [int(v) for v in self.heavy_atoms]}

    @classmethod
    def from_state(cls, state: dict | None) -> "Domain | None":
        """The stored domain, or None for checkpoints written without one."""
        if not state:
            return None
        size = state.get("heavy_atoms")
        return cls(np.asarray(state["fingerprints"]), np.asarray(state["unit"]), np.asarray(state["centre"]),
                   float(state["threshold"]), float(state["factor"]), dict(state.get("info", {})),
                   heavy_atoms=None if size is None else (int(size[0]), int(size[1])))


def heavy_atom_counts(smiles: Sequence[str]) -> np.ndarray:
    """``[N]`` heavy atoms of each molecule (0 for an unparsable SMILES). Read without sanitising (6 times
    faster, the same count): the molecules were parsed and checked for their fingerprints already."""
    from rdkit import Chem, rdBase

    out = np.zeros(len(smiles), dtype=np.int64)
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s, sanitize=False) if isinstance(s, str) else None
            out[i] = mol.GetNumHeavyAtoms() if mol is not None else 0
    return out


def binned_error(distance: np.ndarray, abs_error: np.ndarray, bins: int = 5) -> dict[str, np.ndarray]:
    """Mean absolute error in ``bins`` distance-quantile bins: ``edges [bins+1]``, ``mae [bins]``, ``n [bins]``."""
    ok = np.isfinite(distance) & np.isfinite(abs_error)
    d, e = distance[ok], abs_error[ok]
    edges = np.unique(np.quantile(d, np.linspace(0, 1, bins + 1))) if len(d) else np.zeros(1)
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, max(len(edges) - 2, 0))
    k = max(len(edges) - 1, 1)
    mae = np.array([e[which == b].mean() if (which == b).any() else np.nan for b in range(k)])
    return {"edges": edges, "mae": mae, "n": np.array([(which == b).sum() for b in range(k)])}
