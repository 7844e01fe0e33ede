"""Metrics and losses that ignore missing labels (NaN)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def masked_loss(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Mean loss over observed labels only; NaN labels contribute nothing.

    Args:
        out: ``[B, T]`` predictions (scaled values, or logits for classification).
        y: ``[B, T]`` labels (scaled for regression), NaN where missing.
        task: ``regression`` or ``classification``.
    """
    observed = ~torch.isnan(y)
    if not observed.any():
        return out.sum() * 0.0
    target = torch.where(observed, y, torch.zeros_like(y))
    if task == "classification":
        per = F.binary_cross_entropy_with_logits(out, target, reduction="none")
    else:
        per = F.mse_loss(out, target, reduction="none")
    return (per * observed).sum() / observed.sum()


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² averaged over tasks, each on its observed rows."""
    rmse, mae, r2 = [], [], []
    for j in range(y.shape[1]):
        ok = ~np.isnan(y[:, j])
        if ok.sum() < 2:
            continue
        err = pred[ok, j] - y[ok, j]
        rmse.append(float(np.sqrt(np.mean(err**2))))
        mae.append(float(np.mean(np.abs(err))))
        ss = float(np.sum((y[ok, j] - y[ok, j].mean()) ** 2))
        r2.append(1.0 - float(np.sum(err**2)) / ss if ss > 0 else float("nan"))
    return {"rmse": float(np.mean(rmse)), "mae": float(np.mean(mae)), "r2": float(np.nanmean(r2))}


def classification_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """ROC-AUC and PR-AUC averaged over tasks that have both classes observed."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    roc, pr = [], []
    for j in range(y.shape[1]):
        ok = ~np.isnan(y[:, j])
        labels = y[ok, j]
        if len(np.unique(labels)) < 2:
            continue
        roc.append(float(roc_auc_score(labels, prob[ok, j])))
        pr.append(float(average_precision_score(labels, prob[ok, j])))
    return {"roc_auc": float(np.mean(roc)) if roc else float("nan"),
            "pr_auc": float(np.mean(pr)) if pr else float("nan")}


def task_metrics(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Regression or classification metrics (``pred`` are probabilities for classification)."""
    return classification_metrics(y, pred) if task == "classification" else regression_metrics(y, pred)


def primary_metric(task: str) -> tuple[str, bool]:
    """The metric that selects models, and whether higher is better."""
    return ("roc_auc", True) if task == "classification" else ("rmse", False)
