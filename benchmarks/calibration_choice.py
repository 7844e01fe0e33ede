"""Which calibrator a default fine-tune should use: every method on the same fine-tuned ensembles.

For each fine-tune folder given (``model.pt`` and ``split.json`` of a shared-split ensemble, as
``molwm finetune`` writes them), the members' predictions of the validation and test rows are
computed once; then each calibrator is fitted on the validation rows and scored on the test rows:

* ``raw``: the members' std, Gaussian intervals;
* ``zscale`` and ``conformal``: on the members' std (what ``calibration.method`` offers);
* ``conformal_fixed``: split conformal on |error| of the ensemble mean with one width for every
  molecule (the members' std not used).

A stacked model (``mode=stack``) is scored the same way on its own spread: its validation rows'
out-of-fold stacked predictions are rebuilt exactly as the fine-tune built them (the saved
members' predictions, the same folds and seeds: :func:`molwm.train.stack.cross_fit`), its test rows'
with the saved weights.

Prints coverage at 50/80/90/95%, miscalibration area and NLL per folder, and the 90% coverage
pooled over all folders' test rows per method. Usage::

    python benchmarks/calibration_choice.py outputs/bench/i29/default_freesolv_split0 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uncertainty import _rows  # noqa: E402

METHODS = ("raw", "zscale", "conformal", "conformal_fixed")


def score(folder: Path) -> dict:
    """Every method's test figures for one fine-tune folder."""
    import torch

    from molwm.query import MoleculeModel
    from molwm.uncertainty.calibration import Calibrator, fit_calibrator
    from molwm.uncertainty.fit import uncertainty_report

    state = torch.load(folder / "model.pt", weights_only=True)
    dataset = state["config"]["dataset"]
    rows = _rows(dataset, folder / "split.json")
    model = MoleculeModel.load(folder / "model.pt")
    preds = {p: model.compute(rows[p][0], embed=False, predict=True)[1] for p in ("val", "test")}
    y_val, y_test = rows["val"][1], rows["test"][1]
    if state["kind"] == "stacked_property_model":
        preds = _stack_pairs(state, preds, y_val)
    out = {"dataset": dataset, "n_val": len(y_val), "n_test": len(y_test)}
    for method in METHODS:
        if method == "raw":
            cal, p_test = Calibrator.from_dict(None, "regression", y_val.shape[1]), preds["test"]
        elif method == "conformal_fixed":
            cal, p_test = fit_calibrator(method, "regression", preds["val"], y_val, 0.9), preds["test"]
        else:
            cal, p_test = fit_calibrator(method, "regression", preds["val"], y_val, 0.9), preds["test"]
        got, _ = uncertainty_report(cal, p_test, y_test)
        mean, std = p_test.mean(0)[:, 0], p_test.std(0)[:, 0]
        lo, hi = cal.interval(0, mean, std, 0.9)
        out[method] = {**got, "covered_90": ((y_test[:, 0] >= lo) & (y_test[:, 0] <= hi)).astype(int).tolist()}
    return out


def _stack_pairs(state: dict, preds: dict, y_val: np.ndarray) -> dict:
    """A stack's validation (out of fold) and test predictions as mean +- spread pairs."""
    from molwm.predictors.stack import combine, spread_pair
    from molwm.train.stack import cross_fit

    seeds, k = state["seeds"], len(state["member_names"])
    weights = np.asarray(state["weights"])
    val = preds["val"].reshape(len(seeds), k, *preds["val"].shape[1:])
    oof = [cross_fit(val[i], y_val, state["task"], state["config"]["stack"]["cross_fit_folds"], seed)
           for i, seed in enumerate(seeds)]
    m = np.mean([o[0] for o in oof], axis=0)
    s = np.sqrt(np.var([o[0] for o in oof], axis=0) + np.mean([o[1] ** 2 for o in oof], axis=0))
    test = combine(preds["test"].reshape(len(seeds), k, *preds["test"].shape[1:]), weights)
    return {"val": spread_pair(m, s), "test": spread_pair(*test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default=None, help="write every figure here (JSON)")
    args = ap.parse_args()
    results = {f: score(Path(f)) for f in args.folders}
    print("| fine-tune | method | cov 50 | cov 80 | cov 90 | cov 95 | miscal. area | NLL |\n|---|---|---|---|---|---|---|---|")
    for f, r in results.items():
        for m in METHODS:
            g = r[m]
            print(f"| {'/'.join(Path(f).parts[-4:])} ({r['n_test']}) | {m} | {g['coverage_50']:.3f} | {g['coverage_80']:.3f} | "
                  f"{g['coverage_90']:.3f} | {g['coverage_95']:.3f} | {g['miscalibration_area']:.3f} | {g['nll']:.2f} |")
    print("\n90% coverage pooled over every folder's test rows:")
    for m in METHODS:
        cov = np.concatenate([r[m]["covered_90"] for r in results.values()])
        area = np.mean([r[m]["miscalibration_area"] for r in results.values()])
        print(f"  {m:<20} {cov.mean():.3f} ({len(cov)} rows); mean miscalibration area {area:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
