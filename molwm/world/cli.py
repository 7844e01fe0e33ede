"""``molwm forecast`` and ``molwm plan``: a world model's forecasts and plans from the command line.

Thin: parse flags, call :class:`molwm.world.forecast.WorldForecaster` and
:func:`molwm.world.plan.plan`, write a table and plots, and log them to MLflow
(a ``forecast`` or ``plan`` run in the ``molwm-world`` experiment) unless ``--no-track``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from molwm.atomic import atomic_path, refuse_overwriting_inputs
from molwm.sim.cli import _floats


def add_parsers(subparsers) -> None:
    """Add ``forecast`` and ``plan`` to the main parser's subcommands."""
    p = subparsers.add_parser("forecast", help="forecast cell states after compounds at doses over time "
                                                "(Python: molwm.world.WorldForecaster.forecast)")
    _model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", metavar="S", help="SMILES (or names of drugs the model was trained on)")
    src.add_argument("--input", metavar="FILE",
                     help="candidates: .csv, .tsv, .smi, .sdf or .parquet; a table whose rows carry their own "
                          "dose_uM and time_h (and cell_line) columns, e.g. a plate map, is forecast row by row")
    p.add_argument("--doses", type=_floats, default=None, metavar="D1,D2",
                   help="doses in uM (not needed when --input rows carry dose_uM and time_h)")
    p.add_argument("--times", type=_floats, default=None, metavar="T1,T2", help="hours after dosing")
    p.add_argument("--output", required=True, metavar="OUT.csv", help="one row per (compound, dose, time)")
    p.add_argument("--plot", action="store_true", help="also write <output>.png: read-outs over time")
    p.set_defaults(func=cmd_forecast)

    p = subparsers.add_parser("plan", help="rank candidates and doses by how close their forecast ends to a "
                                            "target state (Python: molwm.world.plan.plan)")
    _model_args(p)
    p.add_argument("--target", required=True, metavar="TARGET",
                   help="target: SMILES@DOSE (a reference compound's forecast effect), a read-out value "
                        "NAME=VALUE (e.g. rel_count=0.5) or an embedding .npy")
    p.add_argument("--candidates", required=True, metavar="FILE", help=".csv, .tsv, .smi, .sdf or .parquet")
    p.add_argument("--doses", type=_floats, default=[1.0, 10.0], metavar="D1,D2",
                   help="doses scored for each candidate, uM (default 1,10)")
    p.add_argument("--time", type=float, required=True, metavar="HOURS", help="planning horizon")
    p.add_argument("--method", choices=("exhaustive", "cem"), default="exhaustive",
                   help="exhaustive over --doses, or cross-entropy search over --dose-range")
    p.add_argument("--dose-range", type=_floats, default=[0.01, 100.0], metavar="LO,HI",
                   help="uM range for --method cem (default 0.01,100)")
    p.add_argument("--spread-weight", type=float, default=0.0, help="penalty per unit of ensemble spread")
    p.add_argument("--top", type=int, default=10, help="rows printed and trajectories plotted (default 10)")
    p.add_argument("--output", required=True, metavar="OUT.csv", help="ranked table; the plot goes to OUT.png")
    p.set_defaults(func=cmd_plan)


def _model_args(p) -> None:
    p.add_argument("--model", required=True, metavar="URI", help="world-model checkpoint or MLflow model URI")
    p.add_argument("--context", "--cell-line", dest="context", default=None,
                   help="cell line / context (default: the model's first); --cell-line is the same flag")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def _read_candidates(path: str) -> list[str]:
    from molwm.data.candidates import iter_candidates

    return [s for chunk in iter_candidates(path) for s in chunk["smiles"].tolist()]


def _log(args, kind: str, params: dict, files: list[Path], metrics: dict | None = None) -> None:
    if args.no_track:
        return
    from molwm.tracking import make_tracker

    tracker = make_tracker(True, experiment="molwm-world")
    with tracker.run(kind, tags={"molwm.stage": kind, "model": str(args.model)}):
        tracker.log_params(params)
        if metrics:
            tracker.log_metrics(metrics)
        for f in files:
            tracker.log_artifact(f, kind)


ROW_COLUMNS = ("dose_uM", "time_h")
"""Columns that make an input table a per-row forecast request (``cell_line`` optional)."""


def read_plate(path: str):
    """The rows of a table whose rows carry their own ``dose_uM`` and ``time_h`` (and optional ``cell_line``),
    with a ``smiles`` column; None for any other candidates file."""
    import pandas as pd

    from molwm.data.candidates import SMILES_COLUMN_GUESSES, CandidateError, check_candidates_path

    p = check_candidates_path(path)
    name = p.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        columns = pq.read_schema(p).names
    elif name.endswith((".csv", ".tsv")):
        columns = list(pd.read_csv(p, sep="\t" if name.endswith(".tsv") else ",", nrows=0).columns)
    else:
        return None
    if not set(ROW_COLUMNS) <= set(columns):
        return None
    smiles = next((c for c in columns if c.lower() in SMILES_COLUMN_GUESSES), None)
    if smiles is None:
        raise CandidateError(f"{p}: rows with dose_uM and time_h need a SMILES column "
                             f"(one of {', '.join(SMILES_COLUMN_GUESSES)}); columns: {', '.join(columns[:12])}")
    frame = (pd.read_parquet(p) if name.endswith(".parquet")
             else pd.read_csv(p, sep="\t" if name.endswith(".tsv") else ",", dtype={smiles: str}))
    return frame.rename(columns={smiles: "smiles"})


