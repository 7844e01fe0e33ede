"""What a fine-tune does about uncertainty once its members are trained: fit the calibrator and the
applicability domain on validation rows, report both on test rows, draw the plots.

Which rows (the ensemble caveat): the calibrator must be fitted, and checked, on rows no member
trained on. When the members share their validation and test rows (``split.shared: true``, the
default: one split, seeds vary the initialisation and batch order; or one seed; or a split file
with one entry) it is fitted on the ensemble's predictions of the shared validation rows and
reported on the shared test rows. When every seed has its own split, each member has trained on
rows that are other members' validation and test rows; the calibrator is then fitted on the first
member's predictions of its own validation rows (one member: a constant width, no spread) and
reported on that member's own test rows, and queries apply it around the ensemble mean (a width
fitted for one member's error: conservative for the mean of several). The applicability domain is
fitted the same way (all members' training molecules when shared, the first member's otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from molwm.uncertainty.calibration import CalibrationConfig, Calibrator, fit_calibrator, resolve_method
from molwm.uncertainty.domain import Domain, binned_error
from molwm.evaluation.metrics import (NOMINAL, brier_score, expected_calibration_error, gaussian_nll,
                                 interval_coverage, miscalibration_area, spearman_error_std)

LEVELS = np.round(np.linspace(0.01, 0.99, 99), 2)
"""Expected coverages of the miscalibration curve (0 and 1 are added, where every method is exact)."""


def regression_report(cal: Calibrator, preds: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], tuple]:
    """Coverage at :data:`NOMINAL`, miscalibration area, Spearman(|error|, std) and Gaussian NLL.

    Args:
        cal: The calibrator (``none`` for the raw ensemble std).
        preds: ``[M, N, T]`` member predictions on the rows scored.
        y: ``[N, T]`` labels.

    Returns:
        ``(metrics averaged over targets, (expected, observed) curve of the first target)``.
    """
    mean, raw = preds.mean(0), preds.std(0)
    std = cal.apply(preds)["std"]
    per: dict[str, list[float]] = {}
    curve = None
    for j in range(y.shape[1]):
        t = y[:, j]

        def cover(level: float, j: int = j, t: np.ndarray = t) -> float:
            lo, hi = cal.interval(j, mean[:, j], raw[:, j], level)
            return interval_coverage(t, lo, hi)

        for level in NOMINAL:
            per.setdefault(f"coverage_{round(level * 100)}", []).append(cover(level))
        expected = np.concatenate([[0.0], LEVELS, [1.0]])
        observed = np.concatenate([[0.0], [cover(lv) for lv in LEVELS], [1.0]])
        curve = curve or (expected, observed)
        per.setdefault("miscalibration_area", []).append(miscalibration_area(expected, observed))
        per.setdefault("spearman", []).append(spearman_error_std(t, mean[:, j], std[:, j]))
        per.setdefault("nll", []).append(gaussian_nll(t, mean[:, j], std[:, j]))
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in per.items()}, curve


def classification_report(cal: Calibrator, preds: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], tuple]:
    """ECE (10 bins) and Brier score of the (calibrated) probabilities, and a reliability curve.

    Returns:
        ``(metrics averaged over targets, (mean predicted, observed frequency) per bin, first target)``.
    """
    prob = cal.apply(preds)["value"]
    ece = [expected_calibration_error(y[:, j], prob[:, j]) for j in range(y.shape[1])]
    brier = [brier_score(y[:, j], prob[:, j]) for j in range(y.shape[1])]
    ok = np.isfinite(y[:, 0]) & np.isfinite(prob[:, 0])
    which = np.minimum((prob[ok, 0] * 10).astype(int), 9)
    xs = [prob[ok, 0][which == b].mean() for b in range(10) if (which == b).any()]
    ys = [y[ok, 0][which == b].mean() for b in range(10) if (which == b).any()]
    return {"ece": float(np.nanmean(ece)), "brier": float(np.nanmean(brier))}, (np.array(xs), np.array(ys))


def uncertainty_report(cal: Calibrator, preds: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], tuple]:
    """:func:`regression_report` or :func:`classification_report`, by the calibrator's task."""
    fn = classification_report if cal.task == "classification" else regression_report
    return fn(cal, preds, y)


