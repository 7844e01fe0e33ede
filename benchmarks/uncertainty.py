"""Uncertainty benchmark: how well calibrated is a fine-tuned ensemble's spread, raw and calibrated?

For each dataset and split seed, one fine-tune of ``--members`` seeds on one shared split (the
dataset's config, ``split.shared=true``: the scaffold split of the split seed, 80/10/10; from
scratch unless ``--from`` names a pretrained model), then on
the same model's member predictions:

* regression: the raw ensemble std (Gaussian intervals), z-scaling and split conformal, each fitted
  on the validation rows and scored on the test rows: coverage of the 50/80/90/95% intervals,
  miscalibration area, Spearman(|error|, std), Gaussian NLL;
* classification: raw, Platt and isotonic: expected calibration error (10 bins) and Brier score;
* the applicability domain fitted by the fine-tune: share of test molecules in domain and the
  test |error| out of domain / in domain.

MoleculeACE: per target (``--ace-targets``), a local card of that target's compounds (pXC50), its
own train/test split, validation = a seeded 10% of its train compounds (a split file), the
solubility config otherwise. Prints markdown and writes every number to ``--out``. Usage::

    python benchmarks/uncertainty.py [--datasets solubility,freesolv,b3db_classification,moleculeace]
        [--splits 0,1,2] [--members 3] [--epochs 30] [--ace-targets CHEMBL2835_Ki,CHEMBL2047_EC50]

Chemprop v2's calibrators (``uncertainty_chemprop.py``: z-scaling, Zelikman intervals, conformal
regression on a Chemprop ensemble trained on the same train/validation/test rows) on
``--chemprop-sets`` for the same split seeds, where a ``chemprop`` command is found
(``--chemprop PATH``, ``$CHEMPROP`` or ``PATH``; the script prints why not otherwise);
``--datasets ''`` runs them alone::

    python benchmarks/uncertainty.py --datasets '' --chemprop-sets solubility --chemprop-epochs 10

Forecasts (``--forecast thunor`` or ``--forecast lab --lab LAB``; ``uncertainty_forecast.py``): the
world model's member spread on held-out courses, raw and calibrated on *other* held-out courses of
the same model, never on the courses scored (thunor's held-out drugs and late time points, the
lab's held-out scaffolds k = 1, 2, 4 steps ahead), one model seed per ``--seeds``::

    python benchmarks/uncertainty.py --forecast thunor [--folds 9] [--steps 1000] [--seeds 0,1,2]
    python benchmarks/uncertainty.py --forecast lab --lab LAB [--steps 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
from uncertainty_chemprop import chemprop_table, find_chemprop, run_chemprop
from uncertainty_forecast import forecast_table, run_forecast

ROOT = Path(__file__).resolve().parent.parent
REGRESSION = ("none", "zscale", "conformal")
CLASSIFICATION = ("none", "platt", "isotonic")


def _ace_card(target: str, folder: Path, split_seed: int) -> tuple[str, Path]:
    """A local card and split file for one MoleculeACE target (pXC50); returns (card name, split file)."""
    from molwm.data.panel import load_moleculeace_panel

    panel = load_moleculeace_panel(targets=[target])
    keep = np.isfinite(panel.values[:, 0])
    smiles = np.asarray(panel.smiles, dtype=object)[keep]
    values, test = panel.values[keep, 0], panel.test_mask()[keep, 0]
    name = f"ace_{target.lower()}"
    csv = folder / f"{name}.csv"
    lines = ["smiles,pxc50"] + [f"{s},{v:.6f}" for s, v in zip(smiles, values)]
    csv.write_text("\n".join(lines) + "\n")
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nsource:\n  kind: local\n  files:\n    - path: {csv.name}\n      sha256: {digest}\n"
        "columns:\n  smiles: smiles\n  targets: [pxc50]\ntask:\n  type: regression\n  metric: rmse\n"
        f"license: MIT\ncitation: MoleculeACE {target} (van Tilborg et al. 2022)\n")
    train = np.flatnonzero(~test)
    val = np.sort(np.random.default_rng(split_seed).choice(train, max(10, len(train) // 10), replace=False))
    split = folder / f"{name}-split{split_seed}.json"
    split.write_text(json.dumps([{"train": sorted(set(train.tolist()) - set(val.tolist())), "val": val.tolist(),
                                  "test": np.flatnonzero(test).tolist()}]))
    return name, split


def _rows(dataset: str, split_file: Path):
    """SMILES and labels of the first split's validation and test rows (source rows -> cache rows)."""
    from molwm.data.batch import CachedGraphs
    from molwm.data.prepare import PrepareConfig, prepare_dataset

    prep = prepare_dataset(PrepareConfig(dataset=dataset, progress=False))
    graphs = CachedGraphs(prep.cache, with_labels=True)
    y = np.concatenate(graphs.labels)
    smiles = np.asarray(prep.cache.meta()["smiles"].tolist(), dtype=object)
    pos = {int(r): i for i, r in enumerate(graphs.source_index)}
    split = json.loads(split_file.read_text())[0]
    out = {}
    for part in ("val", "test"):
        rows = np.array([pos[int(r)] for r in split[part]])
        out[part] = (list(smiles[rows]), y[rows])
    return out


