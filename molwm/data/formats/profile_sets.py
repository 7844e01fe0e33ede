"""Real well-profile sets (the cell-injury screen, the LINCS plate SQ00015054): one well table, one feature matrix.

Both sets are CellProfiler features aggregated per well by pycytominer, **already normalised and
feature-selected upstream** (each authors' pipeline: robust z-scores against the plate's negative controls,
then correlation / variance / outlier feature selection). The readers keep the values as published; they
do not normalise again. :func:`dmso_normalise` re-normalises to each plate's DMSO wells when a caller asks
for it explicitly (it is never applied by a reader).

The compact copies molwm ships (``datasets/real_cells/``) use the pycytominer layout: every well's metadata
as ``Metadata_<column>`` columns, then the features rounded to float16 and written with ``%.4g``, split
into gzip files (zero timestamp) of at most ``rows_per_file`` wells, so a rebuild is byte-identical and
no file passes the repository's 2 MB limit. :func:`read_profile_compact` reads them back through
:func:`molwm.data.formats.profiles.read_profiles`.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from molwm.atomic import write_bytes_atomic
from molwm.data.formats.common import FormatError
from molwm.data.formats.profiles import META_PREFIX, read_profiles

WELL_COLUMNS = ("plate", "well", "compound_id", "smiles", "dose_uM", "time_h", "cell_line", "label",
                "is_control")
"""Columns every profile set's well table starts with; ``label`` is the class (injury type, MoA)."""
REJECT_COLUMNS = ("plate", "well", "file", "reason")
FLOAT16_MAX = 65504.0


@dataclass
class ProfileWells:
    """Wells of a profile set, their features, and every well that was not kept.

    Attributes:
        wells: One row per well: :data:`WELL_COLUMNS` then set-specific columns.
        features: Feature values as published (float32).
        feature_names: Column name of each feature.
        rejects: ``plate, well, file, reason`` of every well read but not kept.
        files: The files read (relative path or name -> local path).

    Shapes:
        features: ``[N, F]``, row ``i`` is ``wells.iloc[i]``.
    """

    wells: pd.DataFrame
    features: np.ndarray
    feature_names: list[str]
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(REJECT_COLUMNS)))
    files: dict[str, Path] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.wells)

    def summary(self) -> dict:
        w = self.wells
        return {"wells": len(w), "plates": int(w["plate"].nunique()), "features": len(self.feature_names),
                "compounds": int(w.loc[~w["is_control"], "compound_id"].nunique()),
                "dmso_wells": int(w["is_control"].sum()), "rejects": len(self.rejects),
                "labels": int(w.loc[~w["is_control"], "label"].nunique())}


def first_bad_number(values: pd.Series) -> int | None:
    """Row of the first cell that is not blank and not a number, or None."""
    text = values.astype(str).str.strip()
    bad = pd.to_numeric(values, errors="coerce").isna() & (text != "") & values.notna()
    return int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else None


def numeric_features(frame: pd.DataFrame, names: Sequence[str], source: str) -> np.ndarray:
    """The feature columns as float32; a text cell is a one-line error naming the file, line and column.

    Shapes:
        returns ``[len(frame), len(names)]``.
    """
    out = np.empty((len(frame), len(names)), np.float32)
    for j, name in enumerate(names):
        col = frame[name]
        if not pd.api.types.is_numeric_dtype(col):
            row = first_bad_number(col)
            if row is not None:
                raise FormatError(f"{source} line {row + 2}: feature {name!r} is {col.iloc[row]!r}, not a number")
        out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return out


def dmso_normalise(wells: ProfileWells, by: str = "plate") -> ProfileWells:
    """Robust z-scores against the DMSO wells of each ``by`` group (median, 1.4826 x MAD; pycytominer's
    ``mad_robustize``). Not applied by any reader: the published features are already normalised.

    Raises:
        FormatError: If a group has no DMSO well.
    """
    x = wells.features.astype(np.float64).copy()  # [N, F]
    groups = wells.wells[by].to_numpy()
    control = wells.wells["is_control"].to_numpy(bool)
    for g in pd.unique(groups):
        rows = groups == g
        ref = x[rows & control]
        if not len(ref):
            raise FormatError(f"cannot normalise to DMSO: {by} {g} has no DMSO well")
        med = np.median(ref, axis=0)
        mad = 1.4826 * np.median(np.abs(ref - med), axis=0)
        x[rows] = (x[rows] - med) / np.where(mad > 0, mad, 1.0)
    return ProfileWells(wells.wells, x.astype(np.float32), list(wells.feature_names), wells.rejects, wells.files)


