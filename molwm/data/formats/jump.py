"""JUMP-style plate experiments: ``load_data.csv`` + ``well.csv`` + ``compound.csv`` to a site index.

See docs/data_layouts.md. Each row of ``load_data.csv`` is one imaged site,
with ``FileName_Orig<Ch>`` / ``PathName_Orig<Ch>`` per channel. Sites are
linked to compounds either directly (``Metadata_InChIKey`` and/or
``Metadata_SMILES`` columns in ``load_data.csv``) or through JUMP's compound id:
``well.csv`` maps (plate, well) to ``Metadata_JCP2022`` and ``compound.csv``
maps that to an InChIKey and SMILES. Both tables are looked up beside the
load_data CSV unless given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from featurizers.image import CHANNELS
from molwm.data.formats.common import (
    FormatError,
    line_of,
    preview,
    read_csv_text,
    read_manifest,
    require_columns,
    truthy,
)

SITE_COLUMNS = ("Metadata_Plate", "Metadata_Well", "Metadata_Site")
WELL_COLUMNS = ("Metadata_Plate", "Metadata_Well", "Metadata_JCP2022")
DMSO_INCHIKEY = "IAZDPXIOMUYVGZ-UHFFFAOYSA-N"
DMSO_JCP2022 = "JCP2022_033924"
DMSO_SMILES = frozenset({"CS(C)=O", "CS(=O)C", "O=S(C)C", "C[S](C)=O", "[O-][S+](C)C"})
CONTROL_PERT_TYPES = frozenset({"negcon", "control", "empty"})
INDEX_COLUMNS = ("plate", "well", "site", "source", "compound_id", "inchikey", "smiles",
                 "dose_uM", "time_h", "is_control")


@dataclass
class ImageIndex:
    """Every imaged site of an experiment, linked to its compound.

    Attributes:
        frame: One row per site, columns :data:`INDEX_COLUMNS` (``site`` int,
            ``dose_uM``/``time_h`` float with NaN if unknown, text columns None
            where unknown) then one column per channel, named as in
            ``channels``, holding the image path as text or None where the
            channel was not imaged.
        channels: Channel columns, in array order.
        channels_present: Channels imaged at one site or more.
        synthetic: True if a ``manifest.json`` beside the CSV says so.
        source: The load_data CSV read.
    """

    frame: pd.DataFrame
    channels: tuple[str, ...]
    channels_present: tuple[str, ...]
    synthetic: bool
    source: Path

    def __len__(self) -> int:
        return len(self.frame)

    def site_paths(self) -> list[list[str | None]]:
        """Per site, its channel paths in ``channels`` order, ready for ``featurize_sites``."""
        cols = [self.frame[c].tolist() for c in self.channels]
        return [list(p) for p in zip(*cols)] if cols else [[] for _ in range(len(self.frame))]


def _table(given, default: Path, what: str, required: bool) -> tuple[pd.DataFrame | None, str]:
    """A well/compound table from a path, a DataFrame, or the default file beside load_data."""
    if isinstance(given, pd.DataFrame):
        frame = given.astype(object).where(given.notna(), "")
        return frame.map(lambda v: str(v).strip()), f"<{what} frame>"
    path = Path(given) if given is not None else default
    if given is None and not path.is_file() and not required:
        return None, str(path)
    return read_csv_text(path, what).map(lambda v: v.strip()), str(path)


def _join(root: Path, pathname: str, filename: str) -> str:
    if "://" in pathname:  # JUMP's own load_data points at s3:// URLs
        return pathname.rstrip("/") + "/" + filename
    p = Path(pathname) / filename
    return str(p if p.is_absolute() else root / p)


def _channel_paths(ld: pd.DataFrame, root: Path, channels: Sequence[str], src: Path) -> dict[str, list]:
    out = {}
    for ch in channels:
        fn, pn = f"FileName_Orig{ch}", f"PathName_Orig{ch}"
        if (fn in ld.columns) != (pn in ld.columns):
            have, lack = (fn, pn) if fn in ld.columns else (pn, fn)
            raise FormatError(f"{src}: channel {ch} has column {have} but no {lack}")
        if fn not in ld.columns:
            out[ch] = [None] * len(ld)
            continue
        out[ch] = [_join(root, p.strip(), f.strip()) if f.strip() else None for p, f in zip(ld[pn], ld[fn])]
    return out


def _numbers(values: Sequence[str], column: str, src: str) -> np.ndarray:
    """Parse text to float (blank = NaN); non-numbers raise naming the line."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None or not str(v).strip():
            continue
        try:
            out[i] = float(v)
        except ValueError:
            raise FormatError(f"{src}: line {line_of(i)}, column {column}: {v!r} is not a number") from None
    return out


