"""Honest baselines on the same splits: random forests on Morgan fingerprints and RDKit 2D descriptors."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from featurizers.fingerprints import morgan_fingerprints  # noqa: F401 (the forests' inputs, re-exported)
from molwm.evaluation.metrics import task_metrics


def rdkit_descriptors(smiles: Sequence[str]) -> np.ndarray:
    """``[N, ~210]`` float RDKit 2D descriptors (NaN where RDKit fails or for unparsable SMILES)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import Descriptors

    names = [n for n, _ in Descriptors.descList]
    out = np.full((len(smiles), len(names)), np.nan, dtype=np.float64)
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s)
            if mol is None:
                continue
            values = Descriptors.CalcMolDescriptors(mol, missingVal=np.nan)
            out[i] = [values[n] for n in names]
    out[~np.isfinite(out)] = np.nan
    return np.clip(out, -1e6, 1e6)


def random_forest(features: np.ndarray, y: np.ndarray, split, task: str, seed: int,
                  n_trees: int = 500, n_jobs: int = -1) -> dict[str, float]:
    """Fit one forest per task on ``train`` (observed labels only) and score ``test``.

    NaN features are filled with the train-set column median. Returns test
    metrics in the same form as the neural models'.
    """
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    train, _, test = split
    x = features.astype(np.float64)
    med = np.nanmedian(x[train], axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    x = np.where(np.isnan(x), med, x)
    pred = np.full((len(test), y.shape[1]), np.nan)
    for j in range(y.shape[1]):
        ok = train[~np.isnan(y[train, j])]
        if task == "classification":
            model = RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=n_jobs)
            model.fit(x[ok], y[ok, j].astype(int))
            pred[:, j] = model.predict_proba(x[test])[:, 1]
        else:
            model = RandomForestRegressor(n_estimators=n_trees, random_state=seed, n_jobs=n_jobs)
            model.fit(x[ok], y[ok, j])
            pred[:, j] = model.predict(x[test])
    return {f"test_{k}": v for k, v in task_metrics(task, y[test], pred).items()}