@dataclass
class RowsSeen:
    """What the fit reads for one set of rows (validation or test).

    Attributes:
        preds: ``[M, N, T]`` member predictions (``M = 1`` when the members do not share the rows).
        y: ``[N, T]`` labels.
        emb: ``[N, E]`` the first member's embeddings.
        smiles: ``[N]`` the molecules.
    """

    preds: np.ndarray
    y: np.ndarray
    emb: np.ndarray
    smiles: Sequence[str]

    def abs_error(self, task: str) -> np.ndarray:
        """``[N]`` |error| of the ensemble mean, averaged over observed targets."""
        err = np.abs(self.preds.mean(0) - self.y)
        with np.errstate(invalid="ignore"):
            return np.nanmean(np.where(np.isfinite(err), err, np.nan), axis=1)


@dataclass
class UncertaintyFit:
    """A fitted calibrator and domain (``state`` for the checkpoint), test figures and plots."""

    state: dict
    metrics: dict[str, float]
    plots: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def fit_uncertainty(config: CalibrationConfig, task: str, shared: bool, n_members: int, val: RowsSeen,
                    test: RowsSeen, train_smiles: Sequence[str], train_emb: np.ndarray, plot_dir: Path,
                    title: str) -> UncertaintyFit:
    """Fit on ``val``, report on ``test`` (see the module docstring for which rows these are)."""
    method = resolve_method(config, task, shared, n_members)
    cal = fit_calibrator(method, task, val.preds, val.y, config.coverage)
    domain = Domain.build(train_smiles, train_emb, config.domain_factor).fit(val.emb, val.abs_error(task))
    metrics: dict[str, float] = {}
    lines = [f"uncertainty: {cal.description}"]
    plots: list[Path] = []
    if not shared:
        lines[0] += " (fitted on the first member's own validation rows: the seeds have their own splits)"
    if method != "none":
        raw = Calibrator.from_dict(None, task, val.y.shape[1])
        got, curve = uncertainty_report(cal, test.preds, test.y)
        base, base_curve = uncertainty_report(raw, test.preds, test.y)
        metrics.update({f"test_{k}": v for k, v in got.items()})
        metrics.update({f"test_{k}.raw": v for k, v in base.items()})
        lines.append("test " + ", ".join(f"{k} {_shown(v)} (raw {_shown(base[k])})" for k, v in got.items()))
        plots += _plots(cal, raw, test, curve, base_curve, got, plot_dir, title)
    else:
        got, _ = uncertainty_report(cal, test.preds, test.y)
        metrics.update({f"test_{k}": v for k, v in got.items()})
        lines.append("test " + ", ".join(f"{k} {v:.3f}" for k, v in got.items()) + " (uncalibrated: method none)")
    dist = domain.embedding_distance(test.emb)
    err = test.abs_error(task)
    inside = dist <= domain.threshold
    mae_in = float(np.nanmean(err[inside])) if inside.any() else float("nan")
    mae_out = float(np.nanmean(err[~inside & np.isfinite(dist)])) if (~inside & np.isfinite(dist)).any() \
        else float("nan")
    metrics.update({"val_domain_threshold": domain.threshold, "test_in_domain_fraction": float(np.mean(inside)),
                    "test_domain_mae_in": mae_in, "test_domain_mae_out": mae_out,
                    "test_domain_error_ratio": mae_out / mae_in if mae_in > 0 else float("nan")})
    lines.append(f"domain: embedding distance <= {domain.threshold:.4f} (validation error x{config.domain_factor} "
                 f"beyond: {'reached' if domain.info['crossed'] else 'not reached, largest validation distance'}); "
                 f"test in domain {np.mean(inside):.0%}, |error| in {mae_in:.3f} / out {mae_out:.3f}")
    bins = binned_error(dist, err)
    from molwm.evaluation.plots import domain_plot

    plots.append(domain_plot(bins["edges"], bins["mae"], bins["n"], domain.threshold, plot_dir / "domain_error.png",
                             f"{title}: test error by distance"))
    return UncertaintyFit({"calibration": cal.to_dict(), "domain": domain.to_state()}, metrics, plots, lines)


