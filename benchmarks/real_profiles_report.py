"""The summary half of ``benchmarks/real_profiles_molwm.py``: every written part of a set collected into
results (JSON, Markdown) and a curve plot, with the scores that need every fold of a seed (class from
structure out of fold, consistency pooled over the folds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import real_profiles as rp  # the baselines' tables
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from molwm.atomic import write_text_atomic
from molwm.baselines import morgan_fingerprints
from molwm.evaluation.map_metrics import phenotypic_consistency


def class_rows(parts: dict, comp: pd.DataFrame, labels: set, seed: int, n_folds: int, fold_of: dict) -> list[dict]:
    """Out-of-fold macro-F1 per objective and molecule feature, beside RF on Morgan over the same folds."""
    c = comp[comp["label"].isin(labels)].reset_index(drop=True)
    y = c["label"].to_numpy()
    fold = c["compound_id"].map(fold_of).to_numpy()
    bits = dict(zip(c["compound_id"], morgan_fingerprints(list(c["smiles"]))))
    preds: dict[str, np.ndarray] = {}
    for k in range(n_folds):
        te, tr = fold == k, fold != k
        if not te.any():
            continue
        fp = np.stack([bits[i] for i in c["compound_id"]])
        if len(set(y[tr])) < 2:  # a tiny training fold with one class: every method predicts it
            for name in ["rf_morgan", *(f"molwm_{o}_{kind}" for o, part in parts.get(k, {}).items()
                                        for kind in part["features"])]:
                preds.setdefault(name, np.full(len(c), None, dtype=object))[te] = y[tr][0]
            continue
        rf = RandomForestClassifier(n_estimators=500, class_weight="balanced", n_jobs=1, random_state=seed)
        preds.setdefault("rf_morgan", np.full(len(c), None, dtype=object))[te] = rf.fit(fp[tr], y[tr]).predict(fp[te])
        for objective, part in parts.get(k, {}).items():
            for kind, table in part["features"].items():
                xtr = np.stack([table["train"][i] for i in c["compound_id"][tr]])
                xte = np.stack([table["test"][i] for i in c["compound_id"][te]])
                scaler = StandardScaler().fit(xtr)
                lr = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
                name = f"molwm_{objective}_{kind}"
                preds.setdefault(name, np.full(len(c), None, dtype=object))[te] = lr.fit(
                    scaler.transform(xtr), y[tr]).predict(scaler.transform(xte))
    out = []
    for m, pr in preds.items():
        if any(v is None for v in pr):  # a fold of this objective has not run yet
            continue
        out.append({"task": "classes", "seed": seed, "method": m, "n_compounds": len(c), "n_classes": len(set(y)),
                    "macro_f1": float(f1_score(y, pr.astype(str), average="macro", zero_division=0))})
    return out


def pooled_consistency(parts: dict, comp: pd.DataFrame, labels: set, seed: int, n_folds: int,
                       null_size: int) -> list[dict]:
    """Consistency mAP of every compound's consensus embedding, each from the fold model that held it out,
    pooled over the folds (the baselines' compound-level consistency, on the same labelled compounds)."""
    names: dict[str, dict] = {}
    for k in range(n_folds):
        for part in parts.get(k, {}).values():
            for name, table in part.get("consensus", {}).items():
                names.setdefault(name, {}).setdefault(k, table)
    lab = dict(zip(comp["compound_id"], comp["label"]))
    out = []
    for name, by_fold in names.items():
        if len(by_fold) < n_folds:  # a fold of this embedding has not been rescored yet
            continue
        table = {c: v for t in by_fold.values() for c, v in t.items() if lab.get(c) in labels}
        ids = sorted(table)
        x = np.asarray([table[c] for c in ids])
        sm = phenotypic_consistency(x, [lab[c] for c in ids], null_size=null_size)
        out.append({"task": "map", "seed": seed, "method": f"consistency_pooled_{name}", "dim": int(x.shape[1]),
                    "map": sm.map, "retrieved": sm.retrieved, "n_groups": sm.n_groups})
    return out


def plot_curves(rows: list[dict], path: Path) -> None:
    """MRR against cumulative training wall time, mean over (seed, fold) per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame([r for r in rows if r["task"] == "curve"])
    if frame.empty:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("mrr", "top5pct")):
        for method, g in frame.groupby("method"):
            m = g.groupby("step").agg(t=("train_seconds", "mean"), v=(metric, "mean"), s=(metric, "std")).reset_index()
            ax.errorbar(m["t"], m["v"], yerr=m["s"].fillna(0.0), marker="o", capsize=2, label=method)
        ax.set_xlabel("training wall time (s, one thread)")
        ax.set_ylabel(metric)
    axes[0].legend(fontsize=7)
    fig.suptitle("held-out retrieval from structure during pretraining (mean ± std over seeds and folds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise(out: Path, name: str, comp: pd.DataFrame, labels: set, n_folds: int, null_size: int = 1000) -> None:
    """Collect every part of ``name`` into results.json / results.md / curves.png."""
    rows, by_seed = [], {}
    for path in sorted((out / "parts").glob(f"{name}-s*-f*-*.json")):
        part = json.loads(path.read_text())
        seed, k, objective = path.stem.split("-", 3)[1:]
        seed, k = int(seed[1:]), int(k[1:])
        rows += part["rows"]
        by_seed.setdefault(seed, ({}, part["fold_of"]))[0].setdefault(k, {})[objective] = part
    for seed, (parts, fold_of) in sorted(by_seed.items()):
        rows += [{**r, "set": name} for r in class_rows(parts, comp, labels, seed, n_folds, fold_of)]
        rows += [{**r, "set": name} for r in pooled_consistency(parts, comp, labels, seed, n_folds, null_size)]
    if not rows:
        return
    # a fold's activity over fewer than 3 scorable groups (the LINCS plate: one well per condition) is not a
    # score, and a fold's own consistency (a few held-out compounds per class) gives way to the pooled one
    table = [r for r in rows if r["task"] != "curve" and not (r["task"] == "map" and (
        (r.get("n_groups") or 0) < 3 or (r["method"].startswith("consistency_") and "pooled" not in r["method"])))]
    summary = rp.summarise(table)
    counts = pd.DataFrame(table).groupby(["task", "method"]).size().rename("runs").reset_index()
    summary = summary.merge(counts, on=["task", "method"], how="left")
    write_text_atomic(out / f"{name}_results.json", json.dumps({"rows": rows, "summary": summary.to_dict("records")},
                                                               indent=1, default=float))
    write_text_atomic(out / f"{name}_results.md", rp.markdown(summary))
    plot_curves(rows, out / f"{name}_curves.png")
    print(rp.markdown(summary))