def run_one(dataset: str, config: str, split_seed: int, args, out_dir: Path, split_file: Path | None) -> dict:
    """One shared-split ensemble, every calibrator on its member predictions."""
    from molwm.config import load_config
    from molwm.query import MoleculeModel
    from molwm.uncertainty.calibration import fit_calibrator
    from molwm.uncertainty.fit import uncertainty_report
    from molwm.train.finetune import FinetuneConfig, run_finetune

    seeds = [split_seed + 10 * k for k in range(args.members)]  # split.shared: the split of seeds[0]
    items = [f"dataset={dataset}", f"seeds={seeds}", "split.shared=true", f"epochs={args.epochs}",
             f"patience={args.patience}", f"out_dir={out_dir}", f"threads={args.threads}",
             *([f"from_model={args.from_model}"] if args.from_model else ["mode=scratch"])]
    if split_file is not None:
        items.append(f"split.file={split_file}")
    cfg = load_config(FinetuneConfig, ROOT / "configs" / "finetune" / f"{config}.yaml", items)
    t0 = time.perf_counter()
    result = run_finetune(cfg, progress=False)
    seconds = time.perf_counter() - t0
    rows = _rows(dataset, result.split_file)
    model = MoleculeModel.load(result.checkpoint)
    preds = {p: model.compute(rows[p][0], embed=False, predict=True)[1] for p in ("val", "test")}
    methods = CLASSIFICATION if result.task == "classification" else REGRESSION
    out = {"task": result.task, "seconds": seconds, "n_val": len(rows["val"][0]), "n_test": len(rows["test"][0]),
           "test_rmse_or_auc": result.summary.get("test_rmse_mean", result.summary.get("test_roc_auc_mean")),
           "domain": {k: v for k, v in result.uncertainty.items() if "domain" in k}}
    for method in methods:
        cal = fit_calibrator(method, result.task, preds["val"], rows["val"][1], 0.9)
        out[method] = uncertainty_report(cal, preds["test"], rows["test"][1])[0]
    return out


def _fmt(values: list[float]) -> str:
    v = np.array(values, dtype=float)
    return f"{np.nanmean(v):.3f}" + (f" ± {np.nanstd(v):.3f}" if len(v) > 1 else "")


