"""Parity plots and ROC curves, written as PNG for MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molwm.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write ``fig`` as a 110-dpi PNG at ``path`` and close it."""
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    pyplot().close(fig)
    return path


def parity_plot(y: np.ndarray, pred: np.ndarray, path: str | Path, title: str, names: list[str]) -> Path:
    """Predicted vs measured, one panel per task, with the identity line and RMSE."""
    plt = pyplot()
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
    return save_figure(fig, path)


def roc_plot(y: np.ndarray, prob: np.ndarray, path: str | Path, title: str, names: list[str]) -> Path:
    """ROC curve per task with its AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
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
    return save_figure(fig, path)


def project_2d(background: np.ndarray | None, points: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, str]:
    """2-D map fitted on ``background`` (or ``points`` without one): UMAP if installed, else PCA.

    Returns:
        ``(background_xy or None, points_xy, method name)``.
    """
    fit = background if background is not None and len(background) >= 3 else points
    try:
        import umap  # optional

        reducer = umap.UMAP(n_components=2, random_state=0).fit(fit)
        bg = reducer.transform(background) if background is not None else None
        return bg, reducer.transform(points), "UMAP"
    except ImportError:
        pass
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    comps = vt[:2].T  # [E, 2]
    bg = (background - mean) @ comps if background is not None else None
    return bg, (points - mean) @ comps, "PCA"


def embedding_map(background: np.ndarray | None, points: np.ndarray, path: str | Path, title: str,
                  background_label: str = "reference") -> Path:
    """Candidates (coloured) over a reference set (grey) in a 2-D projection of the embedding space."""
    plt = pyplot()
    bg, xy, method = project_2d(background, points)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if bg is not None:
        ax.scatter(bg[:, 0], bg[:, 1], s=4, c="0.75", alpha=0.5, label=f"{background_label} ({len(bg):,})",
                   rasterized=True)
    ax.scatter(xy[:, 0], xy[:, 1], s=8, c="tab:red", alpha=0.7, label=f"candidates ({len(xy):,})", rasterized=True)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8, markerscale=2)
    return save_figure(fig, path)


def property_histogram(pred: np.ndarray, train: np.ndarray | None, path: str | Path, name: str,
                       title: str) -> Path:
    """Histogram of predicted values, the training labels' distribution behind it (both as densities)."""
    plt = pyplot()
    pred = pred[np.isfinite(pred)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    parts = [pred] + ([train[np.isfinite(train)]] if train is not None else [])
    joined = np.concatenate(parts) if any(len(p) for p in parts) else np.zeros(1)
    bins = np.histogram_bin_edges(joined, bins=40)
    if train is not None:
        ax.hist(train[np.isfinite(train)], bins=bins, density=True, color="0.7", alpha=0.8,
                label=f"training labels ({np.isfinite(train).sum():,})")
    ax.hist(pred, bins=bins, density=True, color="tab:blue", alpha=0.6, label=f"predicted ({len(pred):,})")
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def calibration_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str,
                     xlabel: str = "expected coverage", ylabel: str = "observed coverage") -> Path:
    """Observed against expected (coverage of central intervals, or frequency in probability bins),
    one line per method, with the diagonal."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for label, (x, y) in curves.items():
        ax.plot(x, y, "-", lw=1.5, marker="o" if len(x) < 20 else None, ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def error_std_plot(abs_error: np.ndarray, std: np.ndarray, path: str | Path, title: str, rho: float) -> Path:
    """|error| against the predicted (calibrated) std, with the 1.645-std line of a calibrated Gaussian."""
    plt = pyplot()
    ok = np.isfinite(abs_error) & np.isfinite(std)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(std[ok], abs_error[ok], s=8, alpha=0.6)
    if ok.any():
        top = float(np.nanmax(std[ok]))
        ax.plot([0, top], [0, 1.645 * top], "k--", lw=1, label="90% of a calibrated Gaussian below")
        ax.legend(fontsize=8)
    ax.set_xlabel("predicted std")
    ax.set_ylabel("|error|")
    ax.set_title(f"{title}\nSpearman {rho:.3f}", fontsize=9)
    return save_figure(fig, path)


def coverage_plot(levels: list[float], observed: dict[str, list[float]], path: str | Path, title: str) -> Path:
    """Observed coverage of the intervals at each nominal level, bars per method, nominal marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    width = 0.8 / max(len(observed), 1)
    x = np.arange(len(levels))
    for k, (label, values) in enumerate(observed.items()):
        ax.bar(x + (k - (len(observed) - 1) / 2) * width, values, width, label=label)
    ax.scatter(x, levels, marker="_", s=600, c="k", zorder=3, label="nominal")
    ax.set_xticks(x, [f"{lv:.0%}" for lv in levels])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage (test)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def domain_plot(edges: np.ndarray, mae: np.ndarray, counts: np.ndarray, threshold: float, path: str | Path,
                title: str, xlabel: str = "embedding distance to the nearest training molecule") -> Path:
    """Test error per distance bin, the fitted domain threshold as a vertical line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    centres = (edges[1:] + edges[:-1]) / 2 if len(edges) > 1 else edges
    ax.plot(centres, mae, "o-")
    for c, m, n in zip(centres, mae, counts):
        ax.annotate(f"n={n}", (c, m), fontsize=7, textcoords="offset points", xytext=(0, 5), ha="center")
    if np.isfinite(threshold):
        ax.axvline(threshold, color="tab:red", ls="--", lw=1, label=f"domain threshold {threshold:.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean |error| (test)")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
