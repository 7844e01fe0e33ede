"""How the stack's weighting rules compare on the same members: test RMSE per rule, and what ``auto`` chose.

``mode=stack`` keeps every member's validation and test predictions of each seed
(``<out_dir>/stack/predictions_seed<S>.npz``). This script finds them under ``--work`` (a
``property.py`` work folder), rebuilds the weights each rule of
:data:`molwm.predictors.stack.COMBINERS` makes from the validation rows alone, and scores the
stacked test predictions: the rows say what choosing the rule on cross-fitted validation loss
(``auto``, the saved weights) cost or gained against each fixed rule, with the members unchanged.
It also sums each member's CPU seconds. The first target of each file; classification sets get
their ROC-AUC per rule only.
Usage::

    python benchmarks/stack_combiners.py --work outputs/bench/i29b/mace_stack_a-work,outputs/bench/i29b/mace_stack_b-work
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from molwm.predictors.stack import COMBINERS, rule_weights
from molwm.train.stack import choose_combiner


def score_file(path: Path) -> dict:
    """Per rule (``auto``: the saved weights and the rules the run chose): test RMSE, test predictions, and
    which test rows the calibrated 90% interval covers (``conformal_fixed`` on the rule's out-of-fold
    validation predictions, as ``mode=stack`` calibrates a one-seed stack); the chosen rule; CPU seconds."""
    from molwm.predictors.stack import combine, spread_pair
    from molwm.train.stack import cross_fit
    from molwm.uncertainty.calibration import fit_calibrator

    d = np.load(path)
    val, test, y_val, y_test = d["val"][..., 0], d["test"][..., 0], d["y_val"][:, 0], d["y_test"][:, 0]
    ok = np.isfinite(y_test)
    seed = int(re.sub(r"\D", "", path.stem) or 0)
    if np.isin(y_val[np.isfinite(y_val)], (0.0, 1.0)).all():  # classification: ROC-AUC per rule only
        from sklearn.metrics import roc_auc_score

        out = {"task": "classification", "rule": str(d["rules"][0])}
        for rule in ("auto", *COMBINERS):
            w = d["weights"][:, 0] if rule == "auto" else rule_weights(rule, val, y_val, "classification")
            out[rule] = float(roc_auc_score(y_test[ok], (w @ test)[ok]))
        return out
    out = {"task": "regression", "rule": str(d["rules"][0]), "test_rows": d["test_rows"], "y_test": y_test, "pred": {}, "covered": {}}
    for rule in ("auto", *COMBINERS):
        if rule == "auto":
            w, (m, sd) = d["weights"][:, 0], choose_combiner(val[:, :, None], y_val[:, None], "regression", 5, seed,
                                                            "auto")[1:3]
        else:
            w = rule_weights(rule, val, y_val, "regression")
            m, sd = cross_fit(val[:, :, None], y_val[:, None], "regression", 5, seed, rule)
        cal = fit_calibrator("conformal_fixed", "regression", spread_pair(m, sd), y_val[:, None], 0.9)
        tm, ts = combine(test[None, :, :, None], w[None, :, None])
        lo, hi = cal.interval(0, tm[:, 0], ts[:, 0], 0.9)
        out["pred"][rule] = tm[:, 0]
        out[rule] = float(np.sqrt(np.mean((tm[ok, 0] - y_test[ok]) ** 2)))
        out["covered"][rule] = ((y_test[ok] >= lo[ok]) & (y_test[ok] <= hi[ok])).tolist()
    out["nested_val"] = nested_validation(val, y_val, seed)
    names = [str(n) for n in d["names"]]
    out["members"] = {n: float(np.sqrt(np.mean((test[k, ok] - y_test[ok]) ** 2))) for k, n in enumerate(names)}
    if "cpu_seconds" in d.files:
        out["cpu_seconds"] = dict(zip(names, map(float, d["cpu_seconds"])))
    return out


def nested_validation(val: np.ndarray, y_val: np.ndarray, seed: int, folds: int = 5) -> dict[str, float]:
    """Validation rows only: each rule's (and ``auto``'s) squared error on outer folds of the validation rows,
    the rule (for ``auto``: the choice, itself cross-fitted) made from the other folds. Says whether choosing
    the rule pays without reading a test row."""
    order = np.random.default_rng([seed, 7_919]).permutation(len(y_val))
    err = {r: [] for r in ("auto", *COMBINERS)}
    for f in range(folds):
        held = order[f::folds]
        inner = np.setdiff1d(order, held)
        rules, *_ = choose_combiner(val[:, inner, None], y_val[inner, None], "regression", 5, seed, "auto")
        for r in err:
            w = rule_weights(rules[0] if r == "auto" else r, val[:, inner], y_val[inner], "regression")
            err[r] += list((w @ val[:, held] - y_val[held]) ** 2)
    return {r: float(np.sqrt(np.mean(e))) for r, e in err.items()}


def collect(works: list[Path]) -> dict[str, list[dict]]:
    """Per target (the folder under ``molwm/``), one scored dict per seed file found."""
    found: dict[str, list[dict]] = defaultdict(list)
    for work in works:
        for path in sorted(work.glob("molwm/*/stack/seed*/stack/predictions_seed*.npz")):
            scored = score_file(path)
            if scored:
                found[path.parts[-5]].append(scored)
    return dict(found)


def cliff_rmse(target: str, runs: list[dict], rules: list[str]) -> dict[str, float]:
    """Per rule, the cliff RMSE (MoleculeACE's activity-cliff test molecules), mean over seeds."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import property_data as pdata
    import property_methods as pm

    s = pdata.moleculeace_sets([target], [0], Path("/tmp/stack-combiners-cards"))[0]
    out = {}
    for r in rules:
        vals = []
        for x in runs:
            rows = np.asarray(x["test_rows"])
            if not np.allclose(s.y[rows], x["y_test"]):
                raise SystemExit(f"{target}: the saved test rows are not MoleculeACE's test rows")
            vals.append(pm.cliff_rmse(s.y[rows], x["pred"][r], s.cliff[rows]))
        out[r] = float(np.mean(vals))
    return out


def report(found: dict[str, list[dict]]) -> tuple[str, dict]:
    """Markdown: per target the mean test RMSE over seeds of ``auto`` and each rule, then the means and counts."""
    rules = ["auto", *COMBINERS]
    full = max(len(v) for v in found.values()) if found else 0
    found = {t: v for t, v in found.items() if len(v) == full}  # targets still running are left out
    classified = {t: v for t, v in found.items() if v[0]["task"] == "classification"}
    found = {t: v for t, v in found.items() if t not in classified}
    extra = []
    if classified:
        extra = ["", "| classification set | seeds | " + " | ".join(f"{r} ROC-AUC" for r in rules) + " |",
                 "|---|---|" + "---|" * len(rules)]
        for t, runs in classified.items():
            extra.append(f"| {t} | {len(runs)} | " + " | ".join(
                f"{np.mean([x[r] for x in runs]):.3f} ± {np.std([x[r] for x in runs], ddof=1) if len(runs) > 1 else 0:.3f}"
                for r in rules) + " |")
    lines = ["| target | seeds | " + " | ".join(rules) + " | auto chose |", "|---|---|" + "---|" * (len(rules) + 1)]
    per_target = {}
    for target in sorted(found, key=lambda t: int(re.sub(r"\D", "", t) or 0)):
        runs = found[target]
        per_target[target] = {r: float(np.mean([x[r] for x in runs])) for r in rules}
        spread = {r: float(np.std([x[r] for x in runs], ddof=1)) if len(runs) > 1 else 0.0 for r in rules}
        per_target[target].update({f"{r}_std": v for r, v in spread.items()})
        chose = ", ".join(sorted(x["rule"] for x in runs))
        lines.append(f"| {target} | {len(runs)} | " + " | ".join(f"{per_target[target][r]:.3f} ± {spread[r]:.3f}"
                                                                 for r in rules) + f" | {chose} |")
    summary = {"n_targets": len(per_target)}
    if per_target:
        summary["mean_rmse"] = {r: float(np.mean([v[r] for v in per_target.values()])) for r in rules}
        summary["auto_not_worse_than"] = {r: int(sum(v["auto"] <= v[r] + 1e-12 for v in per_target.values()))
                                         for r in COMBINERS}
        lines += ["", f"Mean over {len(per_target)} targets: " + ", ".join(
            f"{r} {summary['mean_rmse'][r]:.3f}" for r in rules) + ".",
                  "auto at most the fixed rule's RMSE on: " + ", ".join(
            f"{r} {n}/{len(per_target)}" for r, n in summary["auto_not_worse_than"].items()) + " targets."]
        covered = {r: np.concatenate([x["covered"][r] for runs in found.values() for x in runs]) for r in rules}
        summary["coverage_90_pooled"] = {r: float(c.mean()) for r, c in covered.items()}
        lines.append(f"90% coverage pooled over {len(covered['auto'])} test rows (conformal, one width, on each "
                     "rule's out-of-fold validation predictions): " + ", ".join(
            f"{r} {c.mean():.3f}" for r, c in covered.items()) + ".")
        cliff = {t: cliff_rmse(t, runs, rules) for t, runs in found.items() if t.startswith("CHEMBL")}
        for t, c in cliff.items():
            per_target[t].update({f"{r}_cliff": v for r, v in c.items()})
        if cliff:
            summary["mean_rmse_cliff"] = {r: float(np.mean([c[r] for c in cliff.values()])) for r in rules}
            lines.append(f"Cliff RMSE, mean over {len(cliff)} MoleculeACE targets: " + ", ".join(
                f"{r} {v:.3f}" for r, v in summary["mean_rmse_cliff"].items()) + ".")
        nested = {r: float(np.mean([np.mean([x["nested_val"][r] for x in runs]) for runs in found.values()]))
                  for r in rules}
        summary["nested_validation_rmse"] = nested
        lines.append("Validation rows only (nested cross-fitting, no test row read), mean RMSE: " + ", ".join(
            f"{r} {v:.3f}" for r, v in nested.items()) + ".")
        cpu = [x["cpu_seconds"] for runs in found.values() for x in runs if "cpu_seconds" in x]
        if cpu:
            summary["cpu_seconds"] = {n: float(sum(c[n] for c in cpu)) for n in cpu[0]}
            total = sum(summary["cpu_seconds"].values())
            lines.append("CPU seconds by member (all seeds and targets): " + ", ".join(
                f"{n} {s:.0f} ({s / total:.0%})" for n, s in summary["cpu_seconds"].items()) + ".")
    return "\n".join(lines + extra), {"per_target": per_target, "summary": summary,
                                      "classification": {t: [{r: x[r] for r in rules} for x in v]
                                                         for t, v in classified.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="comma-separated property.py work folders")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    works = [Path(w) for w in args.work.split(",")]
    missing = [str(w) for w in works if not w.is_dir()]
    if missing:
        raise SystemExit(f"--work: no such folder {', '.join(missing)}")
    text, figures = report(collect(works))
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
