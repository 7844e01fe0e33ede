"""From time courses to tensors: normalised observations, state windows, actions, splits.

:class:`WorldData` is what training, evaluation and forecasting read; the
normalisers it was built with (fitted on the training conditions only) travel
in the checkpoint, so new compounds are featurised the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from featurizers.fingerprints import morgan_fingerprints
from molwm.baselines import rdkit_descriptors
from molwm.query import MoleculeModel
from molwm.world.data import CourseError, TimeCourses
from molwm.world.model import Action, window_features

COMPOUND_KINDS = ("morgan+rdkit2d", "morgan", "rdkit2d", "none")


def compound_features(smiles: Sequence[str | None], kind: str = "morgan+rdkit2d") -> np.ndarray:
    """Raw compound features ``[n, C]`` (NaN rows for None or unparsable SMILES).

    ``morgan`` is 2048 Morgan bits (radius 2), ``rdkit2d`` the RDKit 2D descriptors,
    ``graph:<model>`` the embedding of a pretrained molwm model (checkpoint or URI),
    ``none`` a single zero column (identity and dose only).
    """
    present = [s is not None and s == s and str(s).strip() != "" for s in smiles]
    valid = [str(s) if ok else "" for s, ok in zip(smiles, present)]
    if kind == "none":
        return np.zeros((len(smiles), 1))
    if kind.startswith("graph:"):
        model = MoleculeModel.load(kind.split(":", 1)[1])
        emb, status = model.embed(valid, with_status=True)
        out = np.asarray(emb, np.float64)
        out[[s != "ok" for s in status]] = np.nan
    else:
        parts = []
        if kind not in COMPOUND_KINDS:
            raise CourseError(f"unknown compound features {kind!r}: expected one of {COMPOUND_KINDS} or graph:<model>")
        if "morgan" in kind:
            fp = morgan_fingerprints(valid).astype(np.float64)
            fp[fp.sum(1) == 0] = np.nan  # unparsable
            parts.append(fp)
        if "rdkit2d" in kind:
            parts.append(rdkit_descriptors(valid))
        out = np.concatenate(parts, axis=1)
    out[~np.asarray(present)] = np.nan
    return out


@dataclass
class Normaliser:
    """Per-column ``(x - mean) / std``, clipped to ``±clip``; NaN becomes 0 (the mean)."""

    mean: np.ndarray
    std: np.ndarray
    clip: float = 6.0

    @classmethod
    def fit(cls, x: np.ndarray, clip: float = 6.0) -> "Normaliser":
        x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        mean = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0) if np.isfinite(x).any() else np.zeros(x.shape[1])
        std = np.nanstd(np.where(np.isfinite(x), x, np.nan), axis=0) if np.isfinite(x).any() else np.ones(x.shape[1])
        mean, std = np.nan_to_num(mean), np.nan_to_num(std, nan=1.0)
        return cls(mean, np.where(std > 1e-8, std, 1.0), clip)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = np.clip((np.asarray(x, np.float64) - self.mean) / self.std, -self.clip, self.clip)
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, np.float64) * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict) -> "Normaliser":
        return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64), float(d["clip"]))


@dataclass
class WorldData:
    """Tensors for one set of conditions.

    Attributes:
        windows: ``[N, T, W]`` state-encoder inputs per slot.
        obs: ``[N, T, F]`` normalised observations (0 where absent).
        times: ``[N, T]`` hours (0 where absent).
        mask: ``[N, T]`` observed.
        action: Per-condition action (``[N]`` rows).
        truth: ``[N, T, S]`` hidden state where known, else None.
        courses: The source courses.
    """

    windows: torch.Tensor
    obs: torch.Tensor
    times: torch.Tensor
    mask: torch.Tensor
    action: Action
    truth: np.ndarray | None
    courses: TimeCourses
    n_obs: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.n_obs = self.mask.sum(1)

    @property
    def n(self) -> int:
        return len(self.mask)


def log_dose(dose_um: np.ndarray) -> np.ndarray:
    """log10 dose in uM, 0 for controls (dose 0)."""
    dose = np.asarray(dose_um, np.float64)
    return np.where(dose > 0, np.log10(np.clip(dose, 1e-12, None)), 0.0)


def build_action(compound: np.ndarray, drug: np.ndarray, dose_um: np.ndarray, context: np.ndarray,
                 n_drugs: int, n_contexts: int, known_drugs: np.ndarray | None = None) -> Action:
    """Action tensors. Drugs not in ``known_drugs`` (boolean per drug) and controls get the unknown identity.

    Shapes:
        compound: ``[N, C]`` normalised; drug, dose_um, context: ``[N]``.
    """
    drug = np.asarray(drug, np.int64)
    known = np.ones(n_drugs, bool) if known_drugs is None else np.asarray(known_drugs, bool)
    ident = np.full(len(drug), n_drugs, np.int64)
    ok = drug >= 0
    ok[ok] = known[drug[ok]]
    ident[ok] = drug[ok]
    ctx = np.where((context >= 0) & (context < n_contexts), context, n_contexts)
    return Action(torch.as_tensor(compound, dtype=torch.float32), torch.as_tensor(ident),
                  torch.as_tensor(log_dose(dose_um), dtype=torch.float32),
                  torch.as_tensor((np.asarray(drug) < 0).astype(np.float32)), torch.as_tensor(ctx, dtype=torch.int64))


def make_world_data(courses: TimeCourses, obs_norm: Normaliser, drug_features: np.ndarray, history: int,
                    known_drugs: np.ndarray | None = None) -> WorldData:
    """Tensors for ``courses``.

    Args:
        courses: The conditions.
        obs_norm: Observation normaliser (fitted on training conditions).
        drug_features: ``[n_drugs, C]`` normalised compound features per drug.
        history: Observations per state window.
        known_drugs: Drugs whose identity the model may use (the training drugs).
    """
    mask = courses.mask
    obs = obs_norm(np.where(mask[..., None], courses.obs, np.nan))
    windows = window_features(obs, np.nan_to_num(courses.times), mask, history)
    comp = np.zeros((courses.n, drug_features.shape[1]), np.float32)
    treated = courses.drug >= 0
    comp[treated] = drug_features[courses.drug[treated]]
    action = build_action(comp, courses.drug, courses.dose, courses.context, len(courses.drugs),
                          len(courses.contexts), known_drugs)
    return WorldData(torch.from_numpy(windows), torch.from_numpy(obs),
                     torch.as_tensor(np.nan_to_num(courses.times), dtype=torch.float32), torch.from_numpy(mask),
                     action, courses.truth, courses)


def drug_split(courses: TimeCourses, how: str, seed: int = 0, test_fraction: float = 0.2,
               n_folds: int = 5, fold: int = 0, holdout: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Held-out drugs: returns ``(train_drugs, test_drugs)`` as boolean masks over ``courses.drugs``.

    ``how``: ``scaffold`` (Bemis-Murcko groups of the drugs' SMILES, ``test_fraction`` held out;
    drugs without structure are shuffled in as their own groups), ``folds`` (drugs in ``n_folds``
    seeded folds, ``fold`` held out), ``names`` (exactly ``holdout``), ``none``.
    """
    n = len(courses.drugs)
    test = np.zeros(n, bool)
    if how == "none":
        pass
    elif how == "names":
        unknown = sorted(set(holdout) - set(courses.drugs))
        if unknown:
            raise CourseError(f"held-out drugs not in the data: {unknown}")
        test[[courses.drugs.index(d) for d in holdout]] = True
    elif how == "folds":
        if not 0 <= fold < n_folds:
            raise CourseError(f"fold {fold} out of range for {n_folds} folds")
        # the same partition as molwm.world.baselines.leave_drugs_out_folds
        test[np.array_split(np.random.default_rng(seed).permutation(n), n_folds)[fold]] = True
    elif how == "scaffold":
        from molwm.data.splits import scaffold_split

        has = [i for i, s in enumerate(courses.smiles) if s]
        _, _, te = scaffold_split([courses.smiles[i] for i in has], (1 - test_fraction, 0.0, test_fraction), seed)
        test[np.asarray(has, np.int64)[np.asarray(te, np.int64)]] = True
        rest = [i for i, s in enumerate(courses.smiles) if not s]
        rng = np.random.default_rng(seed)
        test[[i for i in rest if rng.random() < test_fraction]] = True
    else:
        raise CourseError(f"unknown drug split {how!r}: expected scaffold, folds, names or none")
    return ~test, test
