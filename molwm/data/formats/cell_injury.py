"""The cell-injury Cell Painting screen (Dahlin et al. 2023, Nat Commun 14:1364; IDR idr0133), as Way Science published it.

U2OS cells, 24 h and 48 h after compounds at about six concentrations (0.02-20 uM), 15 injury classes
(``injury_type``, ``Control`` for DMSO). Raw layout (github.com/axiomcura/predicting-cell-injury-compounds,
``results/1.data_splits/``), read as it is:

* ``fs_plate_holdout.csv.gz``, ``fs_treatment_holdout.csv.gz``, ``fs_well_holdout.csv.gz``: together 3,199
  wells, each row 33 metadata columns (``Plate``, ``Well``, ``Compound Name``, ``Compound SMILES``,
  ``Compound Concentration (microMolar)``, ``Experimental Condition [Treatment time (h)]``, ``injury_type``,
  ``Control Type``, ``Relative well cellcount``, ``Mahalanobis distance`` ...) then 352 CellProfiler
  features (``Cells_``, ``Cytoplasm_``, ``Nuclei_``). The split into three files is the upstream authors'
  hold-out design; molwm reads them as one set and keeps the file in ``source``.
* ``aligned_cell_injury_metadata_after_holdout.csv.gz``: the same 33 metadata columns for the other
  13,502 wells, whose features are not public in this layout: scalar read-outs only
  (:func:`read_cell_injury_readouts`).

Normalisation: the features are **already normalised and feature-selected upstream** (pycytominer: robust
z-scores against each plate's DMSO wells, then feature selection) and are kept as published;
:func:`molwm.data.formats.profile_sets.dmso_normalise` does it again only when asked.

Nothing is dropped silently: a treated well without a SMILES, a dose or time that is not a number, a
repeated plate and well, or a feature that is not finite makes a row of ``rejects`` with its reason.
Positive-control compounds (``Control Type`` ``Positive``) are treated wells with their own structure and
class; only DMSO (``Negative``) wells are controls.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from molwm.atomic import write_bytes_atomic
from molwm.data.formats.common import FormatError, read_csv_text, require_columns
from molwm.data.formats.profile_sets import (REJECT_COLUMNS, WELL_COLUMNS, ProfileWells, number_text,
                                             numeric_features, read_profile_compact, write_profile_compact)

UPSTREAM = "cell-injury-wayscience"
SPLITS = f"{UPSTREAM}/results/1.data_splits"
PROFILE_FILES = tuple(f"{SPLITS}/fs_{part}_holdout.csv.gz" for part in ("plate", "treatment", "well"))
READOUTS_FILE = f"{SPLITS}/aligned_cell_injury_metadata_after_holdout.csv.gz"
FEATURE_PREFIXES = ("Cells_", "Cytoplasm_", "Nuclei_")
RAW = {"plate": "Plate", "well": "Well", "compound_id": "Compound Name", "smiles": "Compound SMILES",
       "dose_uM": "Compound Concentration (microMolar)", "time_h": "Experimental Condition [Treatment time (h)]",
       "cell_line": "Characteristics [Cell Line]", "label": "injury_type", "control_type": "Control Type",
       "compound_class": "Compound Class", "batch": "Experimental Condition [Experimental Batch]",
       "rel_cell_count": "Relative well cellcount", "mahalanobis": "Mahalanobis distance"}
"""molwm column -> the upstream column it is read from."""
EXTRA_COLUMNS = ("control_type", "compound_class", "batch", "rel_cell_count", "mahalanobis", "source")
NUMERIC = ("dose_uM", "time_h", "rel_cell_count", "mahalanobis")
COMPACT_STEM = "cell_injury_profiles"
COMPACT_READOUTS = "cell_injury_readouts.csv.gz"
ROWS_PER_FILE = 1100
"""Wells per compact profile file (3 files of about 1 MB each)."""


def _metadata(raw: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[tuple]]:
    """The well table of a raw file's metadata columns and the rejects among its rows (by row position)."""
    require_columns(raw, RAW.values(), source)
    meta = pd.DataFrame({ours: raw[theirs].astype(str).str.strip() for ours, theirs in RAW.items()})
    meta["is_control"] = meta["control_type"] == "Negative"
    meta["smiles"] = meta["smiles"].mask(meta["smiles"].isin(["nan", "NA"]), "")
    meta["source"] = Path(source).name.removesuffix(".csv.gz")
    for col in NUMERIC:
        meta[col] = pd.to_numeric(meta[col].mask(meta[col] == "", np.nan), errors="coerce")
    meta.loc[meta["is_control"], "dose_uM"] = 0.0  # DMSO: no concentration in the file
    rejects = []
    checks = (
        (~meta["is_control"] & (meta["smiles"] == ""), lambda r: f"{r.compound_id}: no SMILES in the row"),
        (~meta["is_control"] & ~(meta["dose_uM"] > 0), lambda r: f"{r.compound_id}: concentration is not a positive number"),
        (~(meta["time_h"] > 0), lambda r: "treatment time is not a positive number"),
    )
    bad = np.zeros(len(meta), bool)
    for mask, why in checks:
        for i in np.flatnonzero(mask.to_numpy() & ~bad):
            r = meta.iloc[i]
            rejects.append((r.plate, r.well, source, f"line {i + 2}: {why(r)}"))
        bad |= mask.to_numpy()
    meta["_ok"] = ~bad
    return meta, rejects


