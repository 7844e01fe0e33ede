"""Forecasting baselines on thunor's HTS007 live-cell counts (log count at each well's last time point).

Two settings, both predicting ``log(count)`` at each well's last observed time
point (~118 h; a few wells stop earlier, the earliest at 72.8 h):

* ``leave-drugs-out``: the 27 drugs are split into ``--folds`` groups (seeded);
  each fold trains on the wells of the other drugs plus every vehicle control
  (full courses) and predicts the held-out drugs' wells from what they showed
  up to ``--cutoff`` hours (default 24). Predictions of all folds are pooled;
  scored on treated wells. ``hill_rate`` cannot predict an unseen drug, so it is
  not run here.
* ``late-times``: training sees every well (treated and controls) but only up
  to ``--late-cutoff`` hours (default 72); every well whose last point lies after
  the cutoff is then forecast to its last point. ``mean_growth`` and
  ``control_growth`` have no training data at the target here, so they
  extrapolate the cell line's mean least-squares slope of the last
  ``--window`` hours (default 24) before the cutoff; ``hill_rate`` fits the same
  slopes per (drug, cell line) as a Hill curve of log dose.

RMSE is in natural-log count units (0.1 is ~10% error in count). Needs the
optional package thunor (GPL-3.0; only its data file is read). Usage::

    python benchmarks/thunor_baselines.py [--folds 9] [--seed 0] [--cutoff 24]
        [--late-cutoff 72] [--window 24] [--out /tmp/thunor_baselines.json]
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from molwm.world.baselines import (
    control_growth,
    hill_rate,
    last_observed,
    leave_drugs_out_folds,
    mean_growth,
    persistence,
    rmse,
)
from molwm.world.thunor import load_thunor


def _score(pred: np.ndarray, obs: np.ndarray, treated: np.ndarray) -> dict:
    r_t, n_t = rmse(pred[treated], obs[treated])
    r_a, n_a = rmse(pred, obs)
    return {"rmse_treated": r_t, "n_treated": n_t, "rmse_all": r_a, "n_all": n_a}


def leave_drugs_out(courses, folds: int, seed: int, cutoff: float) -> dict:
    """Pooled leave-drugs-out predictions of each baseline, scored on treated wells."""
    obs, ok, target = last_observed(courses)
    baselines = {"persistence": persistence, "mean_growth": mean_growth, "control_growth": control_growth}
    pred = {name: np.full(courses.n, np.nan) for name in baselines}
    for train_rows, test_rows in leave_drugs_out_folds(courses, folds, seed):
        train, test = courses.subset(train_rows), courses.subset(test_rows)
        for name, fn in baselines.items():
            pred[name][test_rows] = fn(train, test, cutoff, target[test_rows])
    tested = np.zeros(courses.n, bool)
    tested[courses.drug >= 0] = True
    keep = tested & ok & (target > cutoff)
    return {name: _score(p[keep], obs[keep], np.ones(int(keep.sum()), bool)) for name, p in pred.items()}


def late_times(courses, cutoff: float, window: float) -> dict:
    """Train on every well up to ``cutoff``; forecast each well's last point."""
    obs, ok, target = last_observed(courses)
    keep = ok & (target > cutoff)
    train, test = courses.until(cutoff), courses.subset(np.flatnonzero(keep))
    baselines = {
        "persistence": persistence,
        "mean_growth": partial(mean_growth, extrapolate_window_h=window),
        "control_growth": partial(control_growth, extrapolate_window_h=window),
        "hill_rate": partial(hill_rate, window_h=window),
    }
    treated = test.drug >= 0
    return {name: _score(fn(train, test, cutoff, target[keep]), obs[keep], treated)
            for name, fn in baselines.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cutoff", type=float, default=24.0, help="leave-drugs-out cutoff (h)")
    ap.add_argument("--late-cutoff", type=float, default=72.0, help="late-times cutoff (h)")
    ap.add_argument("--window", type=float, default=24.0, help="slope window before the cutoff (h)")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    args = ap.parse_args(argv)

    t0 = time.time()
    courses = load_thunor()
    s = courses.summary()
    print(f"HTS007: {s['conditions']} wells ({s['controls']} controls), {s['drugs']} drugs "
          f"({s['drugs_with_structure']} with SMILES), {s['contexts']} cell lines, "
          f"{s['observations']} points")
    results = {
        f"leave-drugs-out ({args.folds} folds, cutoff {args.cutoff:g} h)":
            leave_drugs_out(courses, args.folds, args.seed, args.cutoff),
        f"late-times (train <= {args.late_cutoff:g} h, cutoff {args.late_cutoff:g} h)":
            late_times(courses, args.late_cutoff, args.window),
    }
    print("\nRMSE of log(count) at each well's last time point\n")
    print("| setting | baseline | RMSE treated | n treated | RMSE all wells | n all |")
    print("|---|---|---|---|---|---|")
    for setting, rows in results.items():
        for name, r in rows.items():
            print(f"| {setting} | {name} | {r['rmse_treated']:.4f} | {r['n_treated']} | "
                  f"{r['rmse_all']:.4f} | {r['n_all']} |")
    print(f"\n({time.time() - t0:.1f} s)")
    if args.out:
        meta = {k: str(v) for k, v in vars(args).items()}
        args.out.write_text(json.dumps({"args": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
