"""Which gradient-boosted trees the stack's ``gbm`` member uses: LightGBM or CatBoost, by measurement.

Both fit RDKit 2D descriptors + Morgan counts (radius 2, 1024, log1p) on each seed's training rows of
the same sets (MoleculeACE targets with MoleculeACE's split and a seeded 10% validation carve;
packaged sets on scaffold splits), early stopping on validation rows, one thread each, and are scored
on validation (what the choice may read) and test (reported, not used). Prints a table and the ratio
of fit seconds. Usage::

    python benchmarks/gbm_choice.py --sets freesolv,solubility --targets CHEMBL2047_EC50,CHEMBL1862_Ki
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import property_data as pdata
import property_methods as pm

from featurizers.fingerprints import morgan_counts
from molwm.predictors.boosted import fit_catboost, fit_lightgbm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="freesolv,solubility")
    ap.add_argument("--targets", default="CHEMBL2047_EC50,CHEMBL1862_Ki,CHEMBL218_EC50")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", default="outputs/bench/gbm_choice")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = pdata.moleculeace_sets(args.targets.split(","), seeds, Path(args.work)) if args.targets else []
    sets += [pdata.packaged_set(n, seeds) for n in args.sets.split(",") if n]
    store = pm.FeatureStore(Path(args.work) / "features")
    totals = {"lightgbm": [0.0, [], []], "catboost": [0.0, [], []]}
    print("| set | library | val RMSE | test RMSE | fit s (3 seeds) |\n|---|---|---|---|---|")
    for s in sets:
        x = np.concatenate([store.get("rdkit2d", s.smiles),
                            np.log1p(morgan_counts(s.smiles, 1024)).astype(np.float64)], axis=1)
        for lib, fit in (("lightgbm", fit_lightgbm), ("catboost", fit_catboost)):
            vals, tests, secs = [], [], 0.0
            for k, seed in enumerate(s.seeds):
                train, val, test = s.splits[k]
                t0 = time.perf_counter()
                model = fit(x[train], s.y[train], x[val], s.y[val], s.task, seed)
                secs += time.perf_counter() - t0
                vals.append(pm.rmse(s.y[val], model.predict(x[val])))
                tests.append(pm.rmse(s.y[test], model.predict(x[test])))
            totals[lib][0] += secs
            totals[lib][1].append(np.mean(vals))
            totals[lib][2].append(np.mean(tests))
            print(f"| {s.name} | {lib} | {np.mean(vals):.3f} | {np.mean(tests):.3f} | {secs:.1f} |", flush=True)
    for lib, (secs, v, t) in totals.items():
        print(f"{lib}: mean val RMSE {np.mean(v):.3f}, mean test RMSE {np.mean(t):.3f}, {secs:.0f} s in all")
    print(f"catboost / lightgbm seconds: {totals['catboost'][0] / max(totals['lightgbm'][0], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
