"""The ablation report: a table, a Markdown summary and plots (quality per unit of compute, label efficiency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from molwm.atomic import atomic_path, write_text_atomic
from molwm.evaluation.plots import pyplot, save_figure


def _pairs(history: dict, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x values, key values)`` at the steps where ``key`` was logged (``x`` read at the same step)."""
    xs = dict(history.get(x, []))
    pts = [(xs[s], v) for s, v in history.get(key, []) if s in xs]
    return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else (np.zeros(0), np.zeros(0))


def plot_probe_curves(runs: list[dict], path: Path, x: str = "wall_seconds",
                      floors: dict[str, dict[str, float]] | None = None) -> Path | None:
    """Probe metric against ``x`` (training wall time or samples seen), one line per objective and seed;
    ``floors`` (``{name: {probe key: value}}``, e.g. an untrained encoder) are drawn as dashed lines."""
    plt = pyplot()
    keys = sorted({k for r in runs for k in r["history"] if k.startswith("probe.")})
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    colours = {}
    for r in runs:
        c = colours.setdefault(r["objective"], f"C{len(colours)}")
        for ax, k in zip(axes[0], keys):
            xs, ys = _pairs(r["history"], k, x)
            ax.plot(xs, ys, "o-", ms=3, color=c, alpha=0.8, label=f"{r['objective']} (seed {r['seed']})")
    for i, (name, values) in enumerate((floors or {}).items()):
        for ax, k in zip(axes[0], keys):
            if k in values:
                ax.axhline(values[k], ls="--", lw=1, color=f"0.{3 + 2 * i}", label=name)
    for ax, k in zip(axes[0], keys):
        ax.set(xlabel="training seconds" if x == "wall_seconds" else "samples seen", ylabel=k.split(".", 1)[1],
               title=k.split(".")[1] + " (frozen encoder, linear probe)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_label_efficiency(table: pd.DataFrame, path: Path) -> Path | None:
    """Test metric (mean ± std over fine-tuning seeds) against the share of training labels, per dataset."""
    plt = pyplot()
    if table.empty:
        return None
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = table[table["dataset"] == ds]
        for enc, g in sub.groupby("encoder", sort=False):
            g = g.sort_values("fraction")
            ax.errorbar(g["fraction"], g["mean"], yerr=g["std"], marker="o", ms=3, capsize=2, label=enc)
        ax.set(xscale="log", xlabel="share of training labels", ylabel=f"test {sub['metric'].iloc[0]}", title=ds)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, path)


def markdown(runs: list[dict], table: pd.DataFrame) -> str:
    """Budgets and end-of-run probes per run; fine-tune results per dataset and label fraction."""
    finals = [{**r["final"], **r.get("final_probe", {})} for r in runs]  # final_probe: with the DMSO sites
    keys = sorted({k for f in finals for k in f})
    lines = ["| objective | seed | steps | training s | samples seen | encoder params | trained params | "
             + " | ".join(keys) + " |"]
    lines.append("|" + "---|" * (7 + len(keys)))
    for r, final in zip(runs, finals):
        lines.append(f"| {r['objective']} | {r['seed']} | {r['steps']} | {r['wall_seconds']:.1f} | "
                     f"{r['samples_seen']:,.0f} | {r['params_encoder']:,} | {r['params_trained']:,} | "
                     + " | ".join(f"{final.get(k, float('nan')):.3f}" for k in keys) + " |")
    if not table.empty:
        lines += ["", "| encoder | dataset | labels | metric | mean ± std |", "|---|---|---|---|---|"]
        for _, r in table.iterrows():
            lines.append(f"| {r['encoder']} | {r['dataset']} | {r['fraction']:g} | {r['metric']} | "
                         f"{r['mean']:.3f} ± {r['std']:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(config, runs: list[dict], table: pd.DataFrame, out: Path,
                 floors: dict[str, dict[str, float]] | None = None) -> list[Path]:
    """Write ``ablation.csv``, ``ablation.md`` and the plots into ``out``; returns the files.

    ``floors``: probe values of reference encoders drawn on the probe curves (lab probes)."""
    files = []
    csv = out / "ablation.csv"
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    md = out / "ablation.md"
    write_text_atomic(md, markdown(runs, table))
    files += [csv, md]
    label_plot = plot_label_efficiency(table, out / "label_efficiency.png") if config.modality == "graph" else None
    for path in (plot_probe_curves(runs, out / "probes_vs_wall_time.png", "wall_seconds", floors),
                 plot_probe_curves(runs, out / "probes_vs_samples.png", "samples_seen", floors),
                 label_plot):
        if path is not None:
            files.append(path)
    return files
