"""How the stack's weighting rules compare on the same members: test RMSE per rule, and what ``auto`` chose.

``mode=stack`` keeps every member's validation and test predictions of each seed
(``<out_dir>/stack/predictions_seed<S>.npz``). This script finds them under ``--work`` (a
``property.py`` work folder), rebuilds the weights each rule of
:data:`molwm.predictors.stack.COMBINERS` makes from the validation rows alone, and scores the
stacked test predictions: the rows say what choosing the rule on cross-fitted validation loss
(``auto``, the saved weights) cost or gained against each fixed rule, with the members unchanged.
It also sums each member's CPU seconds. Regression targets only (the first target of each file).
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


def score_file(path: Path) -> dict:
    """Test RMSE of ``auto`` (the saved weights) and of every fixed rule, the chosen rule and CPU seconds."""
    d = np.load(path)
    val, test, y_val, y_test = d["val"][..., 0], d["test"][..., 0], d["y_val"][:, 0], d["y_test"][:, 0]
    ok = np.isfinite(y_test)

    def rmse(w: np.ndarray) -> float:
        return float(np.sqrt(np.mean((w @ test[:, ok] - y_test[ok]) ** 2)))

    out = {"auto": rmse(d["weights"][:, 0]), "rule": str(d["rules"][0])}
    out.update({r: rmse(rule_weights(r, val, y_val, "regression")) for r in COMBINERS})
    names = [str(n) for n in d["names"]]
    out["members"] = {n: float(np.sqrt(np.mean((test[k, ok] - y_test[ok]) ** 2))) for k, n in enumerate(names)}
    if "cpu_seconds" in d.files:
        out["cpu_seconds"] = dict(zip(names, map(float, d["cpu_seconds"])))
    return out


def collect(works: list[Path]) -> dict[str, list[dict]]:
    """Per target (the folder under ``molwm/``), one scored dict per seed file found."""
    found: dict[str, list[dict]] = defaultdict(list)
    for work in works:
        for path in sorted(work.glob("molwm/*/stack/seed*/stack/predictions_seed*.npz")):
            found[path.parts[-5]].append(score_file(path))
    return dict(found)


def report(found: dict[str, list[dict]]) -> tuple[str, dict]:
    """Markdown: per target the mean test RMSE over seeds of ``auto`` and each rule, then the means and counts."""
    rules = ["auto", *COMBINERS]
    lines = ["| target | seeds | " + " | ".join(rules) + " | auto chose |", "|---|---|" + "---|" * (len(rules) + 1)]
    per_target = {}
    for target in sorted(found, key=lambda t: int(re.sub(r"\D", "", t) or 0)):
        runs = found[target]
        per_target[target] = {r: float(np.mean([x[r] for x in runs])) for r in rules}
        chose = ", ".join(sorted(x["rule"] for x in runs))
        lines.append(f"| {target} | {len(runs)} | " + " | ".join(f"{per_target[target][r]:.3f}" for r in rules)
                     + f" | {chose} |")
    summary = {"n_targets": len(per_target)}
    if per_target:
        summary["mean_rmse"] = {r: float(np.mean([v[r] for v in per_target.values()])) for r in rules}
        summary["auto_not_worse_than"] = {r: int(sum(v["auto"] <= v[r] + 1e-12 for v in per_target.values()))
                                         for r in COMBINERS}
        lines += ["", f"Mean over {len(per_target)} targets: " + ", ".join(
            f"{r} {summary['mean_rmse'][r]:.3f}" for r in rules) + ".",
                  "auto at most the fixed rule's RMSE on: " + ", ".join(
            f"{r} {n}/{len(per_target)}" for r, n in summary["auto_not_worse_than"].items()) + " targets."]
        cpu = [x["cpu_seconds"] for runs in found.values() for x in runs if "cpu_seconds" in x]
        if cpu:
            summary["cpu_seconds"] = {n: float(sum(c[n] for c in cpu)) for n in cpu[0]}
            total = sum(summary["cpu_seconds"].values())
            lines.append("CPU seconds by member (all seeds and targets): " + ", ".join(
                f"{n} {s:.0f} ({s / total:.0%})" for n, s in summary["cpu_seconds"].items()) + ".")
    return "\n".join(lines), {"per_target": per_target, "summary": summary}


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
