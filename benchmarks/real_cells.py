"""Real cells: the world model on LINCS Cell Painting batch 2 relative cell counts, beside honest baselines.

    python benchmarks/real_cells.py lincs [--seeds 0,1,2] [--steps 600] [--dataset lincs_cellpainting_batch2_compact]
        [--methods scratch,base,raw] [--lines A549,MCF7,U2OS] [--out outputs/bench/real_cells]

State = relative cell count of a (compound, nominal dose, cell line) condition (well count / median of the
plate's DMSO wells, median of the five replicate plates) at 6, 24 and 48 h; 1 at 0 h by definition.
Compounds are split by Bemis-Murcko scaffold per seed: 70% train, 10% validation, 20% test. Every method
trains on the training compounds, every interval is calibrated on the validation compounds (split
conformal: the 90% quantile of |residual| per target time, the same rule for every method), every figure
is on the test compounds. Tasks:

* ``new``: held-out compounds' response at every (line, time, dose) from untreated cells (cutoff 0 h);
* ``forecast``: held-out compounds' 24 h and 48 h response given their own 6 h measurement;
* ``line``: train on two cell lines (all compounds), predict the third line's response (one run per line
  and seed; the held-out line is unknown to the model: its context is "unknown", compounds are known).

Methods: ``mean`` (per line x time x dose of the training compounds; for ``line``, per time x dose of the
other lines), ``persistence`` (the last observed value: 1 at 0 h, the 6 h value for ``forecast``),
``additive`` (the compound's mean residual where it was seen + the means; equals ``mean`` in ``new``),
``rf`` and ``gbm`` (RandomForest / HistGradientBoosting on Morgan + RDKit 2D + log dose + time + line, plus
the 6 h value for ``forecast`` and the compound's other-line response for ``line``), and molwm's world
model: ``scratch`` (JEPA, Morgan + RDKit 2D compound features), ``base`` (JEPA, ``molwm:base`` embeddings)
and ``raw`` (the raw-space forecaster, Morgan + RDKit 2D). Metrics: RMSE (relative count), Spearman of
compound potency rankings within each (line, time, dose), averaged over groups; coverage of the calibrated
90% intervals; direction accuracy: the share of test rows where "kill" (relative count < 0.7) is called
right. A JSON and a Markdown table go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

KILL = 0.7
"""Relative cell count under which a condition counts as killing cells (30% fewer cells than DMSO)."""
TIMES = (6.0, 24.0, 48.0)


def _rows(courses, conds: np.ndarray, times=TIMES) -> pd.DataFrame:
    """One row per (condition, time) observed, for treated conditions in ``conds``."""
    out = []
    for t in times:
        slot = TIMES.index(t) + 1  # molwm.world.lincs.lincs_courses: slots at 0, 6, 24, 48 h
        y = courses.obs[conds, slot, 0]
        y6 = courses.obs[conds, 1, 0]
        out.append(pd.DataFrame({"cond": conds, "drug": courses.drug[conds], "dose": courses.dose[conds],
                                 "line": courses.context[conds], "time": t, "y": y, "y6": y6}))
    frame = pd.concat(out, ignore_index=True)
    return frame[np.isfinite(frame["y"]) & (frame["drug"] >= 0)].reset_index(drop=True)


def _group_mean(train: pd.DataFrame, test: pd.DataFrame, keys) -> np.ndarray:
    means = train.groupby(keys)["y"].mean()
    glob = train["y"].mean()
    return test.set_index(keys).index.map(lambda k: means.get(k, glob)).to_numpy(float)


def _additive(train: pd.DataFrame, test: pd.DataFrame, keys, effect_rows: pd.DataFrame) -> np.ndarray:
    """Means per ``keys`` + each compound's mean residual in ``effect_rows`` (0 where it has none)."""
    base = _group_mean(train, test, keys)
    resid = effect_rows["y"].to_numpy() - _group_mean(train, effect_rows, keys)
    effect = pd.Series(resid).groupby(effect_rows["drug"].to_numpy()).mean()
    return base + test["drug"].map(effect).fillna(0.0).to_numpy()


