"""What a molecule model's predictions come from: one small protocol, so :class:`molwm.query.MoleculeModel`
holds no branch per kind of predictor.

A :class:`Predictor` turns a graph batch into predictions (``[M, B, T]``: M members, one for a
single read-out) and, when asked, the embedding its heads read; then it turns the gathered
predictions into the answer's columns (value, spread, interval, the ``uncertainty`` note, and
anything it adds such as the applicability domain). Three implementations: the fine-tuned deep
ensemble (:class:`EnsemblePredictor`), the stacked ensemble
(:class:`molwm.predictors.stack.StackPredictor`) and the multimodal JEPA's assay read-out
(:class:`molwm.kinds.multimodal.JointGraphModel`). World models answer forecasts through their
own ``answer`` (:class:`molwm.world.forecast.WorldForecaster`), the serving protocol both families
share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
import torch

from molwm.predictors.heads import PropertyModel
from molwm.uncertainty.calibration import Calibrator
from molwm.uncertainty.domain import Domain


@runtime_checkable
class Predictor(Protocol):
    """Graph batches in, predictions and their columns out."""

    targets: list[str]

    @property
    def can_predict(self) -> bool:
        """False when there is nothing to predict (e.g. a JEPA pretrained without assay data)."""

    @property
    def n_outputs(self) -> int:
        """Rows of the first axis of :meth:`predict`'s predictions."""

    @property
    def dim(self) -> int:
        """Width of the embedding :meth:`embed` and :meth:`predict` return."""

    @property
    def wants_embedding(self) -> bool:
        """True when :meth:`frame` needs the embeddings (an applicability domain does)."""

    def embed(self, batch) -> torch.Tensor:
        """The embedding this predictor reads: ``[B, dim]``."""

    def predict(self, batch, smiles: Sequence[str], embed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """``(predictions [M, B, T], embeddings [B, dim] or None)`` for one batch (``smiles`` its inputs)."""

    def frame(self, smiles: list, preds: np.ndarray, status: list[str], emb: np.ndarray | None) -> pd.DataFrame:
        """The answer's columns for every input (``preds`` ``[M, N, T]``, NaN rows for rejected inputs)."""


@dataclass
class EnsemblePredictor:
    """A fine-tuned deep ensemble: one network (or tabular) member per seed, calibrated spread, domain.

    Attributes:
        members: The members.
        scalers: Per member ``(mean, std)`` undoing target scaling (regression).
        task: ``regression`` or ``classification``.
        targets: Property names.
        calibrator: How the ensemble's spread becomes ``_std`` and ``_lo`` / ``_hi`` (None: uncalibrated).
        domain: The applicability domain, if the checkpoint has one.
    """

    members: list[PropertyModel]
    scalers: list[tuple[np.ndarray, np.ndarray]]
    task: str | None
    targets: list[str] = field(default_factory=list)
    calibrator: Calibrator | None = None
    domain: Domain | None = None

    @property
    def can_predict(self) -> bool:
        return bool(self.members)

    @property
    def n_outputs(self) -> int:
        return max(1, len(self.members))

    @property
    def dim(self) -> int:
        member = self.members[0]
        return member.encoder.dim * (2 if member.pooling == "mean_sum" else 1)

    @property
    def wants_embedding(self) -> bool:
        return self.domain is not None

    def embed(self, batch) -> torch.Tensor:
        return self.members[0].embed(batch)

    def predict(self, batch, smiles: Sequence[str], embed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        out, emb = [], None
        for k, (m, (mean, std)) in enumerate(zip(self.members, self.scalers)):
            z = m.embed(batch)  # the pooled features this member's head reads
            if embed and k == 0:
                emb = z.numpy()
            raw = m.head_from(z, list(smiles)).double().numpy()  # extras from SMILES
            out.append(1 / (1 + np.exp(-raw)) if self.task == "classification" else raw * std + mean)
        return np.stack(out), emb

    def frame(self, smiles: list, preds: np.ndarray, status: list[str], emb: np.ndarray | None) -> pd.DataFrame:
        cal = self.calibrator or Calibrator.from_dict(None, self.task, len(self.targets))
        out = cal.apply(preds)
        columns: dict[str, object] = {"smiles": smiles}  # gathered, then one frame (no fragmented inserts)
        for j, name in enumerate(self.targets):
            columns[name], columns[f"{name}_std"] = out["value"][:, j], out["std"][:, j]
            columns[f"{name}_lo"], columns[f"{name}_hi"] = out["lo"][:, j], out["hi"][:, j]
        columns["uncertainty"] = f"{cal.description}; deep ensemble of {len(self.members)} seeds"
        frame = pd.DataFrame(columns)
        if self.domain is not None:
            frame = pd.concat([frame, self.domain.frame(smiles, emb, status)], axis=1)
        return frame
