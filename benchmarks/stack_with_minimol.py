"""The stack with its optional MiniMol member, rebuilt from saved members: what ``minimol_mlp`` adds.

For every MoleculeACE target a ``property.py --methods molwm_stack`` run finished, each seed's
six members' validation and test predictions are read back (``predictions_seed<S>.npz``), the
MiniMol member (:class:`molwm.predictors.minimol.MiniMolMLP`, the class ``stack.members``
uses) is fitted on the same seed's training rows with the same seed, and the seven members are
combined exactly as ``mode=stack`` does (``--combiner``, by default ``simplex`` as in ``mode=stack``; the
same cross-fitting folds); the six saved members are recombined the same way, so the two rows
differ only by the member: the
result is the stack a run with ``minimol_mlp`` among its members would give (the member is last,
seeds its own generator and is fitted after the others, so it changes none of them), apart from
MiniMol fingerprints read from the benchmark feature cache. Prints per target the 6-member stack,
the 7-member stack and the MiniMol member alone (RMSE and cliff RMSE over seeds) and the means.
Usage::

    python benchmarks/stack_with_minimol.py --work outputs/bench/i29b/mace_stack_a-work,outputs/bench/i29b/mace_stack_b-work \
        --out outputs/bench/i29b/stack_with_minimol.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import property_data as pdata
import property_methods as pm
from molwm.predictors.minimol import MiniMolMLP
from molwm.predictors.stack import combine, rule_weights
from molwm.train.stack import choose_combiner

ROWS = ("stack", "stack + minimol", "minimol member")


def _weights(preds: np.ndarray, y: np.ndarray, seed: int, combiner: str) -> np.ndarray:
    """``[K, T]`` weights as ``mode=stack`` makes them with ``stack.combiner=combiner``."""
    rules, *_ = choose_combiner(preds, y, "regression", 5, seed, combiner)
    return np.stack([rule_weights(r, preds[:, :, j], y[:, j], "regression") for j, r in enumerate(rules)], 1)


def restack(s, path: Path, x: np.ndarray, seed: int, combiner: str = "simplex") -> dict:
    """One seed: the six saved members stacked, the same with the MiniMol member, and that member alone."""
    d = np.load(path)
    split = next(sp for sp, sd in zip(s.splits, s.seeds) if sd == seed)
    train, val, test = (np.asarray(r) for r in split)
    if not (np.array_equal(d["val_rows"], val) and np.array_equal(d["test_rows"], test)):
        raise SystemExit(f"{path}: its rows are not the benchmark's rows for seed {seed}")
    y = s.y[:, None]
    member = MiniMolMLP.fit({"minimol": x[train]}, y[train], {"minimol": x[val]}, y[val], "regression", seed)
    pv = np.concatenate([d["val"], member.predict({"minimol": x[val]})[None]])
    pt = np.concatenate([d["test"], member.predict({"minimol": x[test]})[None]])
    w6, w = _weights(d["val"], y[val], seed, combiner), _weights(pv, y[val], seed, combiner)
    preds = {"stack": combine(d["test"][None], w6[None])[0][:, 0],
             "stack + minimol": combine(pt[None], w[None])[0][:, 0], "minimol member": pt[-1, :, 0]}
    return {k: {"rmse": pm.rmse(s.y[test], p), "rmse_cliff": pm.cliff_rmse(s.y[test], p, s.cliff[test]),
                "minimol_weight": float(w[-1, 0])} for k, p in preds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="comma-separated property.py work folders of stack runs")
    parser.add_argument("--feature-cache", default=os.path.join(os.environ.get("MOLWM_CACHE", os.path.expanduser(
        "~/.cache/molwm")), "bench-features"))
    parser.add_argument("--combiner", default="simplex", choices=["simplex", "equal", "top3", "best", "auto"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    store = pm.FeatureStore(Path(args.feature_cache))
    found: dict[str, list[Path]] = {}
    for work in args.work.split(","):
        if not Path(work).is_dir():
            raise SystemExit(f"--work: no such folder {work}")
        for path in sorted(Path(work).glob("molwm/*/stack/seed*/stack/predictions_seed*.npz")):
            found.setdefault(path.parts[-5], []).append(path)
    results = {}
    full = max((len(v) for v in found.values()), default=0)
    for target, paths in sorted(found.items()):
        if len(paths) < full:  # a target whose run was stopped part-way
            continue
        seeds = [int(p.stem.rsplit("seed", 1)[1]) for p in paths]
        s = pdata.moleculeace_sets([target], seeds, Path("/tmp/stack-with-minimol"))[0]
        x = store.get("minimol", s.smiles)
        per_seed = [restack(s, p, x, seed, args.combiner) for p, seed in zip(paths, seeds)]
        results[target] = {k: {m: float(np.mean([r[k][m] for r in per_seed])) for m in ("rmse", "rmse_cliff")}
                           for k in ROWS}
        results[target]["seeds"] = seeds
        results[target]["minimol_weight"] = float(np.mean([r["stack + minimol"]["minimol_weight"] for r in per_seed]))
        print(f"{target:<18} " + "  ".join(f"{k} {results[target][k]['rmse']:.3f} ({results[target][k]['rmse_cliff']:.3f})"
                                           for k in ROWS) + f"  minimol weight {results[target]['minimol_weight']:.2f}",
              flush=True)
    if results:
        means = {k: {m: float(np.mean([r[k][m] for r in results.values()])) for m in ("rmse", "rmse_cliff")}
                 for k in ROWS}
        better = sum(r["stack + minimol"]["rmse"] < r["stack"]["rmse"] for r in results.values())
        print(f"\nmean over {len(results)} targets: " + ", ".join(f"{k} {v['rmse']:.3f} ({v['rmse_cliff']:.3f})"
                                                           for k, v in means.items())
              + f"; the MiniMol member lowers the stack's RMSE on {better} of {len(results)}")
        if args.out:
            Path(args.out).write_text(json.dumps({"targets": results, "means": means, "better": better}, indent=1))
            print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
