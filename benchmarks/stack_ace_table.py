"""Issue 29's MoleculeACE table: every method beside the stack as it ships (fitted weights) and its variants.

Reads ``property.py`` results merged by ``stack_report.py`` (``--merged``, the classical rows and the
stack's members as run), ``stack_combiners.py --out`` (the stack recombined from its saved members
with each weighting rule: ``simplex`` is ``mode=stack``'s default) and ``stack_with_minimol.py --out``
(the stack with the optional MiniMol member). Prints one row per target where every column
finished, then the means, and on how many targets each stack beats every other row (and every
method outside the stack). Usage::

    python benchmarks/stack_ace_table.py --merged W/moleculeace_merged.json --combiners W/combiners.json \
        --minimol W/stack_with_minimol.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

OTHERS = {"rf_morgan": "RF, Morgan", "rf_rdkit2d": "RF, RDKit 2D", "svm_ecfp": "SVM, ECFP (MoleculeACE)",
          "minimol_mlp": "MiniMol + MLP", "stack:molwm_base": "molwm:base member", "stack:molwm_scratch": "scratch member",
          "stack:molwm_tabular": "tabular member", "stack:gbm": "LightGBM member", "stack:svm_tanimoto": "SVM Tanimoto member",
          "stack:rf_rdkit2d": "RF fast RDKit 2D member"}
METHODS = ("rf_morgan", "rf_rdkit2d", "svm_ecfp", "minimol_mlp")  # the single methods a user would pick instead
STACKS = {"stack": "**stack** (fitted weights, default)", "stack_auto": "stack, auto rule (as run)",
          "stack_minimol": "stack + MiniMol member"}


def rows(merged: dict, combiners: dict, minimol: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """Per target with every column: ``{column: (rmse, cliff rmse)}`` (means over seeds)."""
    out = {}
    for target, entry in merged["sets"].items():
        if entry["group"] != "moleculeace":
            continue
        comb, mm = combiners["per_target"].get(target), minimol.get("targets", {}).get(target)
        have = entry["methods"]
        if comb is None or mm is None or not all(m in have for m in OTHERS):
            continue
        row = {m: (have[m]["rmse"]["mean"], have[m]["rmse_cliff"]["mean"]) for m in OTHERS}
        row["stack"] = (comb["simplex"], comb["simplex_cliff"])
        row["stack_auto"] = (comb["auto"], comb["auto_cliff"])
        row["stack_minimol"] = (mm["stack + minimol"]["rmse"], mm["stack + minimol"]["rmse_cliff"])
        out[target] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--merged", required=True)
    ap.add_argument("--combiners", required=True)
    ap.add_argument("--minimol", required=True)
    args = ap.parse_args()
    merged, combiners, minimol = (json.loads(Path(p).read_text()) for p in (args.merged, args.combiners, args.minimol))
    table = rows(merged, combiners, minimol)
    cols = [*OTHERS, *STACKS]
    names = {**OTHERS, **STACKS}
    print("| target | " + " | ".join(names[c] for c in cols) + " |\n|---|" + "---|" * len(cols))
    for t, row in sorted(table.items()):
        best = min(row[c][0] for c in cols)
        print(f"| {t} | " + " | ".join((f"**{row[c][0]:.3f}**" if row[c][0] == best else f"{row[c][0]:.3f}")
                                       + f" ({row[c][1]:.3f})" for c in cols) + " |")
    if not table:
        print("no target has every column")
        return
    mean = {c: (np.mean([r[c][0] for r in table.values()]), np.mean([r[c][1] for r in table.values()])) for c in cols}
    print(f"| mean over {len(table)} | " + " | ".join(f"{mean[c][0]:.3f} ({mean[c][1]:.3f})" for c in cols) + " |")
    for s in STACKS:
        wins = sum(all(r[s][0] < r[o][0] for o in OTHERS) for r in table.values())
        wins_methods = sum(all(r[s][0] < r[o][0] for o in METHODS) for r in table.values())
        print(f"\n{names[s]}: ahead of every other method and member on {wins} of {len(table)} targets, "
              f"of every method outside the stack ({' / '.join(OTHERS[o] for o in METHODS)}) on {wins_methods}; "
              f"mean RMSE {mean[s][0]:.3f}, cliff {mean[s][1]:.3f}")


if __name__ == "__main__":
    main()
