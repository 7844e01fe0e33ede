"""Property prediction side by side: molwm beside the methods a user would pick instead, same rows and seeds.

Sets: MoleculeACE's 30 ChEMBL targets (its own train/test split, validation a seeded 10% of
train, cliff RMSE over the test molecules MoleculeACE flags as activity-cliff compounds)
and solubility, FreeSolv and B3DB (scaffold 80/10/10 by seed as ``configs/finetune/*.yaml``,
or ``--split-file``). Methods (``property_methods.py``, ``property_molwm.py``): RF on Morgan
bits, RF on RDKit 2D descriptors, MoleculeACE's SVM on ECFP, MiniMol fingerprints + MLP,
Chemprop v2 where a ``chemprop`` command is found, molwm fine-tuned from ``--molwm-from``
and the same network from scratch. Every method is fitted on the same training rows.
CheMeleon's published MoleculeACE figures are printed beside the measured ones, labelled
``published``. Prints a table per set and a summary (mean RMSE, cliff RMSE, targets won
against RF-Morgan and MiniMol, ratios, seconds); writes every per-seed figure to ``--out``
(JSON, rewritten after each method on each set, so an interrupted run keeps what it measured
and ``--resume`` continues it). Usage::

    python benchmarks/property.py --out outputs/bench/property.json                  # everything, 3 seeds
    python benchmarks/property.py --quick --out /tmp/p.json                           # 2 small targets + FreeSolv
    python benchmarks/property.py --methods rf_morgan,svm_ecfp,minimol_mlp --sets moleculeace
    python benchmarks/property.py --molwm-from molwm:base --methods molwm_base,molwm_scratch epochs=40
    python benchmarks/property.py --merge a.json,b.json --out all.json                # one report from several runs
    python benchmarks/property.py --sets solubility --train-fraction 0.05 ...          # label efficiency
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import property_data as pdata
import property_methods as pm
import property_molwm as pmw

CLASSICAL = ["rf_morgan", "rf_rdkit2d", "svm_ecfp", "minimol_mlp"]
ALL = [*CLASSICAL, "chemprop", "molwm_base", "molwm_scratch", "molwm_stack"]
STACK_MEMBERS = ["molwm_base", "molwm_scratch", "molwm_tabular", "rf_rdkit2d", "gbm", "svm_tanimoto", "minimol_mlp"]
"""The members ``mode=stack`` can hold (``minimol_mlp`` only when asked); each one a run has is reported as its
own row ``stack:<member>``."""
LABEL = {"rf_morgan": "RF, Morgan 2048 r2", "rf_rdkit2d": "RF, RDKit 2D descriptors",
         "svm_ecfp": "SVM, ECFP 1024 r2 (MoleculeACE)", "minimol_mlp": "MiniMol fingerprints + MLP",
         "chemprop": "Chemprop v2 (defaults)", "molwm_base": "molwm, fine-tuned from --molwm-from",
         "molwm_scratch": "molwm, same network from scratch", "molwm_stack": "molwm mode=stack (weights on validation)",
         **{f"stack:{m}": f"stack member {m}" for m in STACK_MEMBERS}}
QUICK_TARGETS = ["CHEMBL2835_Ki", "CHEMBL2047_EC50"]
# CheMeleon (Burns et al. 2025, arXiv 2506.15792): MoleculeACE, 30 targets, 5 seeds, its tables' averages
PUBLISHED = {"CheMeleon (published)": {"rmse": 0.666, "rmse_cliff": 0.764},
             "RF, Morgan (published, CheMeleon's table)": {"rmse": 0.694},
             "MiniMol (published, CheMeleon's table)": {"rmse": 0.700},
             "Chemprop from scratch (published, CheMeleon's table)": {"rmse": 0.832}}


def run_method(method: str, s, args, store, chemprop_bin, scratch_encoder) -> dict:
    """Per-seed test figures and seconds of one method on one set."""
    t0, t_feat, c0 = time.perf_counter(), sum(store.seconds.values()), _cpu()
    fit_seconds = None
    if method in CLASSICAL:
        preds = pm.classical(method, s, store, quick=args.quick)
    elif method == "chemprop":
        preds = pm.chemprop(chemprop_bin, s, Path(args.work) / "chemprop" / s.name, epochs=3 if args.quick else None)
    else:
        mode, uri = ("scratch", None) if method == "molwm_scratch" else ("full", args.molwm_from)
        overrides = (pmw.QUICK if args.quick else []) + args.overrides
        runs = [pmw.finetune(s, k, mode, uri, Path(args.work) / "molwm", overrides,
                             encoder=scratch_encoder) for k in range(len(s.seeds))]
        preds, fit_seconds = [p for p, _ in runs], sum(t for _, t in runs)
    seconds = time.perf_counter() - t0 - (sum(store.seconds.values()) - t_feat)  # features are timed apart
    per_seed = [{"seed": seed, **pm.score(s, split[2], p)} for seed, split, p in zip(s.seeds, s.splits, preds)]
    # CPU seconds (this process and its children, e.g. Chemprop's CLI) say more than wall time on a shared machine
    out = {"per_seed": per_seed, "seconds": seconds, "cpu_seconds": _cpu() - c0}
    if fit_seconds is not None:
        out["fit_seconds"] = fit_seconds
    for key in per_seed[0]:
        if key != "seed":
            vals = np.array([r[key] for r in per_seed])
            out[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    return out


def run_stack(s, args) -> dict:
    """``mode=stack`` from ``--molwm-from`` per seed: the stack's row and one row per member (same run, same rows),
    each with per-seed test figures; the stack's row adds the test coverage of its 90% intervals (regression)."""
    t0, c0 = time.perf_counter(), _cpu()
    overrides = (pmw.QUICK if args.quick else []) + args.overrides
    runs = [pmw.finetune_frame(s, k, "stack", args.molwm_from, Path(args.work) / "molwm", overrides)
            for k in range(len(s.seeds))]
    target = runs[0][0].columns[1]
    out = {}
    for name in ["molwm_stack", *(f"stack:{m}" for m in STACK_MEMBERS)]:
        column = target if name == "molwm_stack" else f"{target}_{name.split(':', 1)[1]}"
        if column not in runs[0][0].columns:
            continue
        per_seed = []
        for seed, split, (frame, _) in zip(s.seeds, s.splits, runs):
            row = {"seed": seed, **pm.score(s, split[2], frame[column].to_numpy(np.float64))}
            if name == "molwm_stack" and s.task != "classification":
                y = s.y[split[2]]
                row["coverage_90"] = float(np.mean((y >= frame[f"{target}_lo"]) & (y <= frame[f"{target}_hi"])))
            per_seed.append(row)
        out[name] = {"per_seed": per_seed, "seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0,
                     "fit_seconds": sum(t for _, t in runs)}
        for key in per_seed[0]:
            if key != "seed":
                vals = np.array([r[key] for r in per_seed])
                out[name][key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    return out


def _cpu() -> float:
    """User + system CPU seconds of this process and its finished children."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def shown(methods: list[str]) -> list[str]:
    """The rows a report shows: ``methods``, with the stack's members after ``molwm_stack``."""
    out = []
    for m in methods:
        out += [m, *(f"stack:{x}" for x in STACK_MEMBERS)] if m == "molwm_stack" else [m]
    return out


def moleculeace_summary(sets: dict, methods: list[str]) -> dict:
    """Means over the targets where every shown method finished (how many: ``n_targets``; std over seeds of
    the per-seed averages), targets won against RF-Morgan and MiniMol, and, for the stack, targets where it
    beats every other row (``beats_all``)."""
    ace = {n: r for n, r in sets.items() if r["group"] == "moleculeace"}
    rows = [m for m in shown(methods) if any(m in r["methods"] for r in ace.values())]
    common = {n: r for n, r in ace.items() if all(m in r["methods"] for m in rows)}
    out = {"_targets": {"n_common": len(common), "n_targets": len(ace), "methods": rows}}
    if not common:
        return out
    for m in rows:
        done = [r["methods"][m] for r in common.values()]
        row = {"n_targets": len(done), "seconds": float(sum(d["seconds"] for d in done)),
               "cpu_seconds": float(sum(d.get("cpu_seconds", float("nan")) for d in done))}
        for key in ("rmse", "rmse_cliff"):
            per_seed = np.array([[p[key] for p in d["per_seed"]] for d in done]).T  # [S, T]
            avg = np.nanmean(per_seed, axis=1)
            row[key] = {"mean": float(np.nanmean(per_seed)),
                        "std_over_seeds": float(avg.std(ddof=1)) if len(avg) > 1 else 0.0}
        for peer in ("rf_morgan", "minimol_mlp"):
            if peer != m and peer in rows:
                row[f"beats_{peer}"] = int(sum(r["methods"][m]["rmse"]["mean"] < r["methods"][peer]["rmse"]["mean"]
                                               for r in common.values()))
        if m == "molwm_stack":
            row["beats_all"] = int(sum(all(r["methods"][m]["rmse"]["mean"] < r["methods"][o]["rmse"]["mean"]
                                           for o in rows if o != m) for r in common.values()))
        out[m] = row
    if "rf_morgan" in out:
        for m in rows:
            out[m]["rmse_ratio_to_rf_morgan"] = out[m]["rmse"]["mean"] / out["rf_morgan"]["rmse"]["mean"]
    return out


def merge(paths: list[str], targets: list[str] | None = None) -> dict:
    """One report from several runs' JSON (e.g. methods run in parallel processes); later files win.
    ``targets``: keep only these MoleculeACE targets (the summary then averages over them)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    out = {"sets": {}, "published": PUBLISHED, "merged_from": [r["config"] for r in reports],
           "feature_seconds": {k: v for r in reports for k, v in r.get("feature_seconds", {}).items()}}
    methods: list[str] = []
    for r in reports:
        methods += [m for m in r["config"]["methods"] if m not in methods]
        for name, entry in r["sets"].items():
            mine = out["sets"].setdefault(name, {**entry, "methods": {}})
            if mine["rows_digest"] != entry["rows_digest"]:
                raise SystemExit(f"{name}: the runs used different rows ({mine['rows_digest']} vs "
                                 f"{entry['rows_digest']}); they cannot be merged")
            mine["methods"].update(entry["methods"])
    if targets:
        out["sets"] = {n: e for n, e in out["sets"].items() if e["group"] != "moleculeace" or n in targets}
    out["config"] = {**reports[-1]["config"], "methods": [m for m in ALL if m in methods]}
    out["summary"] = {"moleculeace": moleculeace_summary(out["sets"], out["config"]["methods"])}
    return out


def _ms(d: dict, key: str) -> str:
    return f"{d[key]['mean']:.3f} ± {d[key]['std']:.3f}" if key in d else ""


def tables(report: dict) -> str:
    """Markdown: a table per packaged set, one for the MoleculeACE targets, the summaries."""
    lines = []
    ace = {n: r for n, r in report["sets"].items() if r["group"] == "moleculeace"}
    methods = [m for m in shown(report["config"]["methods"]) if any(m in r["methods"] for r in report["sets"].values())]
    if ace:
        lines += ["| target | n_train / val / test (cliff) | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for name, r in ace.items():
            i = r["info"]
            cells = [f"{_ms(r['methods'][m], 'rmse')} ({_ms(r['methods'][m], 'rmse_cliff')})" if m in r["methods"]
                     else "" for m in methods]
            lines.append(f"| {name} | {i['n_train']} / {i['n_val']} / {i['n_test']} ({i['n_test_cliff']}) | "
                         + " | ".join(cells) + " |")
        lines += ["", ("RMSE (cliff RMSE), mean ± std over seeds; lower is better. Seconds: fitting and predicting, "
                       "all seeds (features apart)."), "",
                  ("| MoleculeACE | mean RMSE | cliff RMSE | RMSE / RF-Morgan | beats RF-Morgan | beats MiniMol | "
                   "seconds |"), "|---|---|---|---|---|---|---|"]
        summary = report["summary"]["moleculeace"]
        info = summary.get("_targets", {})
        lines.insert(len(lines) - 2, f"Summary over the {info.get('n_common', 0)} of {info.get('n_targets', 0)} targets "
                     "where every row finished" + (f"; the stack beats every other row on {summary['molwm_stack']['beats_all']}"
                                                   if "molwm_stack" in summary else "") + ".\n")
        for m, row in summary.items():
            if m == "_targets":
                continue
            lines.append(f"| {LABEL[m]} | {row['rmse']['mean']:.3f} ± {row['rmse']['std_over_seeds']:.3f} | "
                         f"{row['rmse_cliff']['mean']:.3f} ± {row['rmse_cliff']['std_over_seeds']:.3f} | "
                         f"{row.get('rmse_ratio_to_rf_morgan', float('nan')):.3f} | "
                         f"{row.get('beats_rf_morgan', '—')} / {row['n_targets']} | "
                         f"{row.get('beats_minimol_mlp', '—')} / {row['n_targets']} | {row['seconds']:.0f} |")
        for name, pub in PUBLISHED.items():
            cliff = f"{pub['rmse_cliff']:.3f}" if "rmse_cliff" in pub else ""
            lines.append(f"| {name} | {pub['rmse']:.3f} | {cliff} | | | | |")
        lines.append("")
    packaged = {n: r for n, r in report["sets"].items() if r["group"] == "packaged"}
    if packaged:
        lines += ["| set | metric | method | mean ± std | per seed | / RF-Morgan | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in packaged.items():
            metric = r["info"]["metric"]
            ref = r["methods"].get("rf_morgan", {}).get(metric, {}).get("mean")
            for m in methods:
                if m not in r["methods"]:
                    continue
                d = r["methods"][m]
                ratio = f"{d[metric]['mean'] / ref:.3f}" if ref else ""
                seeds = ", ".join(f"{p[metric]:.3f}" for p in d["per_seed"])
                lines.append(f"| {name} | {metric} | {LABEL[m]} | {_ms(d, metric)} | {seeds} | {ratio} | "
                             f"{d['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="moleculeace," + ",".join(pdata.PACKAGED),
                        help="moleculeace and/or packaged card names")
    parser.add_argument("--targets", default=None, help="MoleculeACE target tags (default: all 30)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=None, help=f"comma-separated, from {','.join(ALL)} (default: all "
                        "that can run: chemprop when found, molwm_base with --molwm-from)")
    parser.add_argument("--molwm-from", default=None, help="pretrained model URI, e.g. molwm:base")
    parser.add_argument("--chemprop", default=None, help="chemprop executable (default: $CHEMPROP or PATH)")
    parser.add_argument("--split-file", default=None, help="split.json of source rows for the packaged sets "
                        "('{dataset}' replaced); default: scaffold by seed as configs/finetune/<set>.yaml")
    parser.add_argument("--quick", action="store_true", help="2 small targets + FreeSolv, seed 0, small models")
    parser.add_argument("--resume", action="store_true", help="keep the (set, method) figures already in --out")
    parser.add_argument("--out", default="outputs/bench/property.json")
    parser.add_argument("--work", default=None, help="cards, split files, checkpoints (default: beside --out)")
    parser.add_argument("--feature-cache", default=None,
                        help="features by SMILES across runs (default: $MOLWM_CACHE/bench-features)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="keep a seeded share of each seed's training rows (the same rows for every method; "
                             "validation and test unchanged): label efficiency")
    parser.add_argument("--merge", default=None, help="comma-separated result JSONs to combine into --out "
                        "(nothing is run)")
    parser.add_argument("overrides", nargs="*", help="FinetuneConfig overrides for the molwm rows, e.g. epochs=30")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        report = merge(args.merge.split(","), args.targets.split(",") if args.targets else None)
        out_path.write_text(json.dumps(report, indent=1))
        print(tables(report) + f"\n\nwrote {out_path}")
        return
    args.work = args.work or str(out_path.parent / f"{out_path.stem}-work")
    cache = args.feature_cache or os.path.join(os.environ.get("MOLWM_CACHE", os.path.expanduser("~/.cache/molwm")),
                                               "bench-features")
    store = pm.FeatureStore(Path(cache))
    seeds = [0] if args.quick and args.seeds == "0,1,2" else [int(x) for x in args.seeds.split(",")]
    set_names = args.sets.split(",")
    if args.quick and args.sets == parser.get_default("sets"):
        set_names = ["moleculeace", "freesolv"]
    targets = args.targets.split(",") if args.targets else (QUICK_TARGETS if args.quick else None)
    chemprop_bin = args.chemprop or os.environ.get("CHEMPROP") or shutil.which("chemprop")
    if args.methods:
        methods = args.methods.split(",")
        unknown = set(methods) - set(ALL)
        if unknown:
            parser.error(f"unknown methods {sorted(unknown)}; choose from {ALL}")
        if {"molwm_base", "molwm_stack"} & set(methods) and not args.molwm_from:
            parser.error("molwm_base and molwm_stack need --molwm-from")
        if "chemprop" in methods and not chemprop_bin:
            parser.error("chemprop asked for but no chemprop command found (--chemprop, $CHEMPROP or PATH)")
    else:
        methods = CLASSICAL + (["chemprop"] if chemprop_bin else []) + (["molwm_base"] if args.molwm_from else []) \
            + ["molwm_scratch"]
    print(f"methods {methods}; seeds {seeds}; chemprop: {chemprop_bin or 'not found, skipped'}", flush=True)
    scratch_encoder = pmw.encoder_config(args.molwm_from) if args.molwm_from and "molwm_scratch" in methods else None

    report = json.loads(out_path.read_text()) if args.resume and out_path.is_file() else {"sets": {}}
    report["config"] = {"sets": set_names, "targets": targets, "seeds": seeds, "methods": methods,
                        "molwm_from": args.molwm_from, "overrides": args.overrides, "quick": args.quick,
                        "chemprop": chemprop_bin, "split_file": args.split_file, "threads": args.threads,
                        "train_fraction": args.train_fraction,
                        "command": " ".join(sys.argv), "machine": platform.platform(),
                        "torch": torch.__version__}
    report["published"] = PUBLISHED
    t_start = time.perf_counter()
    bench_sets = []
    if "moleculeace" in set_names:
        bench_sets += pdata.moleculeace_sets(targets, seeds, Path(args.work))
    bench_sets += [pdata.packaged_set(n, seeds, args.split_file) for n in set_names if n != "moleculeace"]
    if args.train_fraction < 1.0:  # the fine-tunes' own subsampling, so every method sees the same rows
        from molwm.train.finetune import subsample_train

        for s in bench_sets:
            s.splits = [subsample_train(sp, args.train_fraction, seed) for sp, seed in zip(s.splits, s.seeds)]
    for s in bench_sets:
        entry = report["sets"].setdefault(s.name, {"group": s.group, "methods": {}})
        entry.update(info=pdata.describe(s), rows_digest=pdata.splits_digest(s))
    for m in methods:  # method by method: the fast ones finish on every set first
        for s in bench_sets:
            entry = report["sets"][s.name]
            if m in entry["methods"]:
                continue
            try:
                if m == "molwm_stack":  # one run gives the stack's row and each member's
                    rows = run_stack(s, args)
                    entry["methods"].update(rows)
                    r = rows[m]
                else:
                    entry["methods"][m] = r = run_method(m, s, args, store, chemprop_bin, scratch_encoder)
            except Exception as err:  # noqa: BLE001 - one failed method is reported, the others still run
                print(f"  {s.name:<20} {m:<14} FAILED: {err}", flush=True)
                continue
            key = s.metric
            cliff = f"  cliff {_ms(r, 'rmse_cliff')}" if "rmse_cliff" in r else ""
            print(f"  {s.name:<20} {m:<14} {key} {_ms(r, key)}{cliff}  ({r['seconds']:.0f} s, "
                  f"{r['cpu_seconds']:.0f} CPU s)", flush=True)
            report["summary"] = {"moleculeace": moleculeace_summary(report["sets"], methods)}
            report["feature_seconds"] = store.seconds
            out_path.write_text(json.dumps(report, indent=1))
    report["summary"] = {"moleculeace": moleculeace_summary(report["sets"], methods)}
    report["feature_seconds"] = store.seconds
    report["seconds"] = time.perf_counter() - t_start
    out_path.write_text(json.dumps(report, indent=1))
    print("\n" + tables(report))
    print(f"\nfeature seconds (computed this run; cached after): "
          f"{ {k: round(v) for k, v in store.seconds.items()} }; total {report['seconds']:.0f} s; wrote {out_path}")


if __name__ == "__main__":
    main()
