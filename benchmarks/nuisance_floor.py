"""Is the synthetic lab a fair test of the surface-reproduction tax? (issue 18, target 1)

For each nuisance level, generate a lab (``molwm.sim.generate_lab``), read it back through the JUMP
``load_data.csv`` reader, and ask how well hand-made features of each site read the hidden biology:

- ``pixel_stats``: the 25 per-channel pixel statistics (mean, SD, 10/50/90th percentiles), raw, as the
  image floor of earlier versions; ``pixel_stats_dmso``: the same standardised to each plate's DMSO;
- ``cp_features``: CellProfiler-style per-cell features, site medians standardised to each plate's
  DMSO (molwm.evaluation.cell_features).

Ridge probes (penalty by leave-one-out) are fitted on the treated sites of half of the compounds and
scored (R², mean over dimensions) on the other half, for the well's cell state and the compound's
mechanism; mAP (molwm.evaluation.map_metrics) of phenotypic activity (replicates on other plates against
DMSO) and consistency (compound consensus profiles, 8 k-means mechanism classes).

    python benchmarks/nuisance_floor.py --molecules 250 --out outputs/nuisance-floor

Prints a Markdown table and writes ``results.json`` into ``--out``. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from featurizers.image import load_site
from molwm.data.formats import read_load_data
from molwm.evaluation.lab_probes import mechanism_classes, pixel_statistics, r2_scores
from molwm.sim import generate_lab, load_smiles_for_lab
from molwm.evaluation.cell_features import normalize_to_controls, site_profiles
from molwm.evaluation.map_metrics import consensus, phenotypic_activity, phenotypic_consistency
from molwm.evaluation.ridge_probes import RidgeProbe


def _probe(x, y, fit):
    probe = RidgeProbe.fit(x[fit], y[fit])
    return r2_scores(probe.predict(x[~fit]), y[~fit])


def evaluate(lab: Path, seed: int = 0) -> dict:
    """Every floor's R² and mAP on one lab."""
    index = read_load_data(lab / "load_data.csv")
    frame = index.frame
    assert index.synthetic, "the reader must see the lab as synthetic"
    images = np.stack([load_site(p)[0] for p in index.site_paths()])
    wells = pd.read_csv(lab / "well.csv", dtype={"Metadata_Plate": str, "Metadata_Well": str})
    well_at = {(p, w): i for i, (p, w) in enumerate(zip(wells["Metadata_Plate"], wells["Metadata_Well"]))}
    state = np.load(lab / "truth/state.npy")[[well_at[(p, w)] for p, w in zip(frame["plate"], frame["well"])]]
    order = pd.read_csv(lab / "truth/compound_truth.csv")["compound_id"].tolist()
    mech_all = np.load(lab / "truth/mechanism.npy")
    classes_all = mechanism_classes(mech_all)
    ctl = frame["is_control"].to_numpy()
    plate = frame["plate"].to_numpy()
    t0 = time.perf_counter()
    cp = normalize_to_controls(site_profiles(images), plate, ctl).to_numpy()
    cp_s = (time.perf_counter() - t0) / len(images)
    px = pixel_statistics(images)
    px_dmso = normalize_to_controls(pd.DataFrame(px), plate, ctl).to_numpy()
    treated = np.flatnonzero(~ctl)
    comp = frame["compound_id"].to_numpy()[treated]
    at = {c: i for i, c in enumerate(order)}
    mech = mech_all[[at[c] for c in comp]]
    unique = np.array(sorted(set(comp)))
    first = set(unique[np.random.default_rng(seed).permutation(len(unique))[: len(unique) // 2]])
    fit = np.array([c in first for c in comp])
    group = np.array([f"{c}@{d:g}" for c, d in zip(comp, frame["dose_uM"].to_numpy()[treated])], dtype=object)
    out = {"sites": len(images), "cp_ms_per_site": 1000 * cp_s}
    for name, x in (("pixel_stats", px), ("pixel_stats_dmso", px_dmso), ("cp_features", cp)):
        r2_state = _probe(x[treated], state[treated], fit)
        r2_mech = _probe(x[treated], mech, fit)
        z = (x - x[ctl].mean(0)) / np.maximum(x[ctl].std(0), 1e-9)
        act = phenotypic_activity(np.concatenate([z[treated], z[ctl]]),
                                  np.concatenate([group, np.full(ctl.sum(), "DMSO", dtype=object)]),
                                  np.r_[np.zeros(len(treated), bool), np.ones(ctl.sum(), bool)], null_size=1000)
        names, prof = consensus(z[treated], comp)
        cons = phenotypic_consistency(prof, classes_all[[at[n] for n in names]], null_size=1000)
        out[name] = {"state_r2": float(r2_state.mean()), "state_r2_per_dim": [round(float(v), 3) for v in r2_state],
                     "mechanism_r2": float(r2_mech.mean()), "activity_map": act.map,
                     "activity_retrieved": act.retrieved, "consistency_map": cons.map, "n_features": x.shape[1]}
    return out


def plot(results: dict, path: Path) -> Path:
    """Each floor's cell-state R², activity mAP and consistency mAP against the nuisance level."""
    from molwm.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    levels = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (key, title) in zip(axes, (("state_r2", "cell-state R² (ridge)"), ("activity_map", "activity mAP"),
                                       ("consistency_map", "consistency mAP"))):
        for name in ("pixel_stats", "pixel_stats_dmso", "cp_features"):
            ax.plot(range(len(levels)), [results[lv][name][key] for lv in levels], "o-", label=name)
        ax.set(xticks=range(len(levels)), xticklabels=levels, xlabel="nuisance", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--molecules", type=int, default=250)
    ap.add_argument("--doses", default="1,10")
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--levels", default="legacy,none,low,high")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/nuisance-floor")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from --out/results.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        print(plot(json.loads((out / "results.json").read_text())["results"], out / "floors_vs_nuisance.png"))
        return
    smiles = load_smiles_for_lab("chembl_drugs", args.molecules, seed=args.seed)
    results = {}
    for level in args.levels.split(","):
        t0 = time.perf_counter()
        res = generate_lab(smiles, out / f"lab-{level}", seed=args.seed, doses=[float(d) for d in args.doses.split(",")],
                           replicates=args.replicates, nuisance=level, overwrite=True, progress=False)
        gen = time.perf_counter() - t0
        results[level] = {"generate_s": gen, **evaluate(res.out_dir, args.seed)}
        print(level, json.dumps(results[level]), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    plot(results, out / "floors_vs_nuisance.png")
    print("\n| nuisance | floor | state R² | mechanism R² | activity mAP | retrieved | consistency mAP |")
    print("|---|---|---|---|---|---|---|")
    for level, r in results.items():
        for name in ("pixel_stats", "pixel_stats_dmso", "cp_features"):
            f = r[name]
            print(f"| {level} | {name} | {f['state_r2']:.3f} | {f['mechanism_r2']:.3f} | {f['activity_map']:.3f} | "
                  f"{f['activity_retrieved']:.2f} | {f['consistency_map']:.3f} |")


if __name__ == "__main__":
    main()
