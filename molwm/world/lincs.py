"""LINCS Cell Painting batch 2 as time courses for the world model (the reader: :mod:`molwm.data.formats.lincs`).

One condition per (compound, nominal dose, cell line) and one DMSO condition per cell line, observed at
0, 6, 24 and 48 h; the observation is the median relative cell count of the condition's replicate wells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from molwm.data.formats.lincs import load_lincs_wells
from molwm.world.data import CourseError, TimeCourses


def lincs_courses(wells: pd.DataFrame, source: str = "") -> TimeCourses:
    """Time courses from the well table: one condition per (compound, nominal dose, cell line), and one
    DMSO condition per cell line, observed at 0, 6, 24 and 48 h.

    The observation is the median relative cell count of the condition's replicate wells (five plates);
    at 0 h, before the compound acts, every condition is 1 by definition (the start state forecasts
    roll out from). Different wells are imaged at each time point (the assay is fixed-cell), so a
    "course" is the condition's response over time, not one well followed.
    """
    need = [c for c in ("compound_id", "dose_uM", "cell_line", "time_h", "rel_count", "smiles", "is_control")
            if c not in wells.columns]
    if need:
        raise CourseError(f"LINCS well table lacks column(s) {need}")
    w = wells.copy()
    w["is_control"] = w["is_control"].astype(str).str.lower().isin(["true", "1"])
    w.loc[w["is_control"], "dose_uM"] = 0.0
    keys = ["compound_id", "dose_uM", "cell_line"]
    agg = w.groupby(keys + ["time_h"], sort=True)["rel_count"].median().unstack("time_h")
    times = sorted(float(t) for t in agg.columns)
    agg = agg.reindex(columns=times)
    lines = sorted(w["cell_line"].unique())
    drugs = sorted(w.loc[~w["is_control"], "compound_id"].unique())
    smiles_of = w.drop_duplicates("compound_id").set_index("compound_id")["smiles"]
    didx = {d: i for i, d in enumerate(drugs)}
    idx = agg.index.to_frame(index=False)
    n, all_times = len(agg), [0.0] + times
    obs = np.full((n, len(all_times), 1), np.nan, np.float32)
    obs[:, 0, 0] = 1.0
    obs[:, 1:, 0] = agg.to_numpy(np.float32)
    tt = np.tile(np.asarray(all_times), (n, 1))
    tt[~np.isfinite(obs[..., 0])] = np.nan
    ids = [f"{c}@{d:g}uM@{line}" if c != "DMSO" else f"DMSO@{line}" for c, d, line in idx[keys].itertuples(False)]
    return TimeCourses(
        obs=obs, times=tt, drug=np.array([didx.get(c, -1) for c in idx["compound_id"]], np.int64),
        dose=idx["dose_uM"].to_numpy(float), context=np.array([lines.index(x) for x in idx["cell_line"]]),
        drugs=drugs, smiles=[str(smiles_of[d]) for d in drugs], contexts=lines, obs_names=["rel_count"],
        ids=ids, synthetic=False, source=source,
        mapping={d: "LINCS plate maps + Drug Repurposing Hub / L1000 structures" for d in drugs})


def load_lincs(dataset: str = "lincs_cellpainting_batch2_compact", data_dir: str | Path | None = None,
               progress: bool = False) -> TimeCourses:
    """LINCS batch 2 as time courses (:func:`lincs_courses` of :func:`load_lincs_wells`)."""
    return lincs_courses(load_lincs_wells(dataset, data_dir, progress).wells, source=dataset)
