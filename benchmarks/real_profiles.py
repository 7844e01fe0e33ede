"""Structure -> phenotype on real Cell Painting profiles: the baselines of issue 27 part 5.

    python benchmarks/real_profiles.py [--sets cell_injury,sq00015054] [--seeds 0,1,2] [--folds 5]
        [--null-size 10000] [--data-dir DIR] [--out outputs/bench/real_profiles]

Sets (the compact copies shipped in ``datasets/real_cells``, or with ``--raw`` the raw cards found through
``--data-dir`` / ``$MOLWM_DATA_MIRROR``): the cell-injury screen (3,199 U2OS wells, 112 compounds, 24 / 48 h,
352 features) and the LINCS plate SQ00015054 (384 A549 wells, 58 compounds x 6 doses, 454 features). The
features are used as published (normalised and feature-selected upstream). **The data are small** (112 and
58 compounds): every figure is a mean ± std over 3 seeds of 5-fold Bemis-Murcko scaffold cross-validation
(scaffold groups shuffled per seed and dealt to the emptiest fold, largest first), and differences of a
few points are within the noise.

Units. A *condition* is a compound at one dose (rounded to 3 significant figures) and one time; its profile
is the median of its replicate wells (on the cell-injury screen most conditions have one well, at most 28;
on SQ00015054 one or two). A compound's profile (for classes and consistency) is the median of its
treated wells over every dose and time.

Tasks:

* ``retrieval``: for the held-out compounds' conditions, predict each profile from the structure, log10
  dose and time alone, and rank the true profile among all held-out condition profiles by cosine
  similarity: top-1, top-5% (true profile within the first ceil(5% of the pool)) and mean reciprocal rank.
  Methods: ``ridge_morgan`` / ``ridge_rdkit2d`` (ridge from Morgan bits (r=2, 2048) or RDKit 2D descriptors,
  standardised on the training conditions, + log dose + time, to the 352 / 454 features; alpha from
  {0.1, 1, 10, 100, 1e3, 1e4} by the MRR of 3 inner scaffold folds of the training compounds, never the
  test fold), ``nn_tanimoto`` (copy the profile of the most Tanimoto-similar training compound at the
  same time, the nearest log dose) and ``chance`` (analytic: 1/n, ceil(0.05 n)/n, H_n/n).
* ``classes``: the compound's class from structure (cell injury: injury type; SQ00015054: MoA), classes
  with at least ``--min-class`` compounds (3 on cell injury: 10 of the 14 treated classes, 98 compounds;
  2 on SQ00015054: 5 MoAs of 2 compounds, indicative only), macro-F1 of the out-of-fold predictions pooled
  over the 5 folds, per seed: ``rf_morgan`` (random forest, 500 trees, balanced class weights), beside the
  "ceiling" from the compound's profile (``rf_profile``, ``logistic_profile``: its median over every
  treated well; ``*_strongest``: its strongest condition, the largest L2 norm) and ``chance`` (labels
  permuted).
* ``map``: copairs-style mAP of the raw features (molwm.evaluation.map_metrics, checked against copairs in
  tests/molwm/evaluation/test_map_metrics.py): phenotypic activity (each treated well retrieves the other wells
  of its condition, or of its compound at the same time, against all DMSO wells; FDR-corrected share
  retrieved at 0.05) and consistency (each compound's profile retrieves the compounds of its class against
  the others; the median profile, and the strongest condition's). No seeds: it does not depend on a split.

A JSON (every fold's numbers and the summary) and a Markdown table go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from molwm.atomic import write_text_atomic
from molwm.baselines import morgan_fingerprints, rdkit_descriptors
from molwm.data.profile_cards import load_profile_set
from molwm.data.splits import murcko_scaffold
from molwm.evaluation.map_metrics import consensus, phenotypic_activity, phenotypic_consistency

SETS = {"cell_injury": ("cell_injury_profiles_compact", "cell_injury_profiles", 3),
        "sq00015054": ("lincs_sq00015054_profiles_compact", "lincs_sq00015054_profiles", 2)}
"""Set -> (compact card, raw card, fewest compounds a class needs to be scored)."""
ALPHAS = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4)


# ---------------------------------------------------------------- data


def conditions(wells: pd.DataFrame, x: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Median profile per (compound, dose, time) of the treated wells. Returns the table and ``[C, F]``."""
    w = wells[~wells["is_control"]].copy()
    w["dose"] = [float(f"{d:.3g}") for d in w["dose_uM"]]
    w["row"] = np.flatnonzero(~wells["is_control"].to_numpy())
    rows, profiles = [], []
    for (cid, dose, t), g in w.groupby(["compound_id", "dose", "time_h"], sort=True):
        rows.append({"compound_id": cid, "smiles": g["smiles"].iloc[0], "dose": dose, "time_h": t,
                     "label": g["label"].iloc[0], "n_wells": len(g)})
        profiles.append(np.median(x[g["row"].to_numpy()], axis=0))
    return pd.DataFrame(rows), np.stack(profiles)


