"""Chemprop v2's own uncertainty calibrators on the rows of ``uncertainty.py``'s shared splits.

Per split seed: the dataset config's split (the scaffold split of that seed, 80/10/10, the rows every
molwm calibrator is fitted and scored on) written as three CSVs; ``chemprop train`` with those files
as train/val/test and ``--ensemble-size`` members; then ``chemprop predict`` on the test rows with
``--uncertainty-method ensemble`` (the members' variance) and ``--cal-path`` the validation rows:

* ``none``: the raw ensemble variance, Gaussian intervals at every level;
* ``zscaling``: Chemprop's calibrated variance, Gaussian intervals at every level;
* ``zelikman-interval`` at each of ``levels`` (``--calibration-interval-percentile``): the calibrated
  "variance" is the squared half-width of the interval at that level;
* ``conformal-regression`` at each of ``levels`` (``--conformal-alpha 1 - level``): the output is the
  half-width of the interval at that level (Chemprop's score with the ensemble variance as the
  uncalibrated half-width).

Scored with molwm's metric functions (coverage, miscalibration area over 1-99%, Spearman, NLL), so the
rows compare with molwm's calibrators on the same test molecules. The command comes from
``--chemprop``, then ``$CHEMPROP``, then ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

ROOT = Path(__file__).resolve().parent.parent
CHEMPROP_METHODS = ("none", "zscaling", "zelikman-interval", "conformal-regression")


def find_chemprop(option: str | None = None) -> tuple[str | None, str]:
    """``(path of the chemprop command, "")``, or ``(None, why not)``."""
    given = option or os.environ.get("CHEMPROP")
    found = shutil.which(given) if given else shutil.which("chemprop")
    if found:
        return found, ""
    if given:
        return None, f"the chemprop command {given!r} (from --chemprop or $CHEMPROP) is not an executable file"
    return None, "no chemprop command: pass --chemprop PATH, set $CHEMPROP, or put chemprop on PATH"


def split_rows(dataset: str, split_seed: int) -> dict[str, tuple[list[str], np.ndarray]]:
    """``part -> (smiles, labels [N])`` of the dataset config's split for ``split_seed`` (as a shared-split
    fine-tune makes it: ``make_split`` over the featurized molecules, in cache order)."""
    from molwm.config import load_config
    from molwm.data.batch import CachedGraphs
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.data.splits import make_split
    from molwm.train.finetune import FinetuneConfig

    cfg = load_config(FinetuneConfig, ROOT / "configs" / "finetune" / f"{dataset}.yaml", ["mode=scratch"])
    prep = prepare_dataset(PrepareConfig(dataset=dataset, progress=False))
    y = np.concatenate(CachedGraphs(prep.cache, with_labels=True).labels)[:, 0]
    smiles = prep.cache.meta()["smiles"].tolist()
    parts = make_split(cfg.split.kind, smiles, tuple(cfg.split.fractions), split_seed, y)
    return {name: ([smiles[i] for i in rows], y[rows]) for name, rows in zip(("train", "val", "test"), parts)}


def _csv(path: Path, smiles: list[str], y: np.ndarray) -> Path:
    path.write_text("smiles,y\n" + "".join(f"{s},{v:.6g}\n" for s, v in zip(smiles, y)))
    return path


def _call(cmd: list[str], log: Path, threads: int) -> None:
    """Run one chemprop command, its output appended to ``log``, on ``threads`` threads (torch's default of
    one per core oversubscribes a shared machine: several times the CPU time per epoch here)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with log.open("a") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {done.returncode}); see {log}")


def _predict(chemprop: str, work: Path, test: Path, val: Path, method: str, level: float | None,
             threads: int) -> tuple:
    """One ``chemprop predict`` on the test CSV: ``(prediction [N], unc [N])`` as Chemprop writes them."""
    name = method if level is None else f"{method}-{round(level * 100)}"
    out = work / f"pred-{name}.csv"
    cmd = [chemprop, "predict", "-i", str(test), "--model-paths", str(work / "model"), "-o", str(out),
           "--uncertainty-method", "ensemble", "-n", "0"]
    if method != "none":
        cmd += ["--calibration-method", method, "--cal-path", str(val)]
    if method == "zelikman-interval":
        cmd += ["--calibration-interval-percentile", str(level * 100)]
    if method == "conformal-regression":
        cmd += ["--conformal-alpha", str(round(1.0 - level, 6))]
    _call(cmd, work / "chemprop.log", threads)
    frame = pd.read_csv(out)
    return frame["y"].to_numpy(float), frame["y_unc"].to_numpy(float)