def _forecast_plate(fc, rows, args, path: Path) -> int:
    """Forecast each input row at its own dose, time and cell line (``--cell-line`` where it has none)."""
    import pandas as pd

    lines = rows["cell_line"].where(rows["cell_line"].notna(), args.context).tolist() if "cell_line" in rows \
        else [args.context] * len(rows)
    out = fc.forecast_rows(rows["smiles"].astype(str).tolist(), rows["dose_uM"].tolist(), rows["time_h"].tolist(),
                           lines)
    kept = rows.drop(columns=[c for c in ("smiles", "dose_uM", "time_h") if c in rows.columns])
    frame = pd.concat([out[["smiles", "dose_uM", "time_h"]], kept.reset_index(drop=True),
                       out.drop(columns=["smiles", "dose_uM", "time_h"])], axis=1)
    if "cell_line" not in frame:
        frame.insert(3, "cell_line", args.context or fc.contexts[0])
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    bad = frame[frame["status"] != "ok"]
    for i, r in bad.head(20).iterrows():
        print(f"rejected: row {i + 1} {r['smiles']!r}: {r['status']}", file=sys.stderr)
    print(f"forecast {len(frame)} rows at their own dose, time and cell line ({len(bad)} rejected) -> {path} "
          f"({_data_note(fc)})")
    name = fc.obs_names[0]
    shown = [c for c in ("smiles", "dose_uM", "time_h", "cell_line", name, name + "_lo", name + "_hi", "status")
             if c in frame]
    print(frame[shown].head(12).to_string(index=False, max_colwidth=32))
    _log(args, "forecast", {"rows": len(frame), "rejected": len(bad), "per_row": True}, [path])
    return 0


def _data_note(fc) -> str:
    """Which data the model was trained on, for every printed output."""
    if fc.synthetic:
        return "model trained on the synthetic lab: simulated cells"
    return f"model trained on real measurements: {fc.config.data.source} ({', '.join(fc.contexts)})"


def cmd_forecast(args) -> int:
    from molwm.world.forecast import ForecastError, WorldForecaster

    # bad input raises a MolwmError, which molwm.cli.main reports in one line
    path = Path(args.output)
    refuse_overwriting_inputs(path, None if args.smiles else args.input)
    rows = read_plate(args.input) if args.input else None
    if rows is None and (args.doses is None or args.times is None):
        raise ForecastError("--doses and --times are required, unless --input is a table whose rows carry "
                            "their own dose_uM and time_h columns")
    fc = WorldForecaster.load(args.model)
    if rows is not None:
        return _forecast_plate(fc, rows, args, path)
    compounds = args.smiles if args.smiles else _read_candidates(args.input)
    out = fc.forecast(compounds, args.doses, args.times, args.context)
    frame = out.frame()
    frame.insert(3, "cell_line", args.context or fc.contexts[0])
    with atomic_path(path) as tmp:  # a killed run leaves no file that reads as a complete forecast
        frame.to_csv(tmp, index=False)
    files = [path]
    if args.plot:
        files.append(plot_forecast(frame, path.with_suffix(".png"), fc.obs_names[0]))
    for i, smi, why in out.rejects:
        print(f"rejected: input {i} {smi!r}: {why}", file=sys.stderr)
    print(f"forecast {len(compounds)} compounds x {len(args.doses)} doses x {len(args.times)} times -> {path} "
          f"({_data_note(fc)})")
    shown = ["compound", "dose_uM", "time_h"] + [c for n in fc.obs_names[:2] for c in (n, n + "_std")] + [
        "latent_spread"]
    print(frame[shown].head(12).to_string(index=False, max_colwidth=32))
    _log(args, "forecast", {"compounds": len(compounds), "doses": str(args.doses), "times": str(args.times),
                            "rejected": len(out.rejects)}, files)
    return 0


def plot_forecast(frame, path: Path, readout: str) -> Path:
    """One line per (compound, dose): ``readout`` ± ensemble std over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (comp, dose), g in list(frame.groupby(["compound", "dose_uM"], sort=False))[:12]:
        ax.errorbar(g["time_h"], g[readout], yerr=g[readout + "_std"], marker="o", ms=3, capsize=2,
                    label=f"{comp[:24]} @ {dose:g} uM")
    ax.set(xlabel="hours after dosing", ylabel=readout, title="forecast (± ensemble std)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def cmd_plan(args) -> int:
    import pandas as pd

    from molwm.world.forecast import WorldForecaster
    from molwm.world.plan import plan, plot_plan

    path = Path(args.output)
    refuse_overwriting_inputs(path, args.candidates)
    fc = WorldForecaster.load(args.model)
    candidates = _read_candidates(args.candidates)
    result = plan(fc, args.target, candidates, args.time, doses=args.doses, context=args.context,
                  method=args.method, dose_range=tuple(args.dose_range[:2]), spread_weight=args.spread_weight)
    with atomic_path(path) as tmp:
        result.table.to_csv(tmp, index=False)
    png = plot_plan(result, path.with_suffix(".png"), top=min(args.top, 8))
    for i, smi, why in result.rejects:
        print(f"rejected: candidate {i} {smi!r}: {why}", file=sys.stderr)
    print(f"plan: {len(candidates)} candidates, target {args.target}, horizon {args.time:g} h, {args.method} "
          f"-> {path}, {png} ({_data_note(fc)}{', cell line ' + (args.context or fc.contexts[0])})")
    shown = ["rank", "compound", "dose_uM", "distance", "spread"] + [
        c for c in result.table.columns[6:] if not c.startswith("true_")][:2]
    print(result.table[shown].head(args.top).to_string(index=False, max_colwidth=40))
    best = result.table.iloc[0]
    _log(args, "plan", {"candidates": len(candidates), "target": args.target, "time_h": args.time,
                        "method": args.method, "rejected": len(result.rejects)}, [path, png],
         {"best_distance": float(best["distance"])} if pd.notna(best["distance"]) else None)
    return 0
