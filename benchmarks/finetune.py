"""Honest comparison on identical scaffold splits and seeds.

For each dataset, the GNN trained from scratch runs first and writes the split
file (source rows per seed, Chemprop's ``--splits-file`` format); every other
method reuses exactly those rows:

* RF on 2048-bit Morgan fingerprints (radius 2, 500 trees),
* RF on RDKit 2D descriptors (500 trees),
* the same GNN from scratch,
* the JEPA-pretrained GNN, linear probe and full fine-tune (``--pretrained``),
* Chemprop v2 with default settings through its own CLI, when found
  (``--chemprop PATH`` or ``chemprop`` on ``PATH``), on the same rows.

Prints a markdown table (mean ± std over seeds) and writes every per-seed
number to ``--out`` (JSON). Never fails on a slow machine. Usage::

    python benchmarks/finetune.py --pretrained outputs/pretrain/graph_jepa/last.pt \\
        [--datasets solubility,freesolv,b3db_classification] [--seeds 0,1,2] [--chemprop /path/to/chemprop]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _gnn(dataset, mode, seeds, pretrained, split_file, out_dir, tracker, overrides):
    from molwm.config import load_config
    from molwm.train.finetune import FinetuneConfig, run_finetune

    root = Path(__file__).resolve().parent.parent
    items = [f"mode={mode}", f"seeds={list(seeds)}", f"out_dir={out_dir / mode}", *overrides]
    if pretrained and mode != "scratch":
        items.append(f"from_model={pretrained}")
    if split_file:
        items.append(f"split.file={split_file}")
    config = load_config(FinetuneConfig, root / "configs" / "finetune" / f"{dataset}.yaml", items)
    t0 = time.perf_counter()
    result = run_finetune(config, tracker, progress=False)
    return result, time.perf_counter() - t0


def _chemprop(binary, smiles, y, names, task, splits_pos, workdir: Path) -> tuple[list[dict], float]:
    from molwm.evaluation.metrics import task_metrics

    data = pd.DataFrame({"smiles": smiles})
    for j, n in enumerate(names):
        data[n] = y[:, j]
    data.to_csv(workdir / "data.csv", index=False)
    (workdir / "split.json").write_text(json.dumps(
        [{"train": tr.tolist(), "val": va.tolist(), "test": te.tolist()} for tr, va, te in splits_pos]))
    cmd = [binary, "train", "--data-path", str(workdir / "data.csv"), "--task-type",
           "classification" if task == "classification" else "regression", "--splits-file",
           str(workdir / "split.json"), "--output-dir", str(workdir / "out"), "-s", "smiles", "--target-columns",
           *names]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    out = []
    for k, (_, _, test) in enumerate(splits_pos):
        rep_dir = workdir / "out" / (f"replicate_{k}" if len(splits_pos) > 1 else "")  # one split: no replicate dir
        pred_file = rep_dir / "model_0" / "test_predictions.csv"
        pred = pd.read_csv(pred_file)
        assert pred["smiles"].tolist() == [smiles[i] for i in test], "Chemprop reordered the test set"
        metrics = task_metrics(task, y[test], pred[names].to_numpy(dtype=float))
        out.append({f"test_{k2}": v for k2, v in metrics.items()})
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="solubility,freesolv,b3db_classification")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pretrained", default=None, help="JEPA checkpoint or MLflow model URI")
    parser.add_argument("--chemprop", default=None, help="chemprop executable (default: on PATH)")
    parser.add_argument("--methods", default="rf_morgan,rf_descriptors,scratch,linear_probe,full,chemprop")
    parser.add_argument("--split-file", default=None,
                        help="reuse this split.json (source rows per seed) instead of the scratch run's; "
                             "needed when scratch is not among --methods; '{dataset}' is replaced by each name")
    parser.add_argument("--out", default="outputs/benchmark_finetune.json")
    parser.add_argument("--experiment", default="molwm-benchmark")
    parser.add_argument("overrides", nargs="*", help="FinetuneConfig overrides for the GNN runs, e.g. epochs=30")
    args = parser.parse_args()

    from molwm.baselines import morgan_fingerprints, random_forest, rdkit_descriptors
    from molwm.data.batch import CachedGraphs
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.data.splits import load_splits
    from molwm.evaluation.metrics import primary_metric
    from molwm.tracking import make_tracker

    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    chemprop = args.chemprop or shutil.which("chemprop")
    tracker = make_tracker(True, experiment=args.experiment)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for dataset in args.datasets.split(","):
        work = out_path.parent / "benchmark" / dataset
        res = results.setdefault(dataset, {})
        prep = prepare_dataset(PrepareConfig(dataset=dataset, progress=False))
        graphs = CachedGraphs(prep.cache)
        y = np.concatenate(graphs.labels)
        smiles = prep.cache.meta()["smiles"].tolist()
        task = "classification" if "classification" in prep.card.task.type else "regression"
        metric, _ = primary_metric(task)
        # 1. the GNN from scratch fixes the split for everyone (unless one is given)
        split_file = args.split_file.format(dataset=dataset) if args.split_file else None
        if "scratch" in methods:
            scratch, secs = _gnn(dataset, "scratch", seeds, None, split_file, work, tracker, args.overrides)
            split_file = scratch.split_file
            res["scratch"] = {"per_seed": scratch.per_seed, "seconds": secs}
            print(f"{dataset} scratch: {scratch.summary[f'test_{metric}_mean']:.3f}", flush=True)
        elif split_file is None:
            parser.error("without the scratch method, give --split-file")
        pos_of = {int(r): i for i, r in enumerate(graphs.source_index)}
        splits_pos = [tuple(np.array([pos_of[int(r)] for r in part]) for part in s) for s in load_splits(split_file)]
        for mode in ("linear_probe", "full"):
            if mode in methods and args.pretrained:
                r, secs = _gnn(dataset, mode, seeds, args.pretrained, split_file, work, tracker, args.overrides)
                res[mode] = {"per_seed": r.per_seed, "seconds": secs}
                print(f"{dataset} {mode}: {r.summary[f'test_{metric}_mean']:.3f}", flush=True)
        for name, featurize in (("rf_morgan", morgan_fingerprints), ("rf_descriptors", rdkit_descriptors)):
            if name in methods:
                t0 = time.perf_counter()
                feats = featurize(smiles)
                per = [random_forest(feats, y, s, task, seed) for s, seed in zip(splits_pos, seeds)]
                res[name] = {"per_seed": per, "seconds": time.perf_counter() - t0}
                print(f"{dataset} {name}: {np.mean([p[f'test_{metric}'] for p in per]):.3f}", flush=True)
        if "chemprop" in methods and chemprop:
            with tempfile.TemporaryDirectory() as d:
                try:
                    per, secs = _chemprop(chemprop, smiles, y, prep.card.columns.target_names, task, splits_pos,
                                          Path(d))
                    res["chemprop_v2"] = {"per_seed": per, "seconds": secs}
                    print(f"{dataset} chemprop: {np.mean([p[f'test_{metric}'] for p in per]):.3f}", flush=True)
                except Exception as err:  # noqa: BLE001 - reported, not fatal
                    print(f"{dataset} chemprop failed: {err}")
        res["_meta"] = {"metric": metric, "seeds": seeds, "split_file": str(split_file), "n": len(smiles)}
        out_path.write_text(json.dumps(results, indent=1))
    print()
    print(table(results))


def table(results: dict) -> str:
    """Markdown table: dataset, method, mean ± std of the primary test metric, per seed."""
    order = ["rf_morgan", "rf_descriptors", "chemprop_v2", "scratch", "linear_probe", "full"]
    label = {"rf_morgan": "RF, Morgan 2048 r2", "rf_descriptors": "RF, RDKit 2D descriptors",
             "chemprop_v2": "Chemprop v2 (defaults)", "scratch": "GNN from scratch",
             "linear_probe": "JEPA GNN, linear probe", "full": "JEPA GNN, full fine-tune"}
    lines = ["| dataset | metric | method | mean ± std | per seed | seconds |", "|---|---|---|---|---|---|"]
    for dataset, res in results.items():
        metric = res["_meta"]["metric"]
        for m in order:
            if m not in res:
                continue
            vals = [p[f"test_{metric}"] for p in res[m]["per_seed"]]
            lines.append(f"| {dataset} | {metric} | {label[m]} | {np.mean(vals):.3f} ± {np.std(vals):.3f} | "
                         f"{', '.join(f'{v:.3f}' for v in vals)} | {res[m]['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