def scaffold_folds(smiles: list[str], n_folds: int, seed: int) -> np.ndarray:
    """Fold of each compound: scaffold groups shuffled by ``seed``, dealt largest first to the emptiest fold."""
    scaf = [murcko_scaffold(s) for s in smiles]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(scaf):
        groups.setdefault(s, []).append(i)
    keys = list(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    keys.sort(key=lambda k: -len(groups[k]))  # stable: ties keep the shuffled order
    fold, sizes = np.zeros(len(smiles), int), np.zeros(n_folds, int)
    for k in keys:
        f = int(np.argmin(sizes))
        fold[groups[k]] = f
        sizes[f] += len(groups[k])
    return fold


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto similarity of bit vectors. Shapes: a ``[n, B]``, b ``[m, B]``; returns ``[n, m]``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    inter = a @ b.T
    return inter / np.maximum(a.sum(1)[:, None] + b.sum(1)[None, :] - inter, 1e-12)


# ---------------------------------------------------------------- retrieval


def rank_scores(pred: np.ndarray, true: np.ndarray) -> dict:
    """Rank ``true[i]`` among all ``true`` for query ``pred[i]`` by cosine (ties against the query).

    Shapes:
        pred, true: ``[n, F]``.
    """
    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    sim = unit(pred) @ unit(true).T  # [n, n]
    rank = (sim > np.diag(sim)[:, None]).sum(1)
    n = len(true)
    k = max(1, math.ceil(0.05 * n))
    return {"top1": float((rank == 0).mean()), "top5pct": float((rank < k).mean()),
            "mrr": float((1.0 / (rank + 1)).mean()), "n": n}


def chance_scores(n: int) -> dict:
    k = max(1, math.ceil(0.05 * n))
    return {"top1": 1.0 / n, "top5pct": k / n, "mrr": sum(1.0 / r for r in range(1, n + 1)) / n, "n": n}


def design(comp: np.ndarray, cond: pd.DataFrame) -> np.ndarray:
    """Compound features of each condition + log10 dose + time / 24 h. Returns ``[C, D + 2]``."""
    return np.hstack([comp, np.log10(cond["dose"].to_numpy())[:, None], cond[["time_h"]].to_numpy() / 24.0])


def fit_ridge(xtr: np.ndarray, ytr: np.ndarray, alpha: float):
    scaler = StandardScaler().fit(xtr)
    model = Ridge(alpha=alpha).fit(scaler.transform(xtr), ytr)
    return lambda x: model.predict(scaler.transform(x))


def choose_alpha(x: np.ndarray, y: np.ndarray, cond: pd.DataFrame, seed: int) -> float:
    """Alpha with the best mean MRR over 3 inner scaffold folds of the training compounds."""
    cids = sorted(set(cond["compound_id"]))
    smi = cond.drop_duplicates("compound_id").set_index("compound_id").loc[cids, "smiles"].tolist()
    inner = dict(zip(cids, scaffold_folds(smi, 3, seed + 1000)))
    f = cond["compound_id"].map(inner).to_numpy()
    best, best_mrr = ALPHAS[0], -1.0
    for alpha in ALPHAS:
        mrrs = [rank_scores(fit_ridge(x[f != k], y[f != k], alpha)(x[f == k]), y[f == k])["mrr"]
                for k in range(3) if (f == k).sum() > 1 and (f != k).any()]
        if mrrs and np.mean(mrrs) > best_mrr:
            best, best_mrr = alpha, float(np.mean(mrrs))
    return best


def nn_profiles(cond: pd.DataFrame, y: np.ndarray, bits: dict, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
    """Each test condition gets the profile of its most Tanimoto-similar training compound (same time if it
    was measured then, nearest log dose)."""
    train = cond[tr]
    train_ids = sorted(set(train["compound_id"]))
    fps = np.stack([bits[c] for c in train_ids])
    out = []
    for _, r in cond[te].iterrows():
        sim = tanimoto(bits[r["compound_id"]][None], fps)[0]
        cands = train[train["compound_id"] == train_ids[int(np.argmax(sim))]]
        same = cands[cands["time_h"] == r["time_h"]]
        cands = same if len(same) else cands
        j = (np.log10(cands["dose"]) - np.log10(r["dose"])).abs().idxmin()
        out.append(y[cond.index.get_loc(j)])
    return np.stack(out)


def retrieval(cond, y, comp_feats: dict, bits: dict, fold_of: dict, seed: int) -> list[dict]:
    folds = cond["compound_id"].map(fold_of).to_numpy()
    rows = []
    for k in sorted(set(folds)):
        te, tr = folds == k, folds != k
        if te.sum() < 2:
            continue
        base = {"task": "retrieval", "seed": seed, "fold": int(k)}
        for name, comp in comp_feats.items():
            x = design(np.stack([comp[c] for c in cond["compound_id"]]), cond)
            alpha = choose_alpha(x[tr], y[tr], cond[tr].reset_index(drop=True), seed)
            pred = fit_ridge(x[tr], y[tr], alpha)(x[te])
            rows.append({**base, "method": f"ridge_{name}", "alpha": alpha, **rank_scores(pred, y[te])})
        rows.append({**base, "method": "nn_tanimoto", **rank_scores(nn_profiles(cond, y, bits, tr, te), y[te])})
        rows.append({**base, "method": "chance", **chance_scores(int(te.sum()))})
    return rows


# ---------------------------------------------------------------- classes and mAP


def compound_table(wells: pd.DataFrame, x: np.ndarray, cond: pd.DataFrame, y: np.ndarray):
    """One row per treated compound (SMILES, label), its median profile over every treated well, and its
    strongest condition's profile (the largest L2 norm: usually the top dose, where the phenotype shows).

    Returns:
        ``(table, median [K, F], strongest [K, F])``.
    """
    treated = wells[~wells["is_control"]]
    ids, prof = consensus(x[~wells["is_control"].to_numpy()], treated["compound_id"].to_numpy())
    first = treated.drop_duplicates("compound_id").set_index("compound_id").loc[list(ids)]
    norm = np.linalg.norm(y, axis=1)
    strongest = np.stack([y[np.flatnonzero(cond["compound_id"].to_numpy() == c)[np.argmax(
        norm[cond["compound_id"].to_numpy() == c])]] for c in ids])
    return pd.DataFrame({"compound_id": ids, "smiles": first["smiles"].to_numpy(),
                         "label": first["label"].to_numpy()}), prof, strongest


def classes(comp: pd.DataFrame, prof: np.ndarray, bits: dict, min_class: int, n_folds: int, seed: int,
            strongest: np.ndarray | None = None) -> list[dict]:
    counts = comp["label"].value_counts()
    keep = comp["label"].isin(counts[(counts >= min_class)].index) & (comp["label"] != "")
    c, p = comp[keep].reset_index(drop=True), prof[keep.to_numpy()]
    ps = (strongest if strongest is not None else prof)[keep.to_numpy()]
    y = c["label"].to_numpy()
    if len(set(y)) < 2 or len(c) < n_folds:  # a quick run on a few compounds may leave nothing to classify
        return []
    fold = scaffold_folds(c["smiles"].tolist(), n_folds, seed)
    fp = np.stack([bits[i] for i in c["compound_id"]])
    preds = {m: np.empty(len(c), dtype=object) for m in ("rf_morgan", "rf_profile", "logistic_profile",
                                                         "rf_profile_strongest", "logistic_profile_strongest")}
    for k in range(n_folds):
        te, tr = fold == k, fold != k
        if not te.any():
            continue
        if len(set(y[tr])) < 2:  # a tiny training fold with one class: every method predicts it
            for m in preds:
                preds[m][te] = y[tr][0]
            continue
        rf = dict(n_estimators=500, class_weight="balanced", n_jobs=1, random_state=seed)
        preds["rf_morgan"][te] = RandomForestClassifier(**rf).fit(fp[tr], y[tr]).predict(fp[te])
        preds["rf_profile"][te] = RandomForestClassifier(**rf).fit(p[tr], y[tr]).predict(p[te])
        preds["rf_profile_strongest"][te] = RandomForestClassifier(**rf).fit(ps[tr], y[tr]).predict(ps[te])
        for name, q in (("logistic_profile", p), ("logistic_profile_strongest", ps)):
            scaler = StandardScaler().fit(q[tr])
            lr = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
            preds[name][te] = lr.fit(scaler.transform(q[tr]), y[tr]).predict(scaler.transform(q[te]))
    preds["chance"] = np.random.default_rng(seed).permutation(y)
    base = {"task": "classes", "seed": seed, "n_compounds": len(c), "n_classes": int(len(set(y)))}
    return [{**base, "method": m, "macro_f1": float(f1_score(y, pr.astype(str), average="macro", zero_division=0))}
            for m, pr in preds.items()]


def map_rows(wells: pd.DataFrame, x: np.ndarray, comp: pd.DataFrame, prof: np.ndarray, strongest: np.ndarray,
             null_size: int) -> list[dict]:
    ctl = wells["is_control"].to_numpy()
    dose = [f"{d:.3g}" for d in wells["dose_uM"]]
    rows = []
    for name, group in (("condition", wells["compound_id"] + "|" + pd.Series(dose) + "|" + wells["time_h"].astype(str)),
                        ("compound_time", wells["compound_id"] + "|" + wells["time_h"].astype(str))):
        s = phenotypic_activity(x, group.to_numpy(), ctl, null_size=null_size)
        rows.append({"task": "map", "method": f"activity_{name}", "map": s.map, "retrieved": s.retrieved,
                     "n_groups": s.n_groups})
    labelled = (comp["label"] != "").to_numpy()
    for name, p in (("consistency_class", prof), ("consistency_class_strongest", strongest)):
        s = phenotypic_consistency(p[labelled], comp["label"].to_numpy()[labelled], null_size=null_size)
        rows.append({"task": "map", "method": name, "map": s.map, "retrieved": s.retrieved, "n_groups": s.n_groups})
    return rows


# ---------------------------------------------------------------- driver


def run_set(name: str, args) -> list[dict]:
    compact, raw, min_class = SETS[name]
    data = load_profile_set(raw if args.raw else compact, data_dir=args.data_dir)
    wells, x = data.wells.reset_index(drop=True), data.features.astype(np.float64)
    if args.max_compounds:  # a quick run: the first compounds by id, and every DMSO well
        keep_ids = sorted(set(wells.loc[~wells["is_control"], "compound_id"]))[:args.max_compounds]
        m = (wells["is_control"] | wells["compound_id"].isin(keep_ids)).to_numpy()
        wells, x = wells[m].reset_index(drop=True), x[m]
    cond, y = conditions(wells, x)
    comp, prof, strongest = compound_table(wells, x, cond, y)
    smiles = dict(zip(comp["compound_id"], comp["smiles"]))
    ids = list(comp["compound_id"])
    fp = morgan_fingerprints([smiles[c] for c in ids])
    desc = rdkit_descriptors([smiles[c] for c in ids]).astype(np.float64)
    desc = np.where(np.isfinite(desc), desc, np.nanmedian(np.where(np.isfinite(desc), desc, np.nan), axis=0))
    desc = np.nan_to_num(np.clip(desc, -1e6, 1e6))
    bits = dict(zip(ids, fp))
    feats = {"morgan": dict(zip(ids, fp.astype(np.float64))), "rdkit2d": dict(zip(ids, desc))}
    rows = []
    for seed in args.seeds:
        t0 = time.time()
        fold_of = dict(zip(ids, scaffold_folds([smiles[c] for c in ids], args.folds, seed)))
        rows += retrieval(cond, y, feats, bits, fold_of, seed)
        rows += classes(comp, prof, bits, min_class, args.folds, seed, strongest)
        print(f"[{name}] seed {seed}: {time.time() - t0:.0f} s", flush=True)
    rows += map_rows(wells, x, comp, prof, strongest, args.null_size)
    for r in rows:
        r.update(set=name, n_wells=len(wells), n_conditions=len(cond))
    return rows


def summarise(rows: list[dict]) -> pd.DataFrame:
    """Mean ± std over seeds (retrieval: of the per-seed means over folds)."""
    frame = pd.DataFrame(rows)
    out = []
    for (s, task, method), g in frame.groupby(["set", "task", "method"], sort=False):
        metrics = {"retrieval": ("top1", "top5pct", "mrr"), "classes": ("macro_f1",),
                   "map": ("map", "retrieved")}[task]
        per_seed = g.groupby("seed")[list(metrics)].mean() if "seed" in g and g["seed"].notna().any() else g[list(metrics)]
        row = {"set": s, "task": task, "method": method}
        for m in metrics:
            row[m] = f"{per_seed[m].mean():.3f} ± {per_seed[m].std(ddof=0):.3f}" if len(per_seed) > 1 else f"{per_seed[m].mean():.3f}"
        for extra in ("n", "n_compounds", "n_classes", "n_groups"):
            if extra in g and g[extra].notna().any():
                row[extra] = int(g[extra].mean()) if extra != "n" else f"{g[extra].mean():.1f}"
        out.append(row)
    return pd.DataFrame(out)


def markdown(summary: pd.DataFrame) -> str:
    """One Markdown table per (set, task)."""
    parts = []
    for (s, task), g in summary.groupby(["set", "task"], sort=False):
        g = g.drop(columns=["set", "task"]).dropna(axis=1, how="all")
        lines = ["| " + " | ".join(g.columns) + " |", "|" + "---|" * len(g.columns)]
        lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in g.itertuples(index=False)]
        parts.append(f"### {s}: {task}\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="cell_injury,sq00015054")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--null-size", type=int, default=10000)
    p.add_argument("--max-compounds", type=int, default=0, help="a quick run on the first N compounds")
    p.add_argument("--raw", action="store_true", help="read the raw cards (a mirror folder) instead of the compact copies")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="outputs/bench/real_profiles")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    t0 = time.time()
    rows = []
    for name in args.sets.split(","):
        rows += run_set(name, args)
    summary = summarise(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(["python", "benchmarks/real_profiles.py", *(argv if argv is not None else sys.argv[1:])]),
            "seconds": round(time.time() - t0, 1)}
    write_text_atomic(out / "results.json", json.dumps({**meta, "rows": rows, "summary": summary.to_dict("records")},
                                                       indent=1, default=float))
    write_text_atomic(out / "results.md", markdown(summary))
    print(markdown(summary))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
