"""Frozen-encoder probes on the synthetic lab's ground truth: does an embedding carry the hidden biology?

The lab (``molwm sim generate``) keeps what produced every measurement under
``truth/``: each compound's mechanism vector (``mechanism.npy``, rows in
``compound_truth.csv`` order) and each well's cell state (``state.npy``, rows
in ``well.csv`` order). A probe reads one modality's pooled embedding (the
encoder downstream tasks use: the JEPA's EMA target, the trained encoder
otherwise) for lab samples of held-out scaffolds, which pretraining never
saw, fits a ridge map (penalty by exact leave-one-out) on the samples of half
of those compounds and reports R² on the other half (mean over the truth's
dimensions). The same samples and halves at every step and for every
objective, so the curves compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from molwm.data.multimodal import MultimodalData
from molwm.jepa.mm_masking import add_pe


@dataclass
class LabProbeConfig:
    """Probes on the lab's ground truth during multimodal pretraining.

    Attributes:
        modality: Whose pooled embedding is probed (``image``, ``assay`` or ``graph``).
        targets: ``mechanism`` (per compound) and/or ``state`` (per well: dose and time applied).
        every: Steps between probe points (0: only at the end of the run).
        max_samples: Held-out samples probed (a seeded subset).
        seed: Subset and half-split seed.
    """

    modality: Literal["image", "assay", "graph"] = "image"
    targets: list[str] = field(default_factory=lambda: ["mechanism", "state"])
    every: int = 0
    max_samples: int = 3000
    seed: int = 0

    def validate(self) -> None:
        from molwm.config import ConfigError

        bad = [t for t in self.targets if t not in ("mechanism", "state")]
        if bad or not self.targets:
            raise ConfigError(f"probes.targets: unknown {bad} (known: mechanism, state)")


def r2_scores(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column coefficient of determination."""
    resid = ((y - pred) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - resid / np.maximum(total, 1e-12)


class LabProbeSuite:
    """The probe samples of a run, prepared once; call it with a model for ``probe.<target>.r2`` values.

    Args:
        config: What to probe.
        heldout: The lab samples of held-out scaffolds (``MultimodalBuild.heldout``).
        lab: The lab folder (for ``truth/``, ``well.csv`` and ``load_data.csv``).

    Raises:
        FileNotFoundError: If the lab has no ground truth (not a synthetic lab).
        ValueError: If no held-out sample has the probed modality.
    """

    def __init__(self, config: LabProbeConfig, heldout: MultimodalData | None, lab: str | Path):
        self.config = config
        root = Path(lab)
        truth = root / "truth"
        if not (truth / "mechanism.npy").is_file():
            raise FileNotFoundError(f"{truth}: no ground truth (mechanism.npy); lab probes need a synthetic lab "
                                    "made by `molwm sim generate`")
        if heldout is None or heldout.site is None:
            raise ValueError("lab probes need held-out lab samples (data.lab_split must hold some scaffolds out)")
        has = {"image": heldout.image_of >= 0, "graph": heldout.graph_of >= 0,
               "assay": ~np.isnan(heldout.assay_values).all(1)}[config.modality]
        rows = np.flatnonzero(has & (heldout.site >= 0))
        if len(rows) == 0:
            raise ValueError(f"no held-out lab sample has a {config.modality}: nothing to probe")
        rng = np.random.default_rng(config.seed)
        if len(rows) > config.max_samples:
            rows = np.sort(rng.choice(rows, config.max_samples, replace=False))
        self.data, self.rows = heldout, rows
        compounds = [heldout.compound[i] for i in rows]
        ys = {}
        if "mechanism" in config.targets:
            order = pd.read_csv(truth / "compound_truth.csv")["compound_id"].tolist()
            at = {c: i for i, c in enumerate(order)}
            ys["mechanism"] = np.load(truth / "mechanism.npy")[[at[c] for c in compounds]]
        if "state" in config.targets:
            keys = ["Metadata_Plate", "Metadata_Well"]
            sites = pd.read_csv(root / "load_data.csv", usecols=keys, dtype=str)
            wells = pd.read_csv(root / "well.csv", usecols=keys, dtype=str)
            well_at = {tuple(k): i for i, k in enumerate(wells[keys].itertuples(index=False))}
            site_rows = sites.iloc[heldout.site[rows]][keys].itertuples(index=False)
            ys["state"] = np.load(truth / "state.npy")[[well_at[tuple(k)] for k in site_rows]]
        self.targets = {k: v.astype(np.float64) for k, v in ys.items()}
        unique = sorted(set(compounds))
        first = set(np.asarray(unique)[rng.permutation(len(unique))[: len(unique) // 2]])
        self.fit = np.array([c in first for c in compounds])
        if self.fit.all() or not self.fit.any():
            raise ValueError(f"lab probes need held-out samples of at least 2 compounds, got {len(unique)}")

    @torch.no_grad()
    def features(self, model, batch_size: int = 128) -> np.ndarray:
        """Pooled embeddings ``[n, D]`` of the probed modality (the model is left in its training mode)."""
        was_training = model.training
        model.eval()
        drop = tuple(m for m in ("graph", "assay", "image") if m != self.config.modality)
        out = []
        for i in range(0, len(self.rows), batch_size):
            b = add_pe(self.data.batch(self.rows[i:i + batch_size], drop=drop), model.config)
            z, _ = model.modality_embedding(b, self.config.modality)
            out.append(z.numpy())
        model.train(was_training)
        return np.concatenate(out).astype(np.float64)

    def raw_features(self) -> np.ndarray:
        """Hand-made features of the same samples, the no-pretraining floor: per-channel pixel
        statistics (mean, std, 10/50/90th percentiles) for images; values plus observed flags for assays."""
        d = self.data
        if self.config.modality == "image":
            px = d.images[d.image_of[self.rows]].astype(np.float32)  # [n, C, H, W]
            flat = px.reshape(len(self.rows), px.shape[1], -1)
            stats = [flat.mean(-1), flat.std(-1)] + [np.percentile(flat, q, axis=-1) for q in (10, 50, 90)]
            return np.concatenate(stats, axis=1).astype(np.float64)
        if self.config.modality == "assay":
            v = d.assay_values[self.rows]
            return np.concatenate([np.nan_to_num(v), np.isfinite(v)], axis=1).astype(np.float64)
        raise ValueError("raw features exist for image and assay probes")

    def score(self, x: np.ndarray) -> dict[str, float]:
        """Ridge on the fitting half, mean R² per target on the other half."""
        from molwm.tasks.probes import RidgeProbe

        out = {}
        for name, y in self.targets.items():
            probe = RidgeProbe.fit(x[self.fit], y[self.fit])
            out[f"probe.{name}.r2"] = float(np.mean(r2_scores(probe.predict(x[~self.fit]), y[~self.fit])))
        return out

    def __call__(self, model) -> dict[str, float]:
        """Probe metrics of ``model`` (a multimodal objective module)."""
        return self.score(self.features(model))
