"""World-model benchmarks: thunor forecasts against baselines, synthetic-lab k-steps-ahead and planning.

thunor (needs the optional package thunor; RMSE of log count at each well's last time point)::

    python benchmarks/world.py thunor [--folds 9] [--steps 1000] [--cutoff 24] [--late-cutoff 72]

* leave-drugs-out: each fold trains a world model on the other drugs' wells and every
  control (full courses), then forecasts the held-out drugs' wells from what they showed up
  to ``--cutoff`` hours; the baselines of ``benchmarks/thunor_baselines.py`` run on the
  same folds in the same process, and the table gives the model / baseline ratios.
* late-times: one model trained on every well up to ``--late-cutoff`` hours, forecasting each
  well's last point from the cutoff (drug identities known), against persistence, the
  per-cell-line growth curve and the per-drug Hill fit of growth rates.

Synthetic lab (a lab made with several ``--times``; see ``lab`` below)::

    python benchmarks/world.py lab --lab LAB [--steps 2000] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molwm.world.baselines import (control_growth, hill_rate, last_observed, leave_drugs_out_folds,
                                   mean_growth, persistence, rmse)


def _world(courses, args, out_dir: str, **data):
    from molwm.world.forecast import WorldForecaster
    from molwm.world.model import WorldNetConfig
    from molwm.world.run import run_world
    from molwm.world.train import WorldConfig, WorldDataConfig

    cfg = WorldConfig(objective=args.objective, data=WorldDataConfig(source="thunor", compound=args.compound, **data),
                      model=WorldNetConfig(history=args.history, ensemble=args.ensemble),
                      max_steps=args.steps, forecast_step_h=args.step_h, seed=args.seed, out_dir=out_dir,
                      log_every=100, health_every=500, checkpoint_every=10_000)
    t = time.time()
    result = run_world(cfg, progress=False, courses=courses)
    return result, WorldForecaster.load(result.checkpoint), time.time() - t


def thunor(args) -> dict:
    from molwm.world.evaluate import forecast_from_cutoff
    from molwm.world.thunor import load_thunor

    courses = load_thunor()
    obs, ok, target = last_observed(courses)
    names = ["world_model", "persistence", "mean_growth", "control_growth"]
    pred = {n: np.full(courses.n, np.nan) for n in names}
    folds = leave_drugs_out_folds(courses, args.folds, args.split_seed)
    seconds = []
    for f, (tr, te) in enumerate(folds):
        result, fc, sec = _world(courses, args, f"{args.out_dir}/fold{f}", split="folds", n_folds=args.folds,
                                 fold=f, seed=args.split_seed)
        assert np.array_equal(np.sort(result.build.test_rows), np.sort(te)), "fold mismatch"
        seconds.append(sec)
        train_c, test_c = courses.subset(tr), courses.subset(te)
        pred["world_model"][te] = forecast_from_cutoff(fc, result.build.test, args.cutoff, target[te])[:, 0]
        for n, fn in [("persistence", persistence), ("mean_growth", mean_growth), ("control_growth", control_growth)]:
            pred[n][te] = fn(train_c, test_c, args.cutoff, target[te])
        r = {n: rmse(pred[n][te], obs[te])[0] for n in names}
        print(f"fold {f}: {sec:.0f} s  " + "  ".join(f"{n} {v:.3f}" for n, v in r.items()), flush=True)
    keep = (courses.drug >= 0) & ok & (target > args.cutoff)
    lodo = {n: rmse(p[keep], obs[keep]) for n, p in pred.items()}
    # late times: one model on every well up to the late cutoff
    keep_l = ok & (target > args.late_cutoff)
    result, fc, sec = _world(courses, args, f"{args.out_dir}/late", split="none", max_time_h=args.late_cutoff)
    train, test = courses.until(args.late_cutoff), courses.subset(np.flatnonzero(keep_l))
    from molwm.world.prepare import make_world_data

    test_data = make_world_data(test.until(args.late_cutoff), result.build.obs_norm, result.build.drug_features,
                                fc.config.model.history, result.build.train_drugs)
    late_pred = {
        "world_model": forecast_from_cutoff(fc, test_data, args.late_cutoff, target[keep_l], identity=True)[:, 0],
        "persistence": persistence(train, test, args.late_cutoff, target[keep_l]),
        "mean_growth": mean_growth(train, test, args.late_cutoff, target[keep_l], extrapolate_window_h=24.0),
        "control_growth": control_growth(train, test, args.late_cutoff, target[keep_l], extrapolate_window_h=24.0),
        "hill_rate": hill_rate(train, test, args.late_cutoff, target[keep_l], window_h=24.0),
    }
    treated = test.drug >= 0
    late = {n: rmse(p[treated], obs[keep_l][treated]) for n, p in late_pred.items()}
    return {"leave_drugs_out": lodo, "late_times": late, "train_seconds": seconds + [sec]}


def _lab_model(courses, args, objective: str, seed: int):
    from molwm.world.forecast import WorldForecaster
    from molwm.world.model import WorldNetConfig
    from molwm.world.run import run_world
    from molwm.world.train import WorldConfig, WorldDataConfig

    cfg = WorldConfig(objective=objective, data=WorldDataConfig(source="lab", lab=args.lab, compound=args.compound,
                                                                split="scaffold", test_fraction=0.2, seed=0),
                      model=WorldNetConfig(history=1, ensemble=args.ensemble), max_steps=args.steps, seed=seed,
                      out_dir=f"{args.out_dir}/lab-{objective}-{seed}", log_every=100, health_every=500,
                      checkpoint_every=10_000)
    t = time.time()
    result = run_world(cfg, progress=False, courses=courses)
    return result, WorldForecaster.load(result.checkpoint), time.time() - t


def noise_free_states(lab: str, courses, time_h: float, dose: float) -> np.ndarray:
    """The simulator's noise-free state ``[n_drugs, 6]`` of every compound at (dose, time): the planning truth."""
    from molwm.sim.biology import CellModel

    manifest = json.loads((Path(lab) / "manifest.json").read_text())
    mech = np.load(Path(lab) / "truth" / "mechanism.npy")[: len(courses.drugs)]
    cells = CellModel(mech.shape[1], int(manifest["seed"]))
    return cells.state(mech, np.full(len(mech), dose), np.full(len(mech), time_h))


