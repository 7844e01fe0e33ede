"""Molecule features a fine-tuned head reads beside the pooled embedding.

What Chemprop users add to foundation models (chemprop#1328): normalised RDKit 2D
descriptors next to the learned embedding, so a head on a small set starts from
what a descriptor forest sees. Optionally Morgan count fingerprints as well (the
tabular head's recipe, MapLight+GNN). Computed from SMILES, standardised with
statistics of each member's training rows (median and MAD, clipped at ±6), NaN -> 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from featurizers.descriptors import compute_descriptors, descriptor_spec
from featurizers.fingerprints import morgan_counts


@dataclass
class ExtraInputs:
    """Features joined to the pooled embedding before a head.

    Attributes:
        descriptors: The ``rdkit2d-fast`` RDKit descriptors (:mod:`featurizers.descriptors`).
        morgan_counts: Morgan count fingerprints (radius 2), ``log1p`` of the counts.
        morgan_bits: Folded width of the count fingerprint.
    """

    descriptors: bool = False
    morgan_counts: bool = False
    morgan_bits: int = 1024

    @property
    def enabled(self) -> bool:
        return self.descriptors or self.morgan_counts

    def width(self) -> int:
        """Number of extra features."""
        return (descriptor_spec().size if self.descriptors else 0) + (self.morgan_bits if self.morgan_counts else 0)


def extra_features(smiles: Sequence[str], config: ExtraInputs) -> np.ndarray:
    """``[N, config.width()]`` raw features (NaN where a descriptor cannot be computed)."""
    parts = []
    if config.descriptors:
        parts.append(compute_descriptors(list(smiles)).astype(np.float32))
    if config.morgan_counts:
        parts.append(morgan_counts(list(smiles), config.morgan_bits))
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(smiles), 0), np.float32)


@dataclass
class FeatureScaler:
    """Robust per-column standardisation: ``clip((x - center) / scale, ±clip)``, NaN -> 0.

    Attributes:
        center: Per-column medians of the training rows.
        scale: Per-column ``1.4826 * MAD`` (the std where the MAD is 0; 1 where both are).
        clip: Bound after scaling.
    """

    center: np.ndarray
    scale: np.ndarray
    clip: float = 6.0

    @classmethod
    def fit(cls, x: np.ndarray) -> "FeatureScaler":
        """Fit on training rows ``x [n, F]`` (NaN ignored)."""
        x = np.asarray(x, np.float64)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                center = np.nanmedian(x, axis=0)
                mad = 1.4826 * np.nanmedian(np.abs(x - center), axis=0)
                std = np.nanstd(x, axis=0)
        center = np.where(np.isfinite(center), center, 0.0)
        scale = np.where(mad > 1e-9, mad, np.where(std > 1e-9, std, 1.0))
        return cls(center.astype(np.float32), np.where(np.isfinite(scale), scale, 1.0).astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``[n, F]`` float32 standardised features."""
        z = (np.asarray(x, np.float32) - self.center) / self.scale
        return np.nan_to_num(np.clip(z, -self.clip, self.clip), nan=0.0).astype(np.float32)

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "scale": self.scale.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureScaler":
        return cls(np.asarray(d["center"], np.float32), np.asarray(d["scale"], np.float32), float(d["clip"]))