def number_text(values: pd.Series) -> pd.Series:
    """Numbers as ``%.6g`` text (blank for NaN), so the compact bytes never depend on pandas' float repr."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(int).astype(str)
    if pd.api.types.is_numeric_dtype(values):
        return pd.Series([("" if not np.isfinite(v) else f"{v:.6g}") for v in values.astype(float)],
                         index=values.index)
    return values.fillna("").astype(str)


def write_profile_compact(wells: ProfileWells, folder: str | Path, stem: str, rows_per_file: int) -> list[Path]:
    """Write ``<stem>_<k>.csv.gz`` (k = 1, 2, ...): ``Metadata_`` columns then features (float16, ``%.4g``).

    Rows are sorted by plate and well; the bytes depend only on ``wells``. Each file is written to a
    temporary file and renamed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = np.lexsort((wells.wells["well"].to_numpy(), wells.wells["plate"].to_numpy()))
    meta = wells.wells.iloc[order].reset_index(drop=True)
    x = wells.features[order].astype(np.float64)  # [N, F]
    small = np.abs(x) < FLOAT16_MAX
    x = np.where(small, x.astype(np.float16).astype(np.float64), x)
    table = pd.concat([pd.DataFrame({META_PREFIX + c: number_text(meta[c]) for c in meta.columns}),
                       pd.DataFrame(x, columns=list(wells.feature_names))], axis=1)
    paths = []
    for k, start in enumerate(range(0, len(table), rows_per_file), start=1):
        part = table.iloc[start:start + rows_per_file]
        text = part.to_csv(index=False, float_format="%.4g", lineterminator="\n").encode()
        paths.append(write_bytes_atomic(folder / f"{stem}_{k}.csv.gz", gzip.compress(text, compresslevel=9,
                                                                                     mtime=0)))
    return paths


def read_profile_compact(paths: Sequence[str | Path], numeric: Sequence[str] = ("dose_uM", "time_h")) -> ProfileWells:
    """The wells and features :func:`write_profile_compact` wrote (files in the order given).

    Args:
        paths: The ``<stem>_<k>.csv.gz`` files.
        numeric: Metadata columns read as numbers (every one must be a number in every row).

    Raises:
        FormatError: Naming the file and line, when a file is unreadable, its features differ from the
            first file's, or a numeric column holds text.
    """
    metas, feats, names = [], [], None
    for path in paths:
        table = read_profiles(path)
        if names is None:
            names = table.feature_names
        elif table.feature_names != names:
            raise FormatError(f"{path}: its {len(table.feature_names)} features are not those of {paths[0]}")
        meta = table.meta.astype(object).where(table.meta.notna(), "")
        meta.columns = [c[len(META_PREFIX):] for c in meta.columns]
        missing = [c for c in WELL_COLUMNS if c not in meta.columns]
        if missing:
            raise FormatError(f"{path}: no column(s) {', '.join(META_PREFIX + c for c in missing)}")
        for col in numeric:
            values = pd.to_numeric(meta[col].astype(str), errors="coerce")
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise FormatError(f"{path} line {row + 2}: {META_PREFIX}{col} {meta[col].iloc[row]!r} is not a number")
            meta[col] = values.astype(float)
        meta["is_control"] = meta["is_control"].astype(str).isin(["1", "True", "true"])
        metas.append(meta)
        feats.append(table.features)
    if not metas:
        raise FormatError("no compact profile file given")
    wells = pd.concat(metas, ignore_index=True)
    for col in wells.columns:
        if col not in numeric and col != "is_control":
            wells[col] = wells[col].astype(str)
    return ProfileWells(wells, np.concatenate(feats), list(names), files={Path(p).name: Path(p) for p in paths})
