"""Forecast intervals of the world model: coverage on held-out courses, raw and calibrated (``uncertainty.py``).

The member spread of a world model is calibrated on *other* held-out courses of the same model, never
on the courses scored:

* thunor leave-drugs-out: per fold, each held-out drug is scored by calibrators fitted on the fold's
  other held-out drugs (forecasts from ``--cutoff`` h to each well's last point, the drug unknown);
* thunor late time points: one model trained up to ``--late-cutoff`` h; each drug's late forecasts
  scored by calibrators fitted on the other drugs' (drug identities known);
* the synthetic lab's held-out scaffolds, k = 1, 2, 4 observed steps ahead: calibrated on one half of
  the held-out compounds, scored on the other, and the reverse.

Per setting and method: coverage at 50/80/90/95%, miscalibration area, Spearman(|error|, std), the
RMSE of the ensemble mean on the same rows, and the spread of the 90% coverage across the scored
groups (drugs, or the two compound halves). ``--seeds``: one model seed (and thunor fold partition)
per seed; the table gives mean ± std over seeds.
"""

from __future__ import annotations

import time

import numpy as np

FORECAST_METHODS = ("none", "zscale", "conformal")
LEVELS = np.round(np.linspace(0.01, 0.99, 99), 2)


def group_calibrated(preds: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Score each group's rows with calibrators fitted on the other groups' rows (per read-out).

    Args:
        preds: ``[E, n, F]`` member forecasts; ``y``: ``[n, F]`` observations; ``groups``: ``[n]``.

    Returns:
        Method -> ``covered [n, F, L]`` (inside the interval at each of :data:`LEVELS`), ``std [n, F]``.
    """
    from molwm.uncertainty.calibration import fit_calibrator

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


def summarise(scored: dict, preds: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """Per method: coverage at the nominal levels, miscalibration area, Spearman(|error|, std), RMSE and R² of
    the ensemble mean, and the 90% coverage of each group (``groups [n]``): its min, max and the share of
    groups within 5 points of 90%."""
    from molwm.evaluation.metrics import NOMINAL, miscalibration_area, spearman_error_std
    from molwm.world.evaluate import r2_score

    mean = preds.mean(0)
    at90 = int(np.flatnonzero(np.isclose(LEVELS, 0.9))[0])
    out = {}
    for m, r in scored.items():
        observed = r["covered"].mean((0, 1))
        row = {f"coverage_{round(lv * 100)}": float(observed[np.isclose(LEVELS, lv)][0]) for lv in NOMINAL}
        row["miscalibration_area"] = miscalibration_area(np.concatenate([[0], LEVELS, [1]]),
                                                         np.concatenate([[0], observed, [1]]))
        row["spearman"] = float(np.nanmean([spearman_error_std(y[:, j], mean[:, j], r["std"][:, j])
                                            for j in range(y.shape[1])]))
        row["rmse"] = float(np.sqrt(np.mean((mean - y) ** 2)))  # pooled over read-outs: in their units
        row["r2"] = r2_score(mean, y)  # mean over read-outs
        per_group = np.array([r["covered"][groups == g, :, at90].mean() for g in np.unique(groups)])
        row["group_cov90_min"], row["group_cov90_max"] = float(per_group.min()), float(per_group.max())
        row["group_cov90_within5"] = float(np.mean(np.abs(per_group - 0.9) <= 0.05))
        row["groups"] = len(per_group)
        row["n"] = int(y.shape[0])
        out[m] = row
    return out


def _world_model(courses, args, out_dir: str, source: str, model_seed: int, **data):
    from molwm.world.forecast import WorldForecaster
    from molwm.world.model import WorldNetConfig
    from molwm.world.run import run_world
    from molwm.world.train import WorldConfig, WorldDataConfig

    cfg = WorldConfig(objective="jepa", data=WorldDataConfig(source=source, compound="morgan+rdkit2d", **data),
                      model=WorldNetConfig(history=4 if source == "thunor" else 1, ensemble=args.ensemble),
                      max_steps=args.steps, forecast_step_h=24.0, seed=model_seed, out_dir=out_dir, log_every=100,
                      health_every=500, checkpoint_every=10_000)
    t = time.perf_counter()
    result = run_world(cfg, progress=False, courses=courses)
    return result, WorldForecaster.load(result.checkpoint), time.perf_counter() - t


def _stack(parts: list[dict]) -> dict:
    return {m: {k: np.concatenate([p[m][k] for p in parts]) for k in ("covered", "std")} for m in parts[0]}


def forecast_thunor(args, courses, seed: int) -> dict:
    """Leave-drugs-out (fold partition ``seed``) and late-time forecast intervals on thunor HTS007."""
    from molwm.world.baselines import last_observed, leave_drugs_out_folds
    from molwm.world.evaluate import members_from_cutoff
    from molwm.world.prepare import make_world_data

    obs, ok, target = last_observed(courses)
    scored, all_preds, all_y, all_g, seconds = [], [], [], [], []
    for f, (_, te) in enumerate(leave_drugs_out_folds(courses, args.folds, seed)):
        result, fc, sec = _world_model(courses, args, f"{args.work}/thunor-s{seed}-fold{f}", "thunor", seed,
                                       split="folds", n_folds=args.folds, fold=f, seed=seed)
        assert np.array_equal(np.sort(result.build.test_rows), np.sort(te)), "fold mismatch"
        seconds.append(sec)
        preds = members_from_cutoff(fc, result.build.test, args.cutoff, target[te])  # [E, n, 1]
        keep = (courses.drug[te] >= 0) & ok[te] & (target[te] > args.cutoff) & np.isfinite(preds).all((0, 2))
        p, y, g = preds[:, keep], obs[te][keep][:, None], courses.drug[te][keep]
        scored.append(group_calibrated(p, y, g))
        all_preds.append(p)
        all_y.append(y)
        all_g.append(g)
        print(f"thunor seed {seed} fold {f}: {sec:.0f} s, {keep.sum()} wells", flush=True)
    lodo = summarise(_stack(scored), np.concatenate(all_preds, 1), np.concatenate(all_y), np.concatenate(all_g))
    keep_l = ok & (target > args.late_cutoff)
    result, fc, sec = _world_model(courses, args, f"{args.work}/thunor-s{seed}-late", "thunor", seed, split="none",
                                   max_time_h=args.late_cutoff)
    test = courses.subset(np.flatnonzero(keep_l))
    data = make_world_data(test.until(args.late_cutoff), result.build.obs_norm, result.build.drug_features,
                           fc.config.model.history, result.build.train_drugs)
    preds = members_from_cutoff(fc, data, args.late_cutoff, target[keep_l], identity=True)
    treated = (test.drug >= 0) & np.isfinite(preds).all((0, 2))
    p, y, g = preds[:, treated], obs[keep_l][treated][:, None], test.drug[treated]
    late = summarise(group_calibrated(p, y, g), p, y, g)
    print(f"thunor seed {seed} late: {sec:.0f} s, {treated.sum()} wells", flush=True)
    return {"leave_drugs_out": lodo, "late_times": late, "train_seconds": seconds + [sec]}


def forecast_lab(args, courses, seed: int) -> dict:
    """k-steps-ahead forecast intervals on the synthetic lab's held-out scaffolds (model seed ``seed``)."""
    from molwm.world.evaluate import members_steps_ahead

    result, fc, sec = _world_model(courses, args, f"{args.work}/lab-s{seed}", "lab", seed, lab=args.lab,
                                   split="scaffold", test_fraction=0.2, seed=0)
    drugs = courses.drug[result.build.test_rows]
    half = np.random.default_rng(0).permutation(np.unique(drugs))[: len(np.unique(drugs)) // 2]
    out = {"train_seconds": [sec]}
    for k in (1, 2, 4):
        preds, y, rows = members_steps_ahead(fc, result.build.test, k)
        if not len(rows):
            continue
        groups = np.isin(drugs[rows], half).astype(int)  # calibrate on one half of the compounds, score the other
        out[f"k{k}"] = summarise(group_calibrated(preds, y, groups), preds, y, groups)
    print(f"lab seed {seed}: {sec:.0f} s", flush=True)
    return out


def run_forecast(args) -> list[dict]:
    """``args.forecast`` (thunor or lab) for each of ``args.seeds``; one result dict per seed."""
    if args.forecast == "thunor":
        from molwm.world.thunor import load_thunor

        courses, fn = load_thunor(), forecast_thunor
    else:
        from molwm.world.data import load_lab_courses

        courses, fn = load_lab_courses(args.lab), forecast_lab
    return [fn(args, courses, int(s)) for s in str(args.seeds).split(",")]


def _ms(values: list[float], digits: int = 3) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.{digits}f}" + (f" ± {v.std():.{digits}f}" if len(v) > 1 else "")


def forecast_table(runs: list[dict]) -> str:
    """Markdown: one row per (setting, method), mean ± std over seeds."""
    lines = [("| setting | method | n | cov 50 | cov 80 | cov 90 | cov 95 | miscal. area | Spearman | RMSE | R² | "
              "groups within 5 pts at 90% | group cov 90 min-max |"), "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for setting, rows in runs[0].items():
        if not isinstance(rows, dict):
            continue
        for m in rows:
            col = [r[setting][m] for r in runs]
            cells = [_ms([c[k] for c in col]) if k in col[0] else "" for k in (
                "coverage_50", "coverage_80", "coverage_90", "coverage_95", "miscalibration_area", "spearman", "rmse",
                "r2")]
            within = _ms([c["group_cov90_within5"] for c in col], 2)
            span = f"{min(c['group_cov90_min'] for c in col):.3f}-{max(c['group_cov90_max'] for c in col):.3f}"
            lines.append(f"| {setting} | {m} | {col[0]['n']} | " + " | ".join(cells) +
                         f" | {within} of {col[0]['groups']} | {span} |")
    return "\n".join(lines)
