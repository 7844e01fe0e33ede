"""Time courses: conditions (a drug at a dose in a context) observed at several times.

One :class:`TimeCourses` holds any time-resolved experiment the world model
learns from: thunor's live-cell counts (one well followed over days), or the
synthetic lab's profiles (one well per condition and time point, read as a
course). Readers: :func:`molwm.world.thunor.load_thunor` and
:func:`load_lab_courses`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from molwm.errors import MolwmError


class CourseError(MolwmError, ValueError):
    """A time-course file or table is not in the expected layout (the message names it)."""


@dataclass
class TimeCourses:
    """Conditions followed over time.

    Attributes:
        obs: Observations, NaN where not observed. Shapes: ``[N, T, F]`` float32.
        times: Hours since dosing of each observation, NaN where absent. Shapes: ``[N, T]``.
        drug: Index into ``drugs`` per condition, ``-1`` for vehicle controls. Shapes: ``[N]``.
        dose: Dose in uM per condition (0 for controls). Shapes: ``[N]``.
        context: Index into ``contexts`` (cell line) per condition. Shapes: ``[N]``.
        drugs: Drug names.
        smiles: SMILES per drug, None where the drug has no structure (it then gets a
            learned identity embedding only).
        contexts: Context (cell line) names.
        obs_names: Names of the ``F`` observed features.
        ids: One identifier per condition (well id, or ``compound@dose``).
        truth: Noise-free hidden state per observation where known (simulated data).
            Shapes: ``[N, T, S]`` or None.
        truth_names: Names of the ``S`` truth columns.
        synthetic: True for simulated data.
        source: Where the data came from (file or folder).
        mapping: Per drug, where its SMILES came from (or why it has none).
    """

    obs: np.ndarray
    times: np.ndarray
    drug: np.ndarray
    dose: np.ndarray
    context: np.ndarray
    drugs: list[str]
    smiles: list[str | None]
    contexts: list[str]
    obs_names: list[str]
    ids: list[str]
    truth: np.ndarray | None = None
    truth_names: list[str] = field(default_factory=list)
    synthetic: bool = False
    source: str = ""
    mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        n, t = self.times.shape
        if self.obs.ndim != 3 or self.obs.shape[:2] != (n, t):
            raise CourseError(f"obs must be [N, T, F] with N, T = {n, t}; got {self.obs.shape}")
        for name in ("drug", "dose", "context"):
            if len(getattr(self, name)) != n:
                raise CourseError(f"{name} has {len(getattr(self, name))} rows for {n} conditions")
        if len(self.ids) != n:
            raise CourseError(f"ids has {len(self.ids)} rows for {n} conditions")
        if len(self.smiles) != len(self.drugs):
            raise CourseError(f"{len(self.smiles)} SMILES for {len(self.drugs)} drugs")

    @property
    def n(self) -> int:
        return len(self.drug)

    @property
    def mask(self) -> np.ndarray:
        """``[N, T]`` True where the condition was observed at that slot."""
        return np.isfinite(self.times) & np.isfinite(self.obs).all(axis=2)

    def subset(self, rows: np.ndarray) -> "TimeCourses":
        """The conditions at ``rows`` (drugs and contexts keep their indices)."""
        rows = np.asarray(rows)
        pick = (lambda a: None if a is None else a[rows])
        return TimeCourses(self.obs[rows], self.times[rows], self.drug[rows], self.dose[rows],
                           self.context[rows], self.drugs, self.smiles, self.contexts, self.obs_names,
                           [self.ids[i] for i in rows], pick(self.truth), self.truth_names, self.synthetic,
                           self.source, self.mapping)

    def until(self, hours: float) -> "TimeCourses":
        """The same conditions with every observation after ``hours`` removed (NaN)."""
        late = ~(self.times <= hours)
        times, obs = self.times.copy(), self.obs.copy()
        times[late], obs[late] = np.nan, np.nan
        truth = None if self.truth is None else self.truth.copy()
        if truth is not None:
            truth[late] = np.nan
        return TimeCourses(obs, times, self.drug, self.dose, self.context, self.drugs, self.smiles,
                           self.contexts, self.obs_names, self.ids, truth, self.truth_names, self.synthetic,
                           self.source, self.mapping)

    def summary(self) -> dict:
        m = self.mask
        used = sorted(set(self.drug[self.drug >= 0].tolist()))  # drugs with a condition here (subsets drop some)
        return {"conditions": self.n, "observations": int(m.sum()), "drugs": len(used),
                "drugs_with_structure": sum(self.smiles[d] is not None for d in used),
                "contexts": len(self.contexts), "controls": int((self.drug < 0).sum()),
                "max_time_h": float(np.nanmax(self.times)) if m.any() else float("nan"),
                "features": len(self.obs_names), "synthetic": self.synthetic}


def value_at(courses: TimeCourses, hours: float, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per condition, the slot of the last observation at or before ``hours``.

    Returns ``(slot [N] int, ok [N] bool)``; ``ok`` is False where nothing was observed by then.
    """
    t = np.where(courses.mask, courses.times, np.inf)
    before = t <= hours + tol
    slot = np.where(before, np.arange(t.shape[1])[None, :], -1).max(axis=1)
    return np.maximum(slot, 0), slot >= 0


# ---------------------------------------------------------------- synthetic lab


