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


# ------------------------------------------------------------------ uncertainty

NOMINAL = (0.5, 0.8, 0.9, 0.95)
"""Coverage levels every fine-tune reports."""


def interval_coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of observed labels inside ``[lo, hi]`` (all arrays ``[N]``; NaN labels skipped)."""
    ok = np.isfinite(y)
    return float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))) if ok.any() else float("nan")


def miscalibration_area(expected: np.ndarray, observed: np.ndarray) -> float:
    """Area between the observed-coverage curve and the diagonal (trapezoid rule over ``expected``).

    With ``expected`` spanning 0..1 this is Chemprop's and Uncertainty Toolbox's miscalibration area:
    0 for perfect calibration, 0.5 at most.
    """
    gap = np.abs(np.asarray(observed, np.float64) - np.asarray(expected, np.float64))
    x = np.asarray(expected, np.float64)
    return float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(x)))


def spearman_error_std(y: np.ndarray, pred: np.ndarray, std: np.ndarray) -> float:
    """Spearman correlation between |error| and the predicted std (NaN when either is constant)."""
    from scipy.stats import spearmanr

    ok = np.isfinite(y) & np.isfinite(pred) & np.isfinite(std)
    err, s = np.abs(y[ok] - pred[ok]), std[ok]
    if ok.sum() < 3 or np.ptp(err) == 0 or np.ptp(s) == 0:
        return float("nan")
    return float(spearmanr(err, s).statistic)


def gaussian_nll(y: np.ndarray, pred: np.ndarray, std: np.ndarray, floor: float = 1e-6) -> float:
    """Mean Gaussian negative log-likelihood of ``y`` under ``N(pred, std**2)`` (std floored at ``floor``)."""
    ok = np.isfinite(y) & np.isfinite(pred) & np.isfinite(std)
    var = np.maximum(std[ok], floor) ** 2
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + (y[ok] - pred[ok]) ** 2 / (2 * var)))


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """ECE over ``bins`` equal-width probability bins: sum over bins of ``n_b / n * |mean(y_b) - mean(p_b)|``."""
    ok = np.isfinite(y) & np.isfinite(prob)
    y, prob = y[ok], prob[ok]
    if not len(y):
        return float("nan")
    which = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() / len(y) * abs(float(y[sel].mean()) - float(prob[sel].mean()))
    return float(total)


def brier_score(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean squared difference between the label (0/1) and the predicted probability."""
    ok = np.isfinite(y) & np.isfinite(prob)
    return float(np.mean((prob[ok] - y[ok]) ** 2)) if ok.any() else float("nan")
