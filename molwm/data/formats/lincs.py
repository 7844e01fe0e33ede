"""LINCS Cell Painting, batch ``2017_12_05_Batch2``: per-well cell counts as a real dose x time x cell-line response.

330 compounds (328 with a SMILES) on A549, MCF7 and U2OS cells, imaged 6, 24 and 48 h after 0.1, 1 and
10 uM, five replicate plates per plate map, DMSO wells on every plate (see the card
``datasets/lincs_cellpainting_batch2.yaml`` and ``docs/real_cells.md``). The raw layout, read as it is:

* ``profiles/cell_count/2017_12_05_Batch2/<plate>/<plate>_cell_count.csv``: ``Metadata_Plate``,
  ``Metadata_Well``, ``cell_count`` (CellProfiler's object count per well);
* ``metadata/platemaps/2017_12_05_Batch2/barcode_platemap.csv``: plate barcode -> plate map name;
* ``metadata/platemaps/2017_12_05_Batch2/platemap/<name>.txt``: ``cell_line``, ``time_point``,
  ``well_position``, ``broad_sample`` (``NA`` for DMSO) and ``mmoles_per_liter`` (which is uM);
* structures: the compound id (first 13 characters of ``broad_sample``) in the Drug Repurposing Hub's
  ``repurposing_info.tsv``, then its older ``clue/repurposing_samples_*.txt`` releases, then the L1000
  perturbagen table ``dhimmel-lincs/data/pertinfo/pertinfo.tsv.gz``.

Normalisation, done here: each well's count is divided by the median count of the DMSO wells of the same
plate (the *relative cell count*: 1 = as many cells as the vehicle, 0 = none left), so plate, day and
cell-line growth differences cancel. Doses are grouped to the nearest of 0.1, 1 and 10 uM in log dose
(a few samples were plated at 0.967 x the nominal dose; the well table keeps the plated dose).

Nothing is dropped silently: a well that does not join (a plate without a plate map, a well missing from
its plate map, a compound with no structure in any source, a count that is not a number) is a row of
``rejects`` with its reason; :func:`molwm.world.lincs.lincs_courses` turns the wells into time courses.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from molwm.data.formats.common import FormatError

BATCH = "2017_12_05_Batch2"
LINCS = "lincs-cell-painting"
COUNTS = f"{LINCS}/profiles/cell_count/{BATCH}"
PLATEMAPS = f"{LINCS}/metadata/platemaps/{BATCH}"
BARCODES = f"{PLATEMAPS}/barcode_platemap.csv"
REPURPOSING = f"{LINCS}/metadata/moa/repurposing_info.tsv"
CLUE_SAMPLES = f"{LINCS}/metadata/moa/clue/repurposing_samples_"
PERTINFO = "dhimmel-lincs/data/pertinfo/pertinfo.tsv.gz"
NOMINAL_DOSES = (0.1, 1.0, 10.0)
TIMES_H = (6.0, 24.0, 48.0)
WELL_COLUMNS = ("plate", "well", "plate_map", "cell_line", "time_h", "compound_id", "dose_uM", "dose_plated_uM",
                "cell_count", "dmso_median", "rel_count", "is_control", "smiles", "smiles_source", "moa")
"""Columns of the well table (:func:`read_lincs_wells`, :func:`read_compact`)."""
COMPOUND_COLUMNS = ("compound_id", "smiles", "smiles_source", "moa")
"""Columns of the compact set's compound table (the rest are the well table's, less ``rel_count``)."""
COMPACT_WELLS = "lincs_batch2_wells.csv.gz"
COMPACT_COMPOUNDS = "lincs_batch2_compounds.csv"
COMPACT_REJECTS = "lincs_batch2_rejects.csv"


@dataclass
class LincsWells:
    """Every well of the batch, joined and normalised, and what did not join.

    Attributes:
        wells: One row per joined well (:data:`WELL_COLUMNS`).
        rejects: ``plate, well, file, reason`` of every well (or file) not in ``wells``.
        files: The files read (relative path -> local path).
    """

    wells: pd.DataFrame
    rejects: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict:
        w = self.wells
        return {"wells": len(w), "plates": int(w["plate"].nunique()), "rejects": len(self.rejects),
                "compounds": int(w.loc[~w["is_control"], "compound_id"].nunique()),
                "dmso_wells": int(w["is_control"].sum()), "cell_lines": sorted(w["cell_line"].unique().tolist())}


def _read_text(path: Path, name: str, **kw) -> pd.DataFrame:
    """A CSV/TSV file (``.gz`` too) read as strings; errors name the file."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, **kw)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as err:
        raise FormatError(f"{name} ({path}): unreadable ({type(err).__name__}: {err})") from None


