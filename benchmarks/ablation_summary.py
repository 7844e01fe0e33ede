"""Merge `molwm ablate` outputs run in parallel (e.g. one process per pretraining seed) into one summary.

    python benchmarks/ablation_summary.py OUT_DIR [OUT_DIR ...] [--plots DIR]

Reads each folder's ``runs.json`` and ``ablation.csv``; prints, per objective, mean ± std over the
pretraining seeds of the budget actually used (steps, seconds, samples), embedding health and every
end-of-run probe, then the rows of the ablation tables (floors and fine-tunes) averaged over folders.
With ``--plots``, draws the probe curves of all runs together (vs training seconds and vs samples seen).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def _ms(values, digits: int = 3) -> str:
    a = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    return "n/a" if not len(a) else f"{a.mean():.{digits}f} ± {a.std():.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--plots", type=Path, help="write merged probe-curve plots here")
    args = parser.parse_args(argv)
    runs = [r for d in args.dirs for r in json.loads((d / "runs.json").read_text())["runs"]]
    tables = [pd.read_csv(d / "ablation.csv") for d in args.dirs if (d / "ablation.csv").stat().st_size > 1]
    keys = sorted({k for r in runs for k in r["final"]})
    print("| objective | seeds | steps | training s | samples seen | " + " | ".join(keys) + " |")
    print("|" + "---|" * (5 + len(keys)))
    for objective in dict.fromkeys(r["objective"] for r in runs):
        rs = [r for r in runs if r["objective"] == objective]
        cells = [_ms([r["final"].get(k, np.nan) for r in rs]) for k in keys]
        print(f"| {objective} | {','.join(str(r['seed']) for r in rs)} | {_ms([r['steps'] for r in rs], 0)} | "
              f"{_ms([r['wall_seconds'] for r in rs], 0)} | {_ms([r['samples_seen'] for r in rs], 0)} | "
              + " | ".join(cells) + " |")
        for k in keys:
            if k.startswith("probe."):
                print(f"    {objective} {k} per seed: {[round(r['final'].get(k, np.nan), 3) for r in rs]}")
    if tables:
        table = pd.concat(tables)
        print("\n| encoder | dataset | labels | metric | mean ± std (over folders' means) | folders |")
        print("|---|---|---|---|---|---|")
        for (enc, ds, frac, metric), g in table.groupby(["encoder", "dataset", "fraction", "metric"], sort=False):
            print(f"| {enc} | {ds} | {frac:g} | {metric} | {_ms(g['mean'])} | {len(g)} |")
    if args.plots:
        from molwm.experiments.report import plot_probe_curves

        args.plots.mkdir(parents=True, exist_ok=True)
        floors: dict[str, dict[str, float]] = {}  # lab ablations: untrained and raw-feature probes as dashed lines
        if tables:
            for _, r in table[table["encoder"].isin(["untrained", "raw_features"])].iterrows():
                target = str(r["dataset"]).split("-> ")[-1]
                floors.setdefault(r["encoder"], {}).setdefault(f"probe.{target}.{r['metric']}", []).append(r["mean"])
            floors = {n: {k: float(np.mean(v)) for k, v in d.items()} for n, d in floors.items()}
        for x, name in (("wall_seconds", "probes_vs_wall_time.png"), ("samples_seen", "probes_vs_samples.png")):
            path = plot_probe_curves(runs, args.plots / name, x, floors or None)
            if path is not None:
                print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