def table(results: dict) -> str:
    """Markdown: one row per (dataset, method), mean ± std over split seeds."""
    lines = ["| set | method | cov 50 | cov 80 | cov 90 | cov 95 | miscal. area | Spearman | NLL / ECE | Brier |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        methods = CLASSIFICATION if runs[0]["task"] == "classification" else REGRESSION
        for m in methods:
            def col(k: str, m: str = m, runs: list = runs) -> str:
                return _fmt([r[m][k] for r in runs]) if k in runs[0][m] else ""

            if runs[0]["task"] == "classification":
                lines.append(f"| {name} | {m} | | | | | | | {col('ece')} | {col('brier')} |")
            else:
                lines.append(f"| {name} | {m} | {col('coverage_50')} | {col('coverage_80')} | {col('coverage_90')} | "
                             f"{col('coverage_95')} | {col('miscalibration_area')} | {col('spearman')} | "
                             f"{col('nll')} | |")
    lines += ["", "| set | test rows | in domain | test |error| out / in domain | seconds per ensemble |",
              "|---|---|---|---|---|"]
    for name, runs in results.items():
        lines.append(f"| {name} | {runs[0]['n_test']} | {_fmt([r['domain']['test_in_domain_fraction'] for r in runs])}"
                     f" | {_fmt([r['domain']['test_domain_error_ratio'] for r in runs])} | "
                     f"{np.mean([r['seconds'] for r in runs]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="solubility,freesolv,b3db_classification,moleculeace")
    p.add_argument("--splits", default="0,1,2", help="split seeds (one ensemble each)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--from", dest="from_model", default=None,
                   help="a pretrained model for the configs' full fine-tune (default: mode=scratch)")
    p.add_argument("--ace-targets", default="CHEMBL2835_Ki,CHEMBL2047_EC50,CHEMBL1871_Ki")
    p.add_argument("--b3db-splits", default=None, help="split seeds for B3DB (default --splits)")
    p.add_argument("--work", default="outputs/bench_uncertainty")
    p.add_argument("--out", default="outputs/bench_uncertainty/results.json")
    p.add_argument("--forecast", choices=["thunor", "lab"], default=None, help="world-model forecasts instead")
    p.add_argument("--lab", default=None, help="a lab made with several --times (for --forecast lab)")
    p.add_argument("--folds", type=int, default=9)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--ensemble", type=int, default=3)
    p.add_argument("--cutoff", type=float, default=24.0)
    p.add_argument("--late-cutoff", type=float, default=72.0)
    p.add_argument("--seeds", default="0", help="forecasts: model seeds (thunor: also the fold partition)")
    p.add_argument("--chemprop", default=None, help="the chemprop command (default $CHEMPROP, then PATH)")
    p.add_argument("--chemprop-sets", default="solubility", help="regression sets for Chemprop's calibrators")
    p.add_argument("--chemprop-epochs", type=int, default=30)
    p.add_argument("--chemprop-levels", default="0.5,0.8,0.9,0.95",
                   help="levels of Chemprop's interval calibrators (one predict call each)")
    args = p.parse_args()
    if args.forecast:
        import torch

        torch.set_num_threads(args.threads)
        runs = run_forecast(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(runs, indent=1))
        print(forecast_table(runs))
        seconds = [s for r in runs for s in r["train_seconds"]]
        print(f"training: {np.mean(seconds):.0f} s per model, {args.steps} steps, {len(runs)} seed(s)")
        return
    work = Path(args.work)
    cards = work / "cards"
    cards.mkdir(parents=True, exist_ok=True)
    os.environ["MOLWM_DATASETS"] = os.pathsep.join([str(cards.resolve()), os.environ.get("MOLWM_DATASETS", "")])
    splits = [int(s) for s in args.splits.split(",")]
    results: dict[str, list[dict]] = {}
    for dataset in [d for d in args.datasets.split(",") if d]:
        jobs = []
        if dataset == "moleculeace":
            for target in args.ace_targets.split(","):
                for s in splits:
                    name, split_file = _ace_card(target, cards, s)
                    jobs.append((f"MoleculeACE {target}", name, "solubility", s, split_file))
        else:
            use = [int(s) for s in args.b3db_splits.split(",")] if dataset.startswith("b3db") and args.b3db_splits \
                else splits
            jobs = [(dataset, dataset, dataset, s, None) for s in use]
        for label, name, config, s, split_file in jobs:
            r = run_one(name, config, s, args, work / f"{name}-split{s}", split_file)
            results.setdefault(label, []).append(r)
            print(f"{label} split {s}: {r['seconds']:.0f} s", json.dumps({m: r[m] for m in r if m in REGRESSION +
                                                                         CLASSIFICATION}), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1))
    if results:
        print(table(results))
    sets = [d for d in args.chemprop_sets.split(",") if d]
    chemprop, why = find_chemprop(args.chemprop)
    if not sets:
        return
    if chemprop is None:
        print(f"Chemprop v2's calibrators not run: {why}")
        return
    levels = tuple(float(v) for v in args.chemprop_levels.split(","))
    cp: dict[str, list[dict]] = {}
    for dataset in sets:
        for s in splits:
            r = run_chemprop(chemprop, dataset, s, work / f"chemprop-{dataset}-split{s}", args.chemprop_epochs,
                             args.members, levels, args.threads)
            cp.setdefault(dataset, []).append(r)
            print(f"chemprop {dataset} split {s}: {r['seconds']:.0f} s, test RMSE {r['test_rmse']:.3f}", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"molwm": results, "chemprop": {"command": chemprop, "runs": cp}},
                                                 indent=1))
    print(chemprop_table(cp))


if __name__ == "__main__":
    main()