def load_lab_courses(lab: str | Path, features: Sequence[str] | None = None) -> TimeCourses:
    """Read a synthetic lab (``molwm sim generate --times ...``) as time courses (see :func:`lab_courses_and_wells`)."""
    return lab_courses_and_wells(lab, features)[0]


def lab_courses_and_wells(lab: str | Path, features: Sequence[str] | None = None
                          ) -> tuple[TimeCourses, np.ndarray]:
    """Read a synthetic lab (``molwm sim generate --times ...``) as time courses, and the well of each slot.

    Each (compound, dose) is one condition; its wells at the lab's time points are
    its observations (profiles.parquet features). DMSO wells are paired across
    time points by their position on the plate (the biology has no plate effects).
    ``truth`` holds the simulated state each well was rendered from.

    Args:
        lab: The lab folder.
        features: Profile columns to use (default: every ``Cells_/Nuclei_/Cytoplasm_`` column).

    Returns:
        ``(courses, wells)``: ``wells [N, T]`` is the row in ``well.csv`` observed at each slot
        (-1 where none; with several replicate wells of a slot, the last one read), which is how
        the image-level world model (:mod:`molwm.world.images`) finds each slot's site.
    """
    lab = Path(lab)
    manifest = lab / "manifest.json"
    if not manifest.is_file():
        raise CourseError(f"{lab}: not a synthetic lab (no manifest.json); make one with `molwm sim generate`")
    meta = json.loads(manifest.read_text())
    prof_path = lab / "profiles.parquet"
    if not prof_path.is_file():
        raise CourseError(f"{prof_path}: missing; the lab was generated without images "
                          "(profiles are measured from them); run `molwm sim generate` without --no-images")
    prof = pd.read_parquet(prof_path)
    wells = pd.read_csv(lab / "well.csv")
    compounds = pd.read_csv(lab / "compound.csv", keep_default_na=False)
    state = np.load(lab / "truth" / "state.npy")
    if len(state) != len(wells):
        raise CourseError(f"{lab}/truth/state.npy has {len(state)} rows for {len(wells)} wells in well.csv")
    wells["_row"] = np.arange(len(wells))
    key = ["Metadata_Plate", "Metadata_Well"]
    merged = wells.merge(prof, on=key, how="left", suffixes=("", "_p"), validate="one_to_one")
    feats = list(features) if features is not None else [
        c for c in prof.columns if c.split("_", 1)[0] in ("Cells", "Nuclei", "Cytoplasm")]
    missing = [f for f in feats if f not in merged.columns]
    if missing:
        raise CourseError(f"{prof_path}: no column(s) {missing}")
    times = sorted(float(t) for t in meta["times"])
    is_ctrl = merged["Metadata_JCP2022"].eq("DMSO")
    # controls: k-th DMSO well of each time point (by plate, then position) forms course k
    merged["_cond"] = merged["Metadata_JCP2022"] + "@" + merged["Metadata_Dose_uM"].map(lambda d: f"{d:g}")
    ctrl = merged[is_ctrl].sort_values(["Metadata_Time_h", "Metadata_Plate", "Metadata_Well"]).copy()
    ctrl["_cond"] = "DMSO#" + ctrl.groupby("Metadata_Time_h").cumcount().astype(str)
    merged.loc[ctrl.index, "_cond"] = ctrl["_cond"]
    conds = list(dict.fromkeys(merged.loc[~is_ctrl, "_cond"])) + sorted(
        set(ctrl["_cond"]), key=lambda s: int(s.split("#")[1]))
    cidx = {c: i for i, c in enumerate(conds)}
    tidx = {t: j for j, t in enumerate(times)}
    n, t_n, f_n = len(conds), len(times), len(feats)
    obs = np.full((n, t_n, f_n), np.nan, np.float32)
    tt = np.full((n, t_n), np.nan)
    truth = np.full((n, t_n, state.shape[1]), np.nan)
    ci = merged["_cond"].map(cidx).to_numpy()
    tj = merged["Metadata_Time_h"].astype(float).map(tidx).to_numpy()
    obs[ci, tj] = merged[feats].to_numpy(np.float32)
    tt[ci, tj] = merged["Metadata_Time_h"].to_numpy(float)
    truth[ci, tj] = state[merged["_row"].to_numpy()]
    wells_at = np.full((n, t_n), -1, np.int64)
    wells_at[ci, tj] = merged["_row"].to_numpy()
    first = merged.drop_duplicates("_cond").set_index("_cond").loc[conds]
    drug_names = compounds.loc[compounds["Metadata_JCP2022"] != "DMSO", "Metadata_JCP2022"].tolist()
    smiles_of = dict(zip(compounds["Metadata_JCP2022"], compounds["Metadata_SMILES"]))
    didx = {d: i for i, d in enumerate(drug_names)}
    drug = np.array([didx.get(c, -1) for c in first["Metadata_JCP2022"]], np.int64)
    courses = TimeCourses(
        obs=obs, times=tt, drug=drug, dose=first["Metadata_Dose_uM"].to_numpy(float),
        context=np.zeros(n, np.int64), drugs=drug_names, smiles=[smiles_of[d] or None for d in drug_names],
        contexts=["sim"], obs_names=feats, ids=conds, truth=truth,
        truth_names=list(meta.get("state_names", [f"s{i}" for i in range(state.shape[1])])),
        synthetic=bool(meta.get("synthetic", True)), source=str(lab),
        mapping={d: "synthetic lab compound.csv" for d in drug_names})
    return courses, wells_at