def _sites(ld: pd.DataFrame, src: Path) -> list[int]:
    sites = []
    for i, v in enumerate(ld["Metadata_Site"]):
        try:
            sites.append(int(float(v)))
        except ValueError:
            raise FormatError(f"{src}: line {line_of(i)}, Metadata_Site {v!r} is not an integer") from None
    return sites


def _check_duplicates(keys: list[tuple], src: Path) -> None:
    seen: dict[tuple, int] = {}
    dups = []
    for i, key in enumerate(keys):
        if key in seen:
            dups.append(f"plate {key[0]} well {key[1]} site {key[2]} "
                        f"(lines {line_of(seen[key])} and {line_of(i)})")
        else:
            seen[key] = i
    if dups:
        raise FormatError(f"{src}: {len(dups)} duplicate (plate, well, site) row(s): {preview(dups, 3)}")


def _well_rows(ld, wells: pd.DataFrame, wsrc: str, src: Path, strict: bool) -> list[int | None]:
    """Row of well.csv for each site (None if absent; an error if ``strict``)."""
    require_columns(wells, WELL_COLUMNS, wsrc)
    lookup: dict[tuple[str, str], int] = {}
    for j, key in enumerate(zip(wells["Metadata_Plate"], wells["Metadata_Well"])):
        if key in lookup:
            raise FormatError(f"{wsrc}: plate {key[0]} well {key[1]} appears twice "
                              f"(lines {line_of(lookup[key])} and {line_of(j)})")
        lookup[key] = j
    rows = [lookup.get(key) for key in zip(ld["Metadata_Plate"], ld["Metadata_Well"])]
    sites = zip(ld["Metadata_Plate"], ld["Metadata_Well"], rows)
    unknown = [f"plate {p} well {w} (line {line_of(i)})" for i, (p, w, r) in enumerate(sites) if r is None]
    if unknown and strict:
        raise FormatError(f"{src}: unknown compound id: {len(unknown)} site(s) in wells missing from "
                          f"{wsrc}: {preview(unknown, 3)}")
    return rows


def _compound_lookup(comp: pd.DataFrame, csrc: str) -> dict[str, tuple[str | None, str | None]]:
    require_columns(comp, ["Metadata_JCP2022"], csrc)
    if "Metadata_InChIKey" not in comp.columns and "Metadata_SMILES" not in comp.columns:
        raise FormatError(f"{csrc}: missing required column Metadata_SMILES (or Metadata_InChIKey)")
    keys = comp.get("Metadata_InChIKey", pd.Series([""] * len(comp)))
    smis = comp.get("Metadata_SMILES", pd.Series([""] * len(comp)))
    return {j: (k or None, s or None) for j, k, s in zip(comp["Metadata_JCP2022"], keys, smis)}


