"""Well profiles (CellProfiler feature vectors) as a multimodal store, with each well's dose and time.

One sample is one well: the compound's graph (none for DMSO wells) and the well's profile. The dose and
time travel with the profile as its conditioning (the action that produced it); the model side
(:mod:`molwm.jepa.modalities.profile`) puts them in the predictor's queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def dose_code(dose_uM: np.ndarray) -> np.ndarray:
    """``log10`` of the dose in uM; 0 for a well without compound (dose 0: DMSO), which its flag marks."""
    dose = np.asarray(dose_uM, np.float64)
    return np.where(dose > 0, np.log10(np.where(dose > 0, dose, 1.0)), 0.0).astype(np.float32)


@dataclass
class ProfileBatch:
    """Profiles of a batch of wells.

    Attributes:
        values: ``[B, F]`` float normalised features.
        dose: ``[B]`` float ``log10(dose / uM)`` (0 for controls).
        time: ``[B]`` float hours after treatment.
        control: ``[B]`` bool, a DMSO (no compound) well.
    """

    values: Tensor
    dose: Tensor
    time: Tensor
    control: Tensor

    def select(self, rows: Tensor) -> ProfileBatch:
        """Rows ``rows`` of the batch."""
        return ProfileBatch(self.values[rows], self.dose[rows], self.time[rows], self.control[rows])


@dataclass
class ProfileStore:
    """Profiles ``values [Np, F]`` (normalised), ``dose_log [Np]``, ``time_h [Np]``, ``control [Np]``,
    and ``of [N]`` (each sample's row in them, or -1)."""

    values: np.ndarray
    dose_log: np.ndarray
    time_h: np.ndarray
    control: np.ndarray
    of: np.ndarray

    @property
    def features(self) -> int:
        return int(self.values.shape[1])

    def present(self) -> np.ndarray:
        return self.of >= 0

    def subset(self, rows: np.ndarray) -> ProfileStore:
        return ProfileStore(self.values, self.dose_log, self.time_h, self.control, self.of[rows])

    def collate(self, rows: np.ndarray) -> tuple[ProfileBatch, np.ndarray] | None:
        p = self.of[rows]
        if not (p >= 0).any():
            return None
        sel = np.flatnonzero(p >= 0)
        at = p[sel]
        return ProfileBatch(torch.from_numpy(self.values[at].astype(np.float32)),
                            torch.from_numpy(self.dose_log[at].astype(np.float32)),
                            torch.from_numpy(self.time_h[at].astype(np.float32)),
                            torch.from_numpy(self.control[at].astype(bool))), sel
