"""The image ablation across nuisance levels (issue 18, part 3): does MAE's lead shrink as the surface grows?

Runs ``molwm ablate --config configs/ablate/image.yaml`` on one lab per level (made by
``molwm sim generate --molecules 2000 --replicates 2 --nuisance LEVEL --out outputs/lab2k-LEVEL``),
the same ViT, masks, data order and budget for every objective, then tabulates every probe
(mechanism and cell-state R², consistency and activity mAP) per objective and floor against the
level and plots them.

    python benchmarks/image_nuisance.py --levels none,low,high --seconds 150 --seeds 0
    python benchmarks/image_nuisance.py --summary-only            # tables and plot from earlier runs
    python benchmarks/image_nuisance.py --config configs/ablate/image_large_masks.yaml \
        --out-prefix outputs/ablate/image_large_masks-               # a variant (part 3) across the levels

Writes ``outputs/ablate/image-nuisance.md`` and ``image-nuisance.png`` and logs both, with every
figure as a metric, to one MLflow run in ``molwm-ablate`` (``--no-track``: not); figures:
docs/objectives.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from molwm.cli import main as molwm_main
from molwm.evaluation.plots import pyplot, save_figure

METRICS = (("mechanism", "r2"), ("state", "r2"), ("consistency", "map"), ("activity", "map"))


def run(level: str, seconds: float, seeds: str, lab_prefix: str, out_prefix: str, extra: list[str],
        config: str = "configs/ablate/image.yaml") -> None:
    args = ["ablate", "--config", config, "--no-progress",
            f"multimodal.data.lab={lab_prefix}{level}", f"out_dir={out_prefix}{level}", f"seeds=[{seeds}]",
            f"multimodal.budget_seconds={seconds}", f"run_name=ablate-image-nuisance-{level}", *extra]
    assert molwm_main(args) == 0, args


def summary(levels: list[str], out_prefix: str) -> pd.DataFrame:
    rows = []
    for level in levels:
        table = pd.read_csv(Path(f"{out_prefix}{level}") / "ablation.csv")
        for _, r in table.iterrows():
            target = r["dataset"].split("-> ")[-1]
            rows.append({"nuisance": level, "encoder": r["encoder"], "target": target, "metric": r["metric"],
                         "mean": r["mean"], "std": r["std"], "n_seeds": r["n_seeds"]})
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, levels: list[str], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), squeeze=False)
    for ax, (target, metric) in zip(axes[0], METRICS):
        sub = frame[(frame["target"] == target) & (frame["metric"] == metric)]
        for i, (enc, g) in enumerate(sub.groupby("encoder", sort=False)):
            g = g.set_index("nuisance").reindex(levels)
            floor = enc in ("untrained", "raw_features", "pixel_stats")
            ax.errorbar(range(len(levels)), g["mean"], yerr=g["std"], marker="o", ms=4, capsize=2,
                        ls="--" if floor else "-", label=enc)
        ax.set(xticks=range(len(levels)), xticklabels=levels, xlabel="nuisance", ylabel=f"{target} {metric}",
               title=f"{target} ({'ridge R²' if metric == 'r2' else 'mAP'})")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="none,low,high")
    ap.add_argument("--config", default="configs/ablate/image.yaml", help="the ablation config (or a variant)")
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--lab-prefix", default="outputs/lab2k-")
    ap.add_argument("--out-prefix", default="outputs/ablate/image-")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--no-track", action="store_true", help="do not log the summary run to MLflow")
    ap.add_argument("overrides", nargs="*", help="extra `molwm ablate` overrides (key=value)")
    args = ap.parse_args()
    levels = args.levels.split(",")
    if not args.summary_only:
        for level in levels:
            run(level, args.seconds, args.seeds, args.lab_prefix, args.out_prefix, args.overrides, args.config)
    frame = summary(levels, args.out_prefix)
    wide = frame.assign(cell=[f"{m:.3f} ± {s:.3f}" for m, s in zip(frame["mean"], frame["std"])])
    wide = wide.pivot_table(index=["target", "metric", "encoder"], columns="nuisance", values="cell",
                            aggfunc="first")[levels]
    lines = ["| target | metric | encoder | " + " | ".join(levels) + " |", "|" + "---|" * (3 + len(levels))]
    lines += [f"| {t} | {m} | {e} | " + " | ".join(str(v) for v in row) + " |" for (t, m, e), row in
              zip(wide.index, wide.fillna("").to_numpy())]
    text = "\n".join(lines)
    out = Path(f"{args.out_prefix}nuisance.md")
    out.write_text(text + "\n")
    print(text)
    figure = plot(frame, levels, Path(f"{args.out_prefix}nuisance.png"))
    print(figure)
    if not args.no_track:
        print("run_id:", log_summary(frame, levels, [out, figure], args))


def log_summary(frame: pd.DataFrame, levels: list[str], files: list[Path], args) -> str | None:
    """One MLflow run (experiment ``molwm-ablate``) holding the curves across levels: the table and plot as
    artifacts, every mean as a metric ``<encoder>.<target>.<metric>.<level>`` (synthetic data, tagged so)."""
    from molwm.tracking import make_tracker

    tracker = make_tracker(experiment="molwm-ablate")
    tags = {"molwm.stage": "ablate", "molwm.synthetic": "true", "modality": "image", "config": args.config}
    with tracker.run(f"ablate-image-nuisance-summary-{Path(args.config).stem}", tags=tags) as run_id:
        tracker.log_params({"levels": ",".join(levels), "out_prefix": args.out_prefix})
        tracker.log_metrics({f"{r.encoder}.{r.target}.{r.metric}.{r.nuisance}": float(r.mean)
                             for r in frame.itertuples() if pd.notna(r.mean)})
        for f in files:
            tracker.log_artifact(f, "nuisance")
    return run_id


if __name__ == "__main__":
    main()