def read_load_data(path: str | Path, channels: Sequence[str] = CHANNELS,
                   compounds: str | Path | pd.DataFrame | None = None,
                   wells: str | Path | pd.DataFrame | None = None,
                   check_files: bool = False) -> ImageIndex:
    """Read a JUMP-style ``load_data.csv`` into an :class:`ImageIndex`.

    Args:
        path: The load_data CSV (``.csv`` or ``.csv.gz``). Relative
            ``PathName_Orig<Ch>`` entries resolve against its folder.
        channels: Channels to index, in array order; ``FileName_Orig<Ch>``
            columns for other channels are ignored, and a requested channel
            with no columns is absent at every site.
        compounds: ``compound.csv`` (path or frame); default: beside ``path``.
        wells: ``well.csv`` (path or frame); default: beside ``path``.
        check_files: Verify that every referenced local image exists.

    Returns:
        The index. ``is_control`` marks DMSO (by SMILES, InChIKey, JCP id or
        a ``Metadata_pert_type`` of negcon/control/empty) and sites with
        neither SMILES nor InChIKey. ``compound_id`` is the JCP2022 id, else
        the InChIKey, else the SMILES.

    Raises:
        FormatError: Naming the file and the column or line: a missing
            required column, a channel's FileName without PathName (or the
            reverse), a site whose well is not in ``well.csv`` or whose JCP id
            is not in ``compound.csv`` ("unknown compound id"), duplicate
            (plate, well, site) rows, non-numeric site/dose/time, or (with
            ``check_files``) missing image files.
    """
    src = Path(path).absolute()
    root = src.parent
    ld = read_csv_text(src, "load_data CSV").map(lambda v: v.strip())
    require_columns(ld, SITE_COLUMNS, src)
    n = len(ld)
    paths = _channel_paths(ld, root, channels, src)
    sites = _sites(ld, src)
    _check_duplicates(list(zip(ld["Metadata_Plate"], ld["Metadata_Well"], sites)), src)

    direct = [c for c in ("Metadata_InChIKey", "Metadata_SMILES") if c in ld.columns]
    needs_wells = not direct and "Metadata_JCP2022" not in ld.columns
    well_frame, wsrc = _table(wells, root / "well.csv", "well.csv", required=needs_wells)
    wrow: list[int | None] = [None] * n
    if well_frame is not None:
        wrow = _well_rows(ld, well_frame, wsrc, src, strict=needs_wells)

    def from_wells(column: str) -> list[str]:
        if column in ld.columns:
            return list(ld[column])
        if well_frame is None or column not in well_frame.columns:
            return [""] * n
        vals = well_frame[column].tolist()
        return [vals[r] if r is not None else "" for r in wrow]

    def numbers_from_wells(column: str) -> np.ndarray:
        if column in ld.columns or well_frame is None or column not in well_frame.columns:
            return _numbers(from_wells(column), column, str(src))
        vals = _numbers(well_frame[column].tolist(), column, wsrc)  # parsed there: errors name well.csv lines
        return np.array([vals[r] if r is not None else np.nan for r in wrow], np.float64)

    jcp = from_wells("Metadata_JCP2022")
    inchikey = list(ld["Metadata_InChIKey"]) if "Metadata_InChIKey" in ld.columns else [""] * n
    smiles = list(ld["Metadata_SMILES"]) if "Metadata_SMILES" in ld.columns else [""] * n
    if len(direct) < 2 and any(jcp):
        comp, csrc = _table(compounds, root / "compound.csv", "compound.csv", required=not direct)
        if comp is not None:
            lookup = _compound_lookup(comp, csrc)
            unknown = sorted({j for j in jcp if j and j not in lookup})
            if unknown and not direct:
                where = wsrc if "Metadata_JCP2022" not in ld.columns else str(src)
                raise FormatError(f"unknown compound id: {len(unknown)} Metadata_JCP2022 value(s) in {where} "
                                  f"missing from {csrc}: {preview(unknown)}")
            for i, j in enumerate(jcp):
                key, smi = lookup.get(j, (None, None))
                inchikey[i] = inchikey[i] or key or ""
                smiles[i] = smiles[i] or smi or ""

    pert = [p.lower() for p in from_wells("Metadata_pert_type")]
    control = [
        (not s and not k) or s in DMSO_SMILES or k == DMSO_INCHIKEY or j == DMSO_JCP2022
        or p in CONTROL_PERT_TYPES
        for s, k, j, p in zip(smiles, inchikey, jcp, pert)
    ]
    frame = pd.DataFrame({
        "plate": _text(ld["Metadata_Plate"]),
        "well": _text(ld["Metadata_Well"]),
        "site": np.asarray(sites, np.int64),
        "source": _text(ld["Metadata_Source"] if "Metadata_Source" in ld.columns else [""] * n),
        "compound_id": _text(j or k or s for j, k, s in zip(jcp, inchikey, smiles)),
        "inchikey": _text(inchikey),
        "smiles": _text(smiles),
        "dose_uM": numbers_from_wells("Metadata_Dose_uM"),
        "time_h": numbers_from_wells("Metadata_Time_h"),
        "is_control": np.asarray(control, np.bool_),
        **{ch: _text(paths[ch]) for ch in channels},
    })
    if check_files:
        _check_files(frame, channels, src)
    present = tuple(ch for ch in channels if any(p is not None for p in paths[ch]))
    synthetic = truthy(read_manifest(root).get("synthetic", False))
    return ImageIndex(frame, tuple(channels), present, synthetic, src)


def _text(values) -> pd.Series:
    """Object column with None for blanks (pandas would otherwise infer ``str`` with NaN)."""
    return pd.Series([v or None for v in values], dtype=object)


def _check_files(frame: pd.DataFrame, channels: Sequence[str], src: Path) -> None:
    local = [p for ch in channels for p in frame[ch] if p is not None and "://" not in p]
    missing = [p for p in local if not Path(p).is_file()]
    if missing:
        raise FormatError(f"{src}: {len(missing)} of {len(local)} image files are missing: "
                          f"{preview(missing, 3)}")