def read_cell_injury_wells(files: dict[str, Path]) -> ProfileWells:
    """The 3,199 profiled wells of the three ``fs_*_holdout`` files, with their 352 features.

    Args:
        files: Relative path (as on the card) -> local file (:func:`molwm.data.sources.resolve_files`).

    Raises:
        FormatError: Naming the file (and line), when a file is missing or unreadable, lacks a column,
            holds text in a feature column, or has other features than the first file.
    """
    metas, feats, rejects, names = [], [], [], None
    for rel in PROFILE_FILES:
        if rel not in files:
            raise FormatError(f"the cell-injury files lack {rel}")
        raw = read_csv_text(files[rel], rel)
        cols = [c for c in raw.columns if c.startswith(FEATURE_PREFIXES)]
        if names is None:
            names = cols
        elif cols != names:
            raise FormatError(f"{rel}: its {len(cols)} feature columns are not those of {PROFILE_FILES[0]}")
        if not cols:
            raise FormatError(f"{rel}: no feature column (Cells_, Cytoplasm_, Nuclei_)")
        x = numeric_features(raw, cols, rel)  # [n, F]
        meta, bad = _metadata(raw, rel)
        not_finite = ~np.isfinite(x).all(1) & meta["_ok"].to_numpy()
        for i in np.flatnonzero(not_finite):
            bad.append((meta["plate"].iloc[i], meta["well"].iloc[i], rel,
                        f"line {i + 2}: {int((~np.isfinite(x[i])).sum())} feature(s) are not finite"))
        meta["_ok"] &= ~not_finite
        metas.append(meta)
        feats.append(x)
        rejects += bad
    meta = pd.concat(metas, ignore_index=True)
    x = np.concatenate(feats)
    dup = meta["_ok"] & meta.where(meta["_ok"]).duplicated(["plate", "well"], keep="first")
    for i in np.flatnonzero(dup.to_numpy()):
        r = meta.iloc[i]
        rejects.append((r.plate, r.well, f"{SPLITS}/{r.source}.csv.gz", "the same plate and well appear earlier"))
    keep = (meta["_ok"] & ~dup).to_numpy()
    wells = meta.loc[keep, list(WELL_COLUMNS) + list(EXTRA_COLUMNS)].reset_index(drop=True)
    return ProfileWells(wells, x[keep], list(names), pd.DataFrame(rejects, columns=list(REJECT_COLUMNS)),
                        {r: files[r] for r in PROFILE_FILES})


