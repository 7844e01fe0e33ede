"""Parity plots and ROC curves, written as PNG for MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def parity_plot(y: np.ndarray, pred: np.ndarray, path: str | Path, title: str, names: list[str]) -> Path:
    """Predicted vs measured, one panel per task, with the identity line and RMSE."""
    plt = _plt()
    t = y.shape[1]
    fig, axes = plt.subplots(1, t, figsize=(4 * t, 4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        ok = ~np.isnan(y[:, j])
        ax.scatter(y[ok, j], pred[ok, j], s=8, alpha=0.6)
        lo, hi = np.nanmin([y[ok, j].min(), pred[ok, j].min()]), np.nanmax([y[ok, j].max(), pred[ok, j].max()])
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        rmse = float(np.sqrt(np.mean((pred[ok, j] - y[ok, j]) ** 2)))
        ax.set_title(f"{names[j]}  RMSE {rmse:.3f}  n={ok.sum()}", fontsize=9)
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def roc_plot(y: np.ndarray, prob: np.ndarray, path: str | Path, title: str, names: list[str]) -> Path:
    """ROC curve per task with its AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for j in range(y.shape[1]):
        ok = ~np.isnan(y[:, j])
        if len(np.unique(y[ok, j])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[ok, j], prob[ok, j])
        ax.plot(fpr, tpr, lw=1.2, label=f"{names[j]} AUC {roc_auc_score(y[ok, j], prob[ok, j]):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
