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
solubility config otherwise. Chemprop v2's calibrators run only where a ``chemprop`` command is
found (this script says so otherwise). Prints markdown and writes every number to ``--out``.
Usage::

    python benchmarks/uncertainty.py [--datasets solubility,freesolv,b3db_classification,moleculeace]
        [--splits 0,1,2] [--members 3] [--epochs 30] [--ace-targets CHEMBL2835_Ki,CHEMBL2047_EC50]

Forecasts (``--forecast thunor`` or ``--forecast lab --lab LAB``): the world model's member spread
on held-out courses, raw and calibrated on *other* held-out courses of the same model, never on
the courses scored: thunor leave-drugs-out (per fold, each held-out drug is scored by calibrators
fitted on the fold's other held-out drugs; forecasts from ``--cutoff`` h to each well's last point)
and late time points (one model trained up to ``--late-cutoff`` h; each drug's late forecasts scored
by calibrators fitted on the other drugs'); the lab's held-out scaffolds k = 1, 2, 4 observed steps
ahead (calibrated on one half of the held-out compounds, scored on the other, and the reverse)::

    python benchmarks/uncertainty.py --forecast thunor [--folds 9] [--steps 1000]
    python benchmarks/uncertainty.py --forecast lab --lab LAB [--steps 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

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
    from molwm.tasks.calibration import fit_calibrator
    from molwm.tasks.uncertainty import uncertainty_report
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
            col = lambda k: _fmt([r[m][k] for r in runs]) if k in runs[0][m] else ""  # noqa: E731
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


FORECAST_METHODS = ("none", "zscale", "conformal")
LEVELS = np.round(np.linspace(0.01, 0.99, 99), 2)


def group_calibrated(preds: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Score each group's rows with calibrators fitted on the other groups' rows (per read-out).

    Args:
        preds: ``[E, n, F]`` member forecasts; ``y``: ``[n, F]`` observations; ``groups``: ``[n]``.

    Returns:
        Method -> ``covered [n, F, L]`` (inside the interval at each of :data:`LEVELS`), ``std [n, F]``.
    """
    from molwm.tasks.calibration import fit_calibrator

    n, f = y.shape
    out = {m: {"covered": np.zeros((n, f, len(LEVELS)), bool), "std": np.full((n, f), np.nan)}
           for m in FORECAST_METHODS}
    for g in np.unique(groups):
        ev = groups == g
        if ev.all():
            continue
        mean, raw = preds[:, ev].mean(0), preds[:, ev].std(0)
        for m in FORECAST_METHODS:
            cal = fit_calibrator(m, "regression", preds[:, ~ev], y[~ev], 0.9)
            out[m]["std"][ev] = cal.apply(preds[:, ev])["std"]
            for j in range(f):
                for li, level in enumerate(LEVELS):
                    lo, hi = cal.interval(j, mean[:, j], raw[:, j], level)
                    out[m]["covered"][ev, j, li] = (y[ev, j] >= lo) & (y[ev, j] <= hi)
    return out


def summarise(scored: dict, preds: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    """Coverage at the nominal levels, miscalibration area and Spearman(|error|, std) per method."""
    from molwm.tasks.metrics import NOMINAL, miscalibration_area, spearman_error_std

    mean = preds.mean(0)
    out = {}
    for m, r in scored.items():
        observed = r["covered"].mean((0, 1))
        row = {f"coverage_{round(lv * 100)}": float(observed[np.isclose(LEVELS, lv)][0]) for lv in NOMINAL}
        row["miscalibration_area"] = miscalibration_area(np.concatenate([[0], LEVELS, [1]]),
                                                         np.concatenate([[0], observed, [1]]))
        row["spearman"] = float(np.nanmean([spearman_error_std(y[:, j], mean[:, j], r["std"][:, j])
                                            for j in range(y.shape[1])]))
        row["n"] = int(y.shape[0])
        out[m] = row
    return out


def _world_model(courses, args, out_dir: str, source: str, **data):
    from molwm.world.forecast import WorldForecaster
    from molwm.world.model import WorldNetConfig
    from molwm.world.run import run_world
    from molwm.world.train import WorldConfig, WorldDataConfig

    cfg = WorldConfig(objective="jepa", data=WorldDataConfig(source=source, compound="morgan+rdkit2d", **data),
                      model=WorldNetConfig(history=4 if source == "thunor" else 1, ensemble=args.ensemble),
                      max_steps=args.steps, forecast_step_h=24.0, seed=0, out_dir=out_dir, log_every=100,
                      health_every=500, checkpoint_every=10_000)
    t = time.perf_counter()
    result = run_world(cfg, progress=False, courses=courses)
    return result, WorldForecaster.load(result.checkpoint), time.perf_counter() - t


def _stack(parts: list[dict]) -> dict:
    return {m: {k: np.concatenate([p[m][k] for p in parts]) for k in ("covered", "std")} for m in parts[0]}


def forecast_thunor(args) -> dict:
    """Leave-drugs-out and late-time forecast intervals on thunor HTS007 (see the module docstring)."""
    from molwm.world.baselines import last_observed, leave_drugs_out_folds
    from molwm.world.evaluate import members_from_cutoff
    from molwm.world.prepare import make_world_data
    from molwm.world.thunor import load_thunor

    courses = load_thunor()
    obs, ok, target = last_observed(courses)
    scored, all_preds, all_y, seconds = [], [], [], []
    for f, (_, te) in enumerate(leave_drugs_out_folds(courses, args.folds, 0)):
        result, fc, sec = _world_model(courses, args, f"{args.work}/thunor-fold{f}", "thunor", split="folds",
                                       n_folds=args.folds, fold=f, seed=0)
        seconds.append(sec)
        preds = members_from_cutoff(fc, result.build.test, args.cutoff, target[te])  # [E, n, 1]
        keep = (courses.drug[te] >= 0) & ok[te] & (target[te] > args.cutoff) & np.isfinite(preds).all((0, 2))
        p, y = preds[:, keep], obs[te][keep][:, None]
        scored.append(group_calibrated(p, y, courses.drug[te][keep]))
        all_preds.append(p)
        all_y.append(y)
        print(f"thunor fold {f}: {sec:.0f} s, {keep.sum()} wells", flush=True)
    lodo = summarise(_stack(scored), np.concatenate(all_preds, 1), np.concatenate(all_y))
    keep_l = ok & (target > args.late_cutoff)
    result, fc, sec = _world_model(courses, args, f"{args.work}/thunor-late", "thunor", split="none",
                                   max_time_h=args.late_cutoff)
    test = courses.subset(np.flatnonzero(keep_l))
    data = make_world_data(test.until(args.late_cutoff), result.build.obs_norm, result.build.drug_features,
                           fc.config.model.history, result.build.train_drugs)
    preds = members_from_cutoff(fc, data, args.late_cutoff, target[keep_l], identity=True)
    treated = (test.drug >= 0) & np.isfinite(preds).all((0, 2))
    p, y = preds[:, treated], obs[keep_l][treated][:, None]
    late = summarise(group_calibrated(p, y, test.drug[treated]), p, y)
    return {"leave_drugs_out": lodo, "late_times": late, "train_seconds": seconds + [sec], "steps": args.steps}


def forecast_lab(args) -> dict:
    """k-steps-ahead forecast intervals on the synthetic lab's held-out scaffolds."""
    from molwm.world.data import load_lab_courses
    from molwm.world.evaluate import members_steps_ahead

    courses = load_lab_courses(args.lab)
    result, fc, sec = _world_model(courses, args, f"{args.work}/lab", "lab", lab=args.lab, split="scaffold",
                                   test_fraction=0.2, seed=0)
    drugs = courses.drug[result.build.test_rows]
    half = np.random.default_rng(0).permutation(np.unique(drugs))[: len(np.unique(drugs)) // 2]
    out = {"train_seconds": sec, "steps": args.steps}
    for k in (1, 2, 4):
        preds, y, rows = members_steps_ahead(fc, result.build.test, k)
        if not len(rows):
            continue
        groups = np.isin(drugs[rows], half).astype(int)  # calibrate on one half of the compounds, score the other
        out[f"k{k}"] = summarise(group_calibrated(preds, y, groups), preds, y)
    return out


def forecast_table(results: dict) -> str:
    """Markdown: one row per (setting, method)."""
    lines = ["| setting | method | n | cov 50 | cov 80 | cov 90 | cov 95 | miscal. area | Spearman |",
             "|---|---|---|---|---|---|---|---|---|"]
    for setting, rows in results.items():
        if not isinstance(rows, dict):
            continue
        for m, r in rows.items():
            lines.append(f"| {setting} | {m} | {r['n']} | {r['coverage_50']:.3f} | {r['coverage_80']:.3f} | "
                         f"{r['coverage_90']:.3f} | {r['coverage_95']:.3f} | {r['miscalibration_area']:.3f} | "
                         f"{r['spearman']:.3f} |")
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
    args = p.parse_args()
    if args.forecast:
        import torch

        torch.set_num_threads(args.threads)
        results = forecast_thunor(args) if args.forecast == "thunor" else forecast_lab(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(forecast_table(results))
        print(f"training: {np.mean(np.atleast_1d(results['train_seconds'])):.0f} s per model, {args.steps} steps")
        return
    work = Path(args.work)
    cards = work / "cards"
    cards.mkdir(parents=True, exist_ok=True)
    os.environ["MOLWM_DATASETS"] = os.pathsep.join([str(cards.resolve()), os.environ.get("MOLWM_DATASETS", "")])
    splits = [int(s) for s in args.splits.split(",")]
    results: dict[str, list[dict]] = {}
    for dataset in args.datasets.split(","):
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
    print(table(results))
    found = shutil.which("chemprop")
    print(f"chemprop: {found} (its calibrators are not wired here yet)" if found else
          "chemprop: no `chemprop` command found, so Chemprop v2's calibrators were not run")


if __name__ == "__main__":
    main()