def _need(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FormatError(f"{name}: no column(s) {missing}; columns present: {list(frame.columns)[:12]}")


def structure_table(files: dict[str, Path]) -> pd.DataFrame:
    """Compound id (13 characters) -> ``smiles``, ``smiles_source``, ``moa``, from the first source that has it."""
    parts = []
    if REPURPOSING in files:
        info = _read_text(files[REPURPOSING], REPURPOSING, sep="\t")
        _need(info, ("broad_id", "smiles", "moa"), REPURPOSING)
        parts.append(pd.DataFrame({"compound_id": info["broad_id"].str[:13], "smiles": info["smiles"],
                                   "moa": info["moa"], "smiles_source": "repurposing_info.tsv"}))
    for rel in sorted((r for r in files if r.startswith(CLUE_SAMPLES)), reverse=True):  # newest release first
        raw = files[rel].read_bytes().decode("latin-1")
        text = "\n".join(line for line in raw.splitlines() if not line.startswith("!"))
        clue = _read_text(io.StringIO(text), rel, sep="\t") if text.strip() else pd.DataFrame()
        if {"broad_id", "smiles"} <= set(clue.columns):
            parts.append(pd.DataFrame({"compound_id": clue["broad_id"].str[:13], "smiles": clue["smiles"],
                                       "moa": "", "smiles_source": Path(rel).name}))
    if PERTINFO in files:
        pert = _read_text(files[PERTINFO], PERTINFO, sep="\t")
        _need(pert, ("pert_id", "canonical_smiles"), PERTINFO)
        parts.append(pd.DataFrame({"compound_id": pert["pert_id"].str[:13], "smiles": pert["canonical_smiles"],
                                   "moa": "", "smiles_source": "pertinfo.tsv.gz"}))
    if not parts:
        return pd.DataFrame(columns=["compound_id", "smiles", "moa", "smiles_source"])
    table = pd.concat(parts, ignore_index=True)
    table["smiles"] = table["smiles"].str.strip()
    table = table[~table["smiles"].isin(["", "NA", "-666", "nan"])]
    moa = table[table["moa"] != ""].drop_duplicates("compound_id").set_index("compound_id")["moa"]
    first = table.drop_duplicates("compound_id").set_index("compound_id")
    first["moa"] = moa.reindex(first.index).fillna("")
    return first.reset_index()


def nominal_dose(dose_um: np.ndarray) -> np.ndarray:
    """Each dose's nearest nominal dose (0.1, 1, 10 uM) in log10 dose; NaN stays NaN."""
    dose = np.asarray(dose_um, np.float64)
    levels = np.log10(np.asarray(NOMINAL_DOSES))
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.abs(np.log10(dose)[:, None] - levels[None]).argmin(1)
    return np.where(np.isfinite(dose) & (dose > 0), np.asarray(NOMINAL_DOSES)[idx], np.nan)


def read_lincs_wells(files: dict[str, Path], progress: bool = False) -> LincsWells:
    """Join every plate's cell counts to its plate map and structures, normalised to the plate's DMSO.

    Args:
        files: Relative path (as on the card) -> local file, for the batch's count files, plate maps,
            barcode map and structure sources (:func:`molwm.data.sources.resolve_files` gives them).
        progress: Show a progress bar over plates.

    Raises:
        FormatError: Naming the file, when a file cannot be read or lacks a needed column.
    """
    if BARCODES not in files:
        raise FormatError(f"the LINCS batch-2 files lack {BARCODES}")
    barcodes = _read_text(files[BARCODES], BARCODES)
    _need(barcodes, ("Assay_Plate_Barcode", "Plate_Map_Name"), BARCODES)
    plate_map = dict(zip(barcodes["Assay_Plate_Barcode"], barcodes["Plate_Map_Name"]))
    maps: dict[str, pd.DataFrame] = {}
    for rel, path in files.items():
        if rel.startswith(f"{PLATEMAPS}/platemap/") and rel.endswith(".txt"):
            m = _read_text(path, rel, sep="\t")
            _need(m, ("plate_map_name", "cell_line", "time_point", "well_position", "broad_sample",
                      "mmoles_per_liter"), rel)
            maps[Path(rel).stem] = m.set_index("well_position")
    structures = structure_table(files).set_index("compound_id")
    counts = sorted(r for r in files if r.startswith(COUNTS + "/") and r.endswith("_cell_count.csv"))
    if not counts:
        raise FormatError(f"the LINCS batch-2 files hold no cell-count file under {COUNTS}/")
    rows, rejects = [], []
    from tqdm.auto import tqdm

    for rel in tqdm(counts, desc="LINCS plates", unit="plate", disable=not progress):
        frame = _read_text(files[rel], rel)
        _need(frame, ("Metadata_Plate", "Metadata_Well", "cell_count"), rel)
        plate = Path(rel).parent.name
        name = plate_map.get(plate)
        if name is None or name not in maps:
            why = "plate not in barcode_platemap.csv" if name is None else f"plate map {name}.txt missing"
            rejects += [(plate, w, rel, why) for w in frame["Metadata_Well"]]
            continue
        pm = maps[name]
        joined = frame.join(pm, on="Metadata_Well", how="left")
        count = pd.to_numeric(joined["cell_count"], errors="coerce")
        unmapped = joined["plate_map_name"].isna()
        bad = count.isna() & ~unmapped
        control = joined["broad_sample"].isin(["NA", ""]) & ~unmapped
        dmso = count[control & ~bad]
        if not len(dmso) or not dmso.median() > 0:
            rejects += [(plate, w, rel, "plate has no DMSO well with a count") for w in joined["Metadata_Well"]]
            continue
        for w in joined.loc[unmapped, "Metadata_Well"]:
            rejects.append((plate, w, rel, f"well not in plate map {name}"))
        for w, c in zip(joined.loc[bad, "Metadata_Well"], joined.loc[bad, "cell_count"]):
            rejects.append((plate, w, rel, f"cell_count {c!r} is not a number"))
        ok = joined[~unmapped & ~bad].copy()
        ok["cell_count"] = count[~unmapped & ~bad]
        ok["plate"], ok["plate_map"], ok["dmso_median"] = plate, name, float(dmso.median())
        rows.append(ok)
    if not rows:
        raise FormatError("no LINCS well joined to a plate map (see the rejects)")
    w = pd.concat(rows, ignore_index=True)
    control = w["broad_sample"].isin(["NA", ""])
    plated = pd.to_numeric(w["mmoles_per_liter"].where(~control), errors="coerce")
    out = pd.DataFrame({
        "plate": w["plate"], "well": w["Metadata_Well"], "plate_map": w["plate_map"], "cell_line": w["cell_line"],
        "time_h": pd.to_numeric(w["time_point"].str.rstrip("Hh"), errors="coerce"),
        "compound_id": w["broad_sample"].str[:13].where(~control, "DMSO"),
        "dose_uM": np.where(control, 0.0, nominal_dose(plated.to_numpy())),
        "dose_plated_uM": plated.fillna(0.0).to_numpy(), "cell_count": w["cell_count"].astype(float),
        "dmso_median": w["dmso_median"], "rel_count": w["cell_count"].astype(float) / w["dmso_median"],
        "is_control": control.to_numpy()})
    found = out["compound_id"].map(structures["smiles"])
    out["smiles"] = found.where(~out["is_control"], "CS(C)=O")
    out["smiles_source"] = out["compound_id"].map(structures["smiles_source"]).where(~out["is_control"], "DMSO")
    out["moa"] = out["compound_id"].map(structures["moa"]).fillna("").where(~out["is_control"], "")
    bad_time = out["time_h"].isna()
    bad_dose = ~out["is_control"] & ~np.isfinite(out["dose_uM"])
    no_smiles = ~out["is_control"] & out["smiles"].isna()
    for mask, why in ((bad_time, "time_point is not '<hours>H'"), (bad_dose, "dose is not a positive number"),
                      (no_smiles & ~bad_time & ~bad_dose, "compound has no structure in any source")):
        for r in out[mask].itertuples():
            reason = why if "structure" not in why else f"{r.compound_id}: {why}"
            rejects.append((r.plate, r.well, f"{COUNTS}/{r.plate}/{r.plate}_cell_count.csv", reason))
    out = out[~(bad_time | bad_dose | no_smiles)].sort_values(["plate", "well"]).reset_index(drop=True)
    return LincsWells(out[list(WELL_COLUMNS)], pd.DataFrame(rejects, columns=["plate", "well", "file", "reason"]),
                      dict(files))


# ---------------------------------------------------------------- the compact copy shipped in the repository


def write_compact(wells: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Write the well table as the compact pair the repository ships: ``lincs_batch2_wells.csv.gz`` (one
    row per well, no structures; gzip with a zero timestamp) and ``lincs_batch2_compounds.csv``.

    The bytes depend only on ``wells`` (sorted rows, fixed float formats, no timestamps), so rebuilding
    from the same raw files gives byte-identical files. Each is written to a temporary file and renamed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    comp = (wells[list(COMPOUND_COLUMNS)].drop_duplicates("compound_id").sort_values("compound_id")
            .reset_index(drop=True))
    table = wells[[c for c in WELL_COLUMNS if c not in COMPOUND_COLUMNS[1:] and c != "rel_count"]].copy()
    table = table.sort_values(["plate", "well"]).reset_index(drop=True)
    table["is_control"] = table["is_control"].astype(int)
    text = table.to_csv(index=False, float_format="%.6g", lineterminator="\n").encode()
    from molwm.atomic import write_bytes_atomic

    return [write_bytes_atomic(folder / name, payload) for name, payload in (
        (COMPACT_WELLS, gzip.compress(text, compresslevel=9, mtime=0)),
        (COMPACT_COMPOUNDS, comp.to_csv(index=False, lineterminator="\n").encode()))]


def read_compact(wells_path: str | Path, compounds_path: str | Path) -> pd.DataFrame:
    """The well table (:data:`WELL_COLUMNS`) from the compact pair :func:`write_compact` wrote."""
    wells_path, compounds_path = Path(wells_path), Path(compounds_path)
    w = _read_text(wells_path, wells_path.name)
    c = _read_text(compounds_path, compounds_path.name)
    _need(w, [x for x in WELL_COLUMNS if x not in COMPOUND_COLUMNS[1:] and x != "rel_count"], str(wells_path))
    _need(c, COMPOUND_COLUMNS, str(compounds_path))
    for col in ("time_h", "dose_uM", "dose_plated_uM", "cell_count", "dmso_median"):
        w[col] = pd.to_numeric(w[col], errors="coerce")
        if w[col].isna().any():
            row = int(np.flatnonzero(w[col].isna().to_numpy())[0])
            raise FormatError(f"{wells_path} row {row + 1}: {col} is not a number")
    w["is_control"] = w["is_control"].isin(["1", "True", "true"])
    w["rel_count"] = w["cell_count"] / w["dmso_median"]
    w = w.merge(c, on="compound_id", how="left", validate="many_to_one")
    missing = w["smiles"].isna()
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise FormatError(f"{wells_path} row {row + 1}: compound {w['compound_id'].iloc[row]} is not in "
                          f"{compounds_path.name}")
    return w[list(WELL_COLUMNS)]


def card_files(card, data_dir: str | Path | None = None) -> dict[str, Path]:
    """The card's files (relative path as on the card -> local path), located and checksum-verified."""
    from molwm.data.registry import DatasetError
    from molwm.data.sources import resolve_files

    try:
        return {ref.path: path for ref, path, _ in resolve_files(card, data_dir=data_dir)}
    except DatasetError as err:
        raise FormatError(str(err)) from None


def load_lincs_wells(dataset: str = "lincs_cellpainting_batch2_compact", data_dir: str | Path | None = None,
                     progress: bool = False) -> LincsWells:
    """The LINCS batch-2 well table from a card: the raw files (``lincs_cellpainting_batch2``, found in a
    mirror folder) or the compact copy inside molwm (``lincs_cellpainting_batch2_compact``, the default).

    Raises:
        FormatError: Naming the card or file, when it cannot be found, verified or read.
    """
    from molwm.data.registry import DatasetError, get_card

    try:
        card = get_card(dataset)
    except DatasetError as err:
        raise FormatError(str(err)) from None
    files = card_files(card, data_dir)
    if card.source.kind == "mirror":
        return read_lincs_wells(files, progress)
    by_name = {Path(rel).name: path for rel, path in files.items()}
    if COMPACT_WELLS not in by_name or COMPACT_COMPOUNDS not in by_name:
        raise FormatError(f"dataset '{card.name}': expected files {COMPACT_WELLS} and {COMPACT_COMPOUNDS}")
    wells = read_compact(by_name[COMPACT_WELLS], by_name[COMPACT_COMPOUNDS])
    rejects = (_read_text(by_name[COMPACT_REJECTS], COMPACT_REJECTS) if COMPACT_REJECTS in by_name
               else pd.DataFrame(columns=["plate", "well", "file", "reason"]))  # the build's report, pinned too
    return LincsWells(wells, rejects, files)