def planning_hits(fc, courses, build, args, seed: int) -> dict:
    """Reference-phenotype planning on held-out compounds.

    Candidates: ``--candidates`` held-out compounds. Each target is one candidate's *observed* well
    at the top dose and the last time (its target-encoder embedding, or its normalised profile
    for the raw model); the true best compound is the candidate whose noise-free simulated state
    is closest to that compound's noise-free state (itself). Hit = true best in the model's top 5.
    """
    from molwm.world.plan import plan

    rng = np.random.default_rng(seed)
    test_drugs = np.flatnonzero(build.test_drugs)
    cands = rng.choice(test_drugs, min(args.candidates, len(test_drugs)), replace=False)
    t_last, dose = float(np.nanmax(courses.times)), float(courses.dose.max())
    truth = noise_free_states(args.lab, courses, t_last, dose)
    rows = {d: i for i, (d, x) in enumerate(zip(courses.drug, courses.dose)) if x == dose}
    slot = int(np.nanargmax(courses.times[0]))
    targets = cands[: args.targets]
    data = build.test
    test_index = {r: i for i, r in enumerate(build.test_rows)}
    smiles = [courses.smiles[d] for d in cands]
    hits, ranks, oracle = 0, [], 0
    for d in targets:
        i = test_index[rows[d]]
        w = data.windows[i, slot][None]
        with torch.no_grad():
            if fc.config.objective == "jepa":
                target = fc.net.target(w).flatten(1).numpy()[0]
            else:
                target = None
        if target is None:  # raw model: plan in normalised profile space
            out = fc.forecast(smiles, [dose], [t_last])
            pred = np.stack([out.readouts[n][0][:, -1] for n in fc.obs_names], 1)
            obs = fc.obs_norm.inverse(data.obs[i, slot].numpy()[None])[0]
            dist = np.linalg.norm((pred - obs) / fc.obs_norm.std, axis=1)
            order = np.argsort(dist)
            ranked = [smiles[j] for j in order]
        else:
            result = plan(fc, target, smiles, t_last, doses=[dose], n_points=1)
            ranked = result.table["compound"].tolist()
        true_best = smiles[int(np.argmin(np.linalg.norm(truth[cands] - truth[d], axis=1)))]
        rank = ranked.index(true_best) + 1
        ranks.append(rank)
        hits += rank <= 5
        # ceiling: a perfect forecaster (noise-free states) matched to the target well's own noisy state
        noisy = courses.truth[rows[d], slot]
        d_oracle = np.linalg.norm(truth[cands] - noisy, axis=1)
        oracle += int((d_oracle < d_oracle[list(cands).index(d)]).sum()) < 5
    return {"top5": hits / len(targets), "median_rank": float(np.median(ranks)), "targets": len(targets),
            "candidates": len(cands), "chance_top5": 5 / len(cands), "oracle_top5": oracle / len(targets)}