def _shown(value: float) -> str:
    """A figure for the printed summary: ``n/a`` where it is undefined (Spearman of one width for every row)."""
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"


def shares_rows(splits: Sequence[tuple]) -> bool:
    """True when every member has the first one's validation and test rows (so none trained on them)."""
    return all(np.array_equal(np.sort(s[1]), np.sort(splits[0][1])) and np.array_equal(np.sort(s[2]),
               np.sort(splits[0][2])) for s in splits)


def fit_from_members(config: CalibrationConfig, task: str, splits: Sequence[tuple], y: np.ndarray,
                     smiles: Sequence[str], predict: Callable[[int, np.ndarray], np.ndarray],
                     embed: Callable[[np.ndarray], torch.Tensor], plot_dir: Path, title: str) -> UncertaintyFit:
    """:func:`fit_uncertainty` for a trained ensemble, one ``(train, val, test)`` split per member.

    Args:
        splits: Per member, arrays of row positions.
        y: ``[N, T]`` labels of every row; ``smiles``: ``[N]``.
        predict: ``(member, rows) -> [len(rows), T]`` predictions in data units (probabilities).
        embed: ``rows -> [len(rows), E]`` the first member's embeddings (a batch of at most 256 rows).
    """
    shared = shares_rows(splits)
    members = range(len(splits)) if shared else [0]
    train = np.unique(np.concatenate([s[0] for s in splits])) if shared else np.asarray(splits[0][0])
    smiles = np.asarray(smiles, dtype=object)

    def embed_rows(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [embed(rows[i : i + 256]).numpy() for i in range(0, len(rows), 256)]
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)

    def seen(rows) -> RowsSeen:
        rows = np.asarray(rows)
        return RowsSeen(np.stack([predict(k, rows) for k in members]), y[rows], embed_rows(rows), list(smiles[rows]))

    return fit_uncertainty(config, task, shared, len(splits), seen(splits[0][1]), seen(splits[0][2]),
                           list(smiles[train]), embed_rows(train), plot_dir, title)


def _plots(cal: Calibrator, raw: Calibrator, test: RowsSeen, curve, base_curve, got: dict, plot_dir: Path,
           title: str) -> list[Path]:
    from molwm.evaluation.plots import calibration_plot, coverage_plot, error_std_plot

    label = f"{cal.method}"
    if cal.task == "classification":
        return [calibration_plot({"raw ensemble": base_curve, label: curve}, plot_dir / "calibration_curve.png",
                                 f"{title}: reliability (test)", "mean predicted probability", "observed frequency")]
    std = cal.apply(test.preds)["std"][:, 0]
    err = np.abs(test.preds.mean(0)[:, 0] - test.y[:, 0])
    observed = {"raw ensemble std": [], label: []}
    mean, spread = test.preds.mean(0)[:, 0], test.preds.std(0)[:, 0]
    for level in NOMINAL:
        for name, c in (("raw ensemble std", raw), (label, cal)):
            lo, hi = c.interval(0, mean, spread, level)
            observed[name].append(interval_coverage(test.y[:, 0], lo, hi))
    return [calibration_plot({"raw ensemble std": base_curve, label: curve}, plot_dir / "calibration_curve.png",
                             f"{title}: interval coverage (test)"),
            error_std_plot(err, std, plot_dir / "error_vs_std.png", f"{title} ({label})", got["spearman"]),
            coverage_plot(list(NOMINAL), observed, plot_dir / "coverage_vs_nominal.png", f"{title} (test)")]