def _features(rows: pd.DataFrame, comp: np.ndarray, n_lines: int, extra: list[str]) -> np.ndarray:
    onehot = np.eye(n_lines)[rows["line"].to_numpy()] if n_lines else np.zeros((len(rows), 0))
    dose = np.log10(rows["dose"].to_numpy())[:, None]
    return np.hstack([np.nan_to_num(comp[rows["drug"].to_numpy()]), dose, rows[["time"]].to_numpy(), onehot,
                      rows[extra].to_numpy()])


def _trees(train, evals, comp, n_lines, extra, seed):
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    x = _features(train, comp, n_lines, extra)
    out = {}
    for name, model in (("rf", RandomForestRegressor(n_estimators=200, min_samples_leaf=3, max_features=0.3,
                                                     n_jobs=1, random_state=seed)),
                        ("gbm", HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=seed))):
        model.fit(x, train["y"].to_numpy())
        out[name] = [model.predict(_features(e, comp, n_lines, extra)) for e in evals]
    return out


def metrics(rows: pd.DataFrame, pred: np.ndarray, val_rows: pd.DataFrame, val_pred: np.ndarray) -> dict:
    """RMSE (all, 24 h, 48 h), Spearman within (line, time, dose), 90% coverage (split conformal on the
    validation rows per time), direction accuracy."""
    y = rows["y"].to_numpy()
    err = pred - y
    out = {"rmse": float(np.sqrt(np.mean(err ** 2))), "n": int(len(y))}
    for t in (6.0, 24.0, 48.0):
        m = rows["time"].to_numpy() == t
        if m.any():
            out[f"rmse_{int(t)}h"] = float(np.sqrt(np.mean(err[m] ** 2)))
    rhos = []
    for _, g in rows.assign(p=pred).groupby(["line", "time", "dose"]):
        if len(g) > 4 and g["y"].std() > 0 and np.std(g["p"]) > 0:
            rhos.append(spearmanr(g["p"], g["y"]).statistic)
    out["spearman"] = float(np.mean(rhos)) if rhos else float("nan")
    covered = np.zeros(len(y), bool)
    for t in np.unique(rows["time"]):
        m, v = rows["time"].to_numpy() == t, val_rows["time"].to_numpy() == t
        resid = np.abs(val_pred[v] - val_rows["y"].to_numpy()[v])
        q = np.quantile(resid, min(1.0, 0.9 * (1 + 1 / max(len(resid), 1)))) if len(resid) else np.inf
        covered[m] = np.abs(err[m]) <= q
    out["coverage90"] = float(covered.mean())
    out["direction"] = float(((pred < KILL) == (y < KILL)).mean())
    return out


