"""Issue 29's tables from ``benchmarks/property.py`` results: the stack beside every method, and its targets.

Reads the per-fraction JSONs of the packaged sets (``--packaged 'DIR/packaged_*_{f}.json,...'``, one
file per method group and fraction; rows must be the same: ``property.py --merge`` checks the
digests) and the MoleculeACE JSONs (``--ace a.json,b.json``), and prints:

* label efficiency: per set and share of training rows, every method's test metric (mean ± std
  over seeds), the best method, whether the stack is best or within one std of the best, and the
  pooled 90% coverage of the stack's intervals;
* MoleculeACE: ``property.py``'s summary over the targets where every row finished (how many it says),
  and the targets where the stack beats every other row.

Usage::

    python benchmarks/stack_report.py --dir outputs/bench/i29 --fractions 0.05,0.2,1.0
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import property as prop


def _load(paths: list[str]) -> dict | None:
    paths = [p for p in paths if Path(p).is_file()]
    return prop.merge(paths) if paths else None


def label_efficiency(folder: Path, fractions: list[str]) -> tuple[str, dict]:
    """Markdown table and the target checks of the packaged sets at each fraction."""
    lines = ["| set | share | " + "best | stack | within 1 std of best | stack 90% coverage |", "|---|---|---|---|---|---|"]
    detail = ["", "| set | share | method | test metric (mean ± std) |", "|---|---|---|---|"]
    checks = {"cells": 0, "best": 0, "within": 0, "coverage": []}
    for f in fractions:
        report = _load(sorted(glob.glob(str(folder / f"packaged_*_{f}.json")) + glob.glob(str(folder / f"b3db_*_{f}.json"))))
        if report is None:
            continue
        for name, entry in report["sets"].items():
            if entry["group"] != "packaged" or "molwm_stack" not in entry["methods"]:
                continue
            metric = entry["info"]["metric"]
            higher = metric == "roc_auc"
            rows = {m: r[metric] for m, r in entry["methods"].items() if metric in r}
            best = max(rows, key=lambda m: rows[m]["mean"]) if higher else min(rows, key=lambda m: rows[m]["mean"])
            stack = rows["molwm_stack"]
            within = abs(stack["mean"] - rows[best]["mean"]) <= max(stack["std"], rows[best]["std"])
            cov = entry["methods"]["molwm_stack"].get("coverage_90", {}).get("mean")
            checks["cells"] += 1
            checks["best"] += best == "molwm_stack"
            checks["within"] += within or best == "molwm_stack"
            if cov is not None:  # (coverage, test rows) per seed: pooled over rows, not averaged over cells
                checks["coverage"] += [(p["coverage_90"], entry["info"]["n_test"])
                                       for p in entry["methods"]["molwm_stack"]["per_seed"]]
            lines.append(f"| {name} | {f} | {best} {rows[best]['mean']:.3f} ± {rows[best]['std']:.3f} | "
                         f"{stack['mean']:.3f} ± {stack['std']:.3f} | {'yes' if within else 'no'} | "
                         f"{'' if cov is None else f'{cov:.3f}'} |")
            for m, r in sorted(rows.items(), key=lambda kv: -kv[1]["mean"] if higher else kv[1]["mean"]):
                detail.append(f"| {name} | {f} | {m} | {r['mean']:.3f} ± {r['std']:.3f} |")
    cov = checks["coverage"]
    lines += ["", f"Stack strictly best in {checks['best']} of {checks['cells']} cells, best or within one std in "
              f"{checks['within']} of {checks['cells']}; 90% coverage pooled over regression sets and seeds: "
              + (f"{np.average([c for c, _ in cov], weights=[n for _, n in cov]):.3f} over "
                 f"{sum(n for _, n in cov)} test rows ({len(cov)} seed-cells; their plain mean "
                 f"{np.mean([c for c, _ in cov]):.3f})" if cov else "n/a")]
    return "\n".join(lines + detail), checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="outputs/bench/i29")
    ap.add_argument("--fractions", default="0.05,0.2,1.0")
    ap.add_argument("--ace", default=None, help="MoleculeACE JSONs (default: DIR/mace_*.json)")
    args = ap.parse_args()
    folder = Path(args.dir)
    text, _ = label_efficiency(folder, args.fractions.split(","))
    print("## Packaged sets, label efficiency\n\n" + text)
    ace = _load(args.ace.split(",") if args.ace else sorted(glob.glob(str(folder / "mace_*.json"))))
    if ace is not None:
        ace["config"]["methods"] = [m for m in prop.ALL if any(m in e["methods"] for e in ace["sets"].values())]
        ace["summary"] = {"moleculeace": prop.moleculeace_summary(ace["sets"], ace["config"]["methods"])}
        print("\n## MoleculeACE\n\n" + prop.tables(ace))
        (folder / "moleculeace_merged.json").write_text(json.dumps(ace, indent=1))


if __name__ == "__main__":
    main()