def lab(args) -> dict:
    from molwm.world.data import load_lab_courses
    from molwm.world.evaluate import steps_ahead

    courses = load_lab_courses(args.lab)
    out = {}
    for seed in args.seeds:
        for objective in args.objectives:
            result, fc, sec = _lab_model(courses, args, objective, seed)
            metrics = steps_ahead(fc, result.build.test, (1, 2, 4))
            metrics["plan"] = planning_hits(fc, courses, result.build, args, seed)
            metrics["train_seconds"] = sec
            out.setdefault(objective, []).append(metrics)
            print(f"{objective} seed {seed}: {sec:.0f} s  " + "  ".join(
                f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and not k.startswith("starts")),
                f"plan {metrics['plan']}", flush=True)
    return out


def _print_lab(results: dict) -> None:
    keys = sorted({k for runs in results.values() for r in runs for k, v in r.items() if isinstance(v, float)})
    print("\n| metric | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for k in keys:
        if k.startswith("starts") or k == "train_seconds":
            continue
        cells = []
        for runs in results.values():
            v = np.array([r.get(k, np.nan) for r in runs], float)
            cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}" if np.isfinite(v).any() else "-")
        print(f"| {k} | " + " | ".join(cells) + " |")
    for name, runs in results.items():
        p = [r["plan"]["top5"] for r in runs]
        m = [r["plan"]["median_rank"] for r in runs]
        print(f"planning ({name}): true best in top 5 of {runs[0]['plan']['candidates']}: "
              f"{np.mean(p):.2f} ± {np.std(p):.2f} (chance {runs[0]['plan']['chance_top5']:.2f}, perfect "
              f"forecaster {runs[0]['plan'].get('oracle_top5', float('nan')):.2f}); "
              f"median rank {np.mean(m):.1f}")


def _print(results: dict, args) -> None:
    for setting, rows in [("leave-drugs-out", results["leave_drugs_out"]), ("late-times", results["late_times"])]:
        model = rows["world_model"][0]
        print(f"\n{setting}: RMSE of log count at the last time point (treated wells)")
        print("| predictor | RMSE | n | model / this |")
        print("|---|---|---|---|")
        for n, (r, cnt) in rows.items():
            print(f"| {n} | {r:.3f} | {cnt} | {model / r:.2f} |")
    print(f"\ntraining: {np.mean(results['train_seconds']):.0f} s per model, {args.steps} steps, 1 thread")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("thunor")
    p.add_argument("--folds", type=int, default=9)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--cutoff", type=float, default=24.0)
    p.add_argument("--late-cutoff", type=float, default=72.0)
    q = sub.add_parser("lab")
    q.add_argument("--lab", required=True)
    q.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2])
    q.add_argument("--objectives", type=lambda t: t.split(","), default=["jepa", "raw"])
    q.add_argument("--candidates", type=int, default=100)
    q.add_argument("--targets", type=int, default=50)
    for q in [p, q]:
        q.add_argument("--steps", type=int, default=1000 if q is p else 2000)
        q.add_argument("--objective", default="jepa")
        q.add_argument("--compound", default="morgan+rdkit2d")
        q.add_argument("--history", type=int, default=4)
        q.add_argument("--ensemble", type=int, default=3)
        q.add_argument("--step-h", type=float, default=24.0)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=1)
        q.add_argument("--out-dir", default="/tmp/molwm-world-bench")
        q.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "lab":
        results = lab(args)
        _print_lab(results)
    else:
        results = thunor(args)
        _print(results, args)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