def _world(courses, args, seed, method, out_dir, holdout=(), holdout_contexts=()):
    from molwm.world.model import WorldNetConfig
    from molwm.world.run import run_world
    from molwm.world.train import WorldConfig, WorldDataConfig

    compound = "graph:molwm:base" if method == "base" else "morgan+rdkit2d"
    cfg = WorldConfig(objective="raw" if method == "raw" else "jepa",
                      data=WorldDataConfig(source="lincs", compound=compound, split="names" if holdout else "none",
                                           holdout=list(holdout), holdout_contexts=list(holdout_contexts), seed=seed),
                      model=WorldNetConfig(dim=64, history=1, ensemble=3), max_steps=args.steps, batch_size=128,
                      warmup_steps=min(100, args.steps // 5), seed=seed, out_dir=str(out_dir), log_every=100,
                      health_every=10_000, checkpoint_every=100_000)
    t = time.time()
    result = run_world(cfg, progress=False, courses=courses)
    from molwm.world.forecast import WorldForecaster

    return WorldForecaster.load(result.checkpoint), result.build, time.time() - t


def _world_predict(fc, build, rows: pd.DataFrame, cutoff: float, identity: bool, unknown_context: bool):
    import torch

    from molwm.world.evaluate import forecast_from_cutoff

    pos = {c: i for i, c in enumerate(build.test_rows)}
    data = build.test
    if unknown_context:
        data.action.context = torch.full_like(data.action.context, len(build.courses.contexts))
    pred = np.full(len(rows), np.nan)
    for t in np.unique(rows["time"]):
        m = rows["time"].to_numpy() == t
        target = np.full(data.n, np.nan)
        idx = np.array([pos[c] for c in rows.loc[m, "cond"]])
        target[idx] = t
        f = forecast_from_cutoff(fc, data, cutoff, target, identity=identity)[:, 0]
        pred[m] = f[idx]
    return pred


def _scaffold_thirds(courses, seed):
    """Drug masks (train, val, test): 20% of scaffolds to test, then 1/8 of the rest to validation."""
    from molwm.world.prepare import drug_split

    from types import SimpleNamespace

    train, test = drug_split(courses, "scaffold", seed, 0.2)
    keep = np.flatnonzero(train)
    sub = SimpleNamespace(drugs=[courses.drugs[i] for i in keep], smiles=[courses.smiles[i] for i in keep])
    _, val_sub = drug_split(sub, "scaffold", seed + 1000, 0.125)
    val = np.zeros(len(courses.drugs), bool)
    val[keep[val_sub]] = True
    return train & ~val, val, test


def lincs(args) -> dict:
    from molwm.world.lincs import load_lincs
    from molwm.world.prepare import compound_features

    courses = load_lincs(args.dataset, args.data_dir)
    comp = compound_features(courses.smiles, "morgan+rdkit2d")
    comp = (comp - np.nanmean(comp, 0)) / (np.nanstd(comp, 0) + 1e-8)
    n_lines = len(courses.contexts)
    results: list[dict] = []
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]

    def record(task, seed, method, rows, pred, val_rows, val_pred, seconds=None, **extra):
        r = {"task": task, "seed": seed, "method": method, **metrics(rows, pred, val_rows, val_pred), **extra}
        if seconds is not None:
            r["seconds"] = round(seconds, 1)
        results.append(r)
        print(json.dumps(r), flush=True)

    treated = np.flatnonzero(courses.drug >= 0)
    for seed in args.seeds:
        tr_d, va_d, te_d = _scaffold_thirds(courses, seed)
        conds = {k: treated[m[courses.drug[treated]]] for k, m in (("train", tr_d), ("val", va_d), ("test", te_d))}
        rows = {k: _rows(courses, v) for k, v in conds.items()}
        late = {k: r[r["time"] > 6].reset_index(drop=True) for k, r in rows.items()}
        keys = ["line", "time", "dose"]
        for task, ev, cutoff in (("new", rows, 0.0), ("forecast", late, 6.0)):
            val, test = ev["val"], ev["test"]
            record(task, seed, "mean", test, _group_mean(rows["train"], test, keys), val,
                   _group_mean(rows["train"], val, keys))
            if task == "new":
                record(task, seed, "persistence", test, np.ones(len(test)), val, np.ones(len(val)))
            else:
                record(task, seed, "persistence", test, test["y6"].to_numpy(), val, val["y6"].to_numpy())
                six = {k: r[r["time"] == 6].reset_index(drop=True) for k, r in rows.items()}
                record(task, seed, "additive", test, _additive(rows["train"], test, keys, six["test"]), val,
                       _additive(rows["train"], val, keys, six["val"]))
            extra = ["y6"] if task == "forecast" else []
            trees = _trees(ev["train"], [test, val], comp, n_lines, extra, seed)
            for name, (p_test, p_val) in trees.items():
                record(task, seed, name, test, p_test, val, p_val)
        holdout = [courses.drugs[i] for i in np.flatnonzero(va_d | te_d)]
        for method in methods:
            fc, build, sec = _world(courses, args, seed, method, out / f"seed{seed}-{method}", holdout=holdout)
            for task, ev, cutoff in (("new", rows, 0.0), ("forecast", late, 6.0)):
                p_test = _world_predict(fc, build, ev["test"], cutoff, False, False)
                p_val = _world_predict(fc, build, ev["val"], cutoff, False, False)
                record(task, seed, method, ev["test"], p_test, ev["val"], p_val, sec if task == "new" else None)
    # a new cell line: train on two lines (every compound), predict the third
    for seed in args.line_seeds:
        tr_d, va_d, te_d = _scaffold_thirds(courses, seed)
        for line in args.lines:
            li = courses.contexts.index(line)
            others = treated[courses.context[treated] != li]
            held = treated[courses.context[treated] == li]
            # validation: the held-out line's validation compounds; test: its test and training compounds
            val_c = held[va_d[courses.drug[held]]]
            test_c = held[~va_d[courses.drug[held]]]
            train_rows, val, test = _rows(courses, others), _rows(courses, val_c), _rows(courses, test_c)
            other_mean = train_rows.groupby(["drug", "time", "dose"])["y"].mean()
            for r in (train_rows, val, test):
                r["other"] = r.set_index(["drug", "time", "dose"]).index.map(other_mean).to_numpy(float)
            keys = ["time", "dose"]
            record("line", seed, "mean", test, _group_mean(train_rows, test, keys), val,
                   _group_mean(train_rows, val, keys), line=line)
            record("line", seed, "additive", test, _additive(train_rows, test, keys, train_rows), val,
                   _additive(train_rows, val, keys, train_rows), line=line)
            record("line", seed, "persistence", test, np.ones(len(test)), val, np.ones(len(val)), line=line)
            trees = _trees(train_rows, [test, val], comp, 0, ["other"], seed)
            for name, (p_test, p_val) in trees.items():
                record("line", seed, name, test, p_test, val, p_val, line=line)
            for method in [m for m in methods if m in args.line_methods.split(",")]:
                fc, build, sec = _world(courses, args, seed, method, out / f"line-{line}-seed{seed}-{method}",
                                        holdout_contexts=[line])
                record("line", seed, method, test, _world_predict(fc, build, test, 0.0, True, True), val,
                       _world_predict(fc, build, val, 0.0, True, True), sec, line=line)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lincs.json").write_text(json.dumps(results, indent=1))
    table = summarise(pd.DataFrame(results))
    (out / "lincs.md").write_text(table)
    print(table)
    return {"results": results}