def read_cell_injury_readouts(files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scalar read-outs (relative cell count, Mahalanobis distance) of all 16,701 wells: the profiled wells'
    own columns and the 13,502 wells of ``aligned_cell_injury_metadata_after_holdout.csv.gz``.

    Returns:
        ``(readouts, rejects)``: one row per well (:data:`WELL_COLUMNS`, the extra columns and
        ``profiled``: whether its features are in the profile files), and the rows not kept with reasons.

    Raises:
        FormatError: Naming the file, when a file is missing, unreadable or lacks a column.
    """
    parts, rejects = [], []
    for rel in PROFILE_FILES + (READOUTS_FILE,):
        if rel not in files:
            raise FormatError(f"the cell-injury files lack {rel}")
        raw = read_csv_text(files[rel], rel)
        meta, bad = _metadata(raw, rel)
        meta["profiled"] = rel != READOUTS_FILE
        parts.append(meta)
        rejects += bad
    meta = pd.concat(parts, ignore_index=True)
    dup = meta["_ok"] & meta.where(meta["_ok"]).duplicated(["plate", "well"], keep="first")
    for r in meta[dup].itertuples():
        rejects.append((r.plate, r.well, f"{SPLITS}/{r.source}.csv.gz", "the same plate and well appear earlier"))
    out = meta[meta["_ok"] & ~dup].drop(columns="_ok")
    out = out.sort_values(["plate", "well"]).reset_index(drop=True)
    return out[list(WELL_COLUMNS) + list(EXTRA_COLUMNS) + ["profiled"]], pd.DataFrame(rejects,
                                                                                         columns=list(REJECT_COLUMNS))


def write_compact(wells: ProfileWells, readouts: pd.DataFrame, folder: str | Path) -> list[Path]:
    """The compact copy: ``cell_injury_profiles_<k>.csv.gz`` (every profiled well, float16 features) and
    ``cell_injury_readouts.csv.gz`` (scalar read-outs of every well); bytes depend only on the inputs."""
    paths = write_profile_compact(wells, folder, COMPACT_STEM, ROWS_PER_FILE)
    table = pd.DataFrame({c: number_text(readouts[c]) for c in readouts.columns})
    text = table.to_csv(index=False, lineterminator="\n").encode()
    paths.append(write_bytes_atomic(Path(folder) / COMPACT_READOUTS, gzip.compress(text, compresslevel=9, mtime=0)))
    return paths


def read_compact(*paths: str | Path) -> ProfileWells:
    """The profiled wells from the compact files (``cell_injury_profiles_<k>.csv.gz``, in order; other
    files given are ignored, so a card's file list can be passed as it is)."""
    parts = sorted((Path(p) for p in paths if Path(p).name.startswith(COMPACT_STEM + "_")),
                   key=lambda p: int(p.name.removeprefix(COMPACT_STEM + "_").split(".")[0]))
    if not parts:
        raise FormatError(f"no {COMPACT_STEM}_<k>.csv.gz among {', '.join(str(p) for p in paths)}")
    return read_profile_compact(parts, numeric=NUMERIC)


def read_compact_readouts(path: str | Path) -> pd.DataFrame:
    """The scalar read-outs from ``cell_injury_readouts.csv.gz``.

    Raises:
        FormatError: Naming the file and line, when a numeric column holds text.
    """
    table = read_csv_text(Path(path), "cell-injury read-outs")
    require_columns(table, list(WELL_COLUMNS) + list(EXTRA_COLUMNS) + ["profiled"], path)
    for col in NUMERIC:
        values = pd.to_numeric(table[col].mask(table[col] == "", np.nan), errors="coerce")
        text = (table[col] != "") & values.isna()
        if text.any():
            row = int(np.flatnonzero(text.to_numpy())[0])
            raise FormatError(f"{path} line {row + 2}: {col} {table[col].iloc[row]!r} is not a number")
        table[col] = values
    for col in ("is_control", "profiled"):
        table[col] = table[col].astype(str).isin(["1", "True", "true"])
    return table