def _gaussian_row(y: np.ndarray, pred: np.ndarray, std: np.ndarray) -> dict[str, float]:
    from molwm.evaluation.metrics import (
        NOMINAL,
        gaussian_nll,
        interval_coverage,
        miscalibration_area,
        spearman_error_std,
    )
    from molwm.uncertainty.fit import LEVELS

    def cover(level: float) -> float:
        half = norm.ppf(0.5 + level / 2) * std
        return interval_coverage(y, pred - half, pred + half)

    row = {f"coverage_{round(lv * 100)}": cover(lv) for lv in NOMINAL}
    observed = np.concatenate([[0.0], [cover(lv) for lv in LEVELS], [1.0]])
    row["miscalibration_area"] = miscalibration_area(np.concatenate([[0.0], LEVELS, [1.0]]), observed)
    row["spearman"] = spearman_error_std(y, pred, std)
    row["nll"] = gaussian_nll(y, pred, std)
    return row


def run_chemprop(chemprop: str, dataset: str, split_seed: int, work: Path, epochs: int, members: int,
                 levels: tuple[float, ...], threads: int = 1) -> dict:
    """Train one Chemprop ensemble on the split and score each of its calibrators on the test rows."""
    from molwm.evaluation.metrics import interval_coverage, spearman_error_std

    work.mkdir(parents=True, exist_ok=True)
    rows = split_rows(dataset, split_seed)
    files = {p: _csv(work / f"{p}.csv", *rows[p]) for p in rows}
    t0 = time.perf_counter()
    _call([chemprop, "train", "-i", str(files["train"]), str(files["val"]), str(files["test"]), "-o",
           str(work / "model"), "--ensemble-size", str(members), "--epochs", str(epochs), "-n", "0",
           "--pytorch-seed", str(split_seed), "--data-seed", str(split_seed), "--target-columns", "y"],
          work / "chemprop.log", threads)
    y = rows["test"][1]
    out: dict = {"seconds_train": time.perf_counter() - t0, "n_test": len(y), "epochs": epochs}
    pred, var = _predict(chemprop, work, files["test"], files["val"], "none", None, threads)
    out["test_rmse"] = float(np.sqrt(np.mean((pred - y) ** 2)))
    out["none"] = _gaussian_row(y, pred, np.sqrt(var))
    pred, var = _predict(chemprop, work, files["test"], files["val"], "zscaling", None, threads)
    out["zscaling"] = _gaussian_row(y, pred, np.sqrt(var))
    for method in ("zelikman-interval", "conformal-regression"):
        row = {}
        for level in levels:
            pred, unc = _predict(chemprop, work, files["test"], files["val"], method, level, threads)
            half = np.sqrt(unc) if method == "zelikman-interval" else unc
            row[f"coverage_{round(level * 100)}"] = interval_coverage(y, pred - half, pred + half)
            row["spearman"] = spearman_error_std(y, pred, half)  # a monotone map of the variance: one ranking
        out[method] = row
    out["seconds"] = time.perf_counter() - t0
    return out


def chemprop_table(runs: dict[str, list[dict]]) -> str:
    """Markdown rows in the layout of ``uncertainty.table`` (mean ± std over split seeds; blank = not given)."""
    lines = [("| set | Chemprop v2 method | cov 50 | cov 80 | cov 90 | cov 95 | miscal. area | Spearman | NLL | "
              "test RMSE |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in runs.items():
        for m in CHEMPROP_METHODS:
            def col(k: str, m: str = m, rs: list = rs) -> str:
                v = np.array([r[m].get(k, np.nan) for r in rs], float)
                if not np.isfinite(v).any():
                    return ""
                return f"{np.nanmean(v):.3f}" + (f" ± {np.nanstd(v):.3f}" if len(v) > 1 else "")
            rmse = np.array([r["test_rmse"] for r in rs])
            lines.append(f"| {name} | {m} | " + " | ".join(col(k) for k in (
                "coverage_50", "coverage_80", "coverage_90", "coverage_95", "miscalibration_area", "spearman",
                "nll")) + f" | {rmse.mean():.3f} |")
    return "\n".join(lines)