def summarise(frame: pd.DataFrame) -> str:
    """Mean ± std over seeds (and lines) per task and method, as a Markdown table."""
    cols = ["rmse", "rmse_24h", "rmse_48h", "spearman", "coverage90", "direction"]
    lines = []
    for task, g in frame.groupby("task", sort=False):
        lines += [f"\n### {task} ({g['seed'].nunique()} seeds" + (f", lines {', '.join(sorted(g['line'].dropna().unique()))}"
                                                                  if "line" in g and g["line"].notna().any() else "")
                  + ")\n", "| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, m in g.groupby("method", sort=False):
            cells = []
            for c in cols:
                v = m[c].dropna() if c in m else pd.Series(dtype=float)
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=0):.3f}" if len(v) else "")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("set", choices=["lincs"])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--line-seeds", default="0")
    p.add_argument("--lines", default="A549,MCF7,U2OS")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--methods", default="scratch,base,raw")
    p.add_argument("--line-methods", default="scratch")
    p.add_argument("--dataset", default="lincs_cellpainting_batch2_compact")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="outputs/bench/real_cells")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.line_seeds = [int(s) for s in args.line_seeds.split(",") if s]
    args.lines = [s for s in args.lines.split(",") if s]
    import torch

    torch.set_num_threads(1)
    lincs(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
