"""Tox21-style wide multi-task tables: a SMILES column, an id column, one column per assay.

A blank cell is "not measured". The real Tox21 file (``tox21.csv.gz``) has
columns ``NR-AR, NR-AR-LBD, ..., SR-p53, mol_id, smiles``; the simulator
writes ``compound_id, smiles, <assay> ...`` (docs/data_layouts.md). Both read
without options.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from featurizers.assay import BadCell, assay_arrays
from molwm.data.formats.common import FormatError, line_of, preview, read_manifest, truthy

SMILES_GUESSES = ("smiles", "canonical_smiles", "isomeric_smiles", "smi", "mol_smiles")
ID_GUESSES = ("compound_id", "mol_id", "id", "molecule_id", "cmpd_id", "name")
DUPLICATE_POLICIES = ("first", "keep", "error")


@dataclass
class MultitaskTable:
    """A multi-task assay table.

    Attributes:
        ids: Compound id of each row (the row number as text without an id column).
        smiles: SMILES of each row (None where blank).
        tasks: Assay names, in column order.
        values: Measurements, NaN where not measured.
        observed: True where a finite measurement exists.
        rows: 0-based data row in the file of each kept row.
        bad_cells: Cells read as missing because they held text or
            infinities; ``row`` is the 0-based data row in the file.
        duplicate_ids: ``(id, first_row, duplicate_row)`` for every repeated
            id (file rows); with ``duplicates="first"`` the later rows are dropped.
        ignored_columns: Columns that were neither SMILES, id nor a task.
        synthetic: True if a ``manifest.json`` beside the file says so.
        source: The file read.

    Shapes:
        values: ``[N, T]`` float32; observed: ``[N, T]`` bool; rows: ``[N]`` int64.
    """

    ids: list[str]
    smiles: list[str | None]
    tasks: list[str]
    values: np.ndarray
    observed: np.ndarray
    rows: np.ndarray
    bad_cells: list[BadCell] = field(default_factory=list)
    duplicate_ids: list[tuple[str, int, int]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    synthetic: bool = False
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def report(self) -> str:
        """Human-readable summary of what was read as missing, dropped or ignored."""
        lines = [f"{len(self)} compounds x {len(self.tasks)} tasks from {self.source}, "
                 f"{int(self.observed.sum())} measurements"]
        if self.bad_cells:
            shown = [f"line {line_of(b.row)} {b.column}={b.value!r} ({b.problem})" for b in self.bad_cells]
            lines.append(f"{len(self.bad_cells)} cell(s) read as missing: {preview(shown)}")
        if self.duplicate_ids:
            shown = [f"{i} (lines {line_of(a)}, {line_of(b)})" for i, a, b in self.duplicate_ids]
            lines.append(f"{len(self.duplicate_ids)} duplicate id row(s): {preview(shown)}")
        if self.ignored_columns:
            lines.append(f"ignored non-numeric column(s): {preview(self.ignored_columns)}")
        return "\n".join(lines)


def _pick(columns: list[str], wanted: str | None, guesses: Sequence[str], path: Path,
          what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise FormatError(f"{path}: no {what} column '{wanted}' (columns: {', '.join(columns)})")
        return wanted
    lower = {c.lower(): c for c in columns}
    return next((lower[g] for g in guesses if g in lower), None)


def _looks_numeric(col: pd.Series) -> bool:
    """More than half of the non-blank cells parse as numbers."""
    text = col.dropna().astype(str).str.strip()
    text = text[text != ""]
    return len(text) > 0 and pd.to_numeric(text, errors="coerce").notna().mean() > 0.5


def read_multitask_csv(path: str | Path, smiles_column: str | None = None, id_column: str | None = None,
                       tasks: Sequence[str] | None = None, duplicates: str = "first") -> MultitaskTable:
    """Read a wide multi-task CSV (optionally ``.gz``).

    Args:
        path: The CSV.
        smiles_column: Column of SMILES; default guessed case-insensitively
            from :data:`SMILES_GUESSES`.
        id_column: Column of compound ids; default guessed from
            :data:`ID_GUESSES` (``compound_id``, ``mol_id``, ``ID`` ...), else
            row numbers.
        tasks: Assay columns to read, in this order; default every other
            column whose non-blank cells are mostly numbers.
        duplicates: For repeated ids: ``"first"`` keeps the first row and drops
            the rest, ``"keep"`` keeps every row, ``"error"`` raises. All three
            report them in ``duplicate_ids``.

    Returns:
        A :class:`MultitaskTable`. Text cells and infinities in task columns
        are read as missing and listed in ``bad_cells``.

    Raises:
        FormatError: Missing/unreadable file, no SMILES column, an unknown
            requested column (the message lists the available ones), no task
            column, or duplicate ids with ``duplicates="error"``.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"multi-task CSV not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str)  # text, so every bad cell can be reported as written
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a broken .gz
        raise FormatError(f"{path}: cannot be read as CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    columns = list(frame.columns)
    smi = _pick(columns, smiles_column, SMILES_GUESSES, path, "SMILES")
    if smi is None:
        raise FormatError(f"{path}: no SMILES column found among {', '.join(columns)}; pass smiles_column=")
    idc = _pick(columns, id_column, ID_GUESSES, path, "id")
    others = [c for c in columns if c not in (smi, idc)]
    if tasks is not None:
        tasks = [str(t) for t in tasks]
        unknown = [t for t in tasks if t not in others]
        if unknown:
            raise FormatError(f"{path}: unknown task column(s) {', '.join(unknown)}; available task columns: "
                              f"{', '.join(others)} (SMILES column {smi!r}, id column {idc!r})")
        ignored = [c for c in others if c not in tasks]
    else:
        tasks = [c for c in others if _looks_numeric(frame[c])]
        ignored = [c for c in others if c not in tasks]
    if not tasks:
        raise FormatError(f"{path}: no numeric task column found (columns: {', '.join(columns)})")

    arrays = assay_arrays(frame, tasks)
    if idc:
        ids = frame[idc].fillna("").astype(str).str.strip().tolist()
    else:
        ids = [str(i) for i in range(len(frame))]
    first: dict[str, int] = {}
    dup: list[tuple[str, int, int]] = []
    for i, key in enumerate(ids):
        if key in first:
            dup.append((key, first[key], i))
        else:
            first[key] = i
    if dup and duplicates == "error":
        shown = [f"{k} (lines {line_of(a)} and {line_of(b)})" for k, a, b in dup]
        raise FormatError(f"{path}: {len(dup)} duplicate id(s) in column {idc!r}: {preview(shown)}")
    keep = np.ones(len(frame), np.bool_)
    if duplicates == "first":
        keep[[b for _, _, b in dup]] = False
    rows = np.flatnonzero(keep)
    smiles = [s.strip() if isinstance(s, str) and s.strip() else None for s in frame[smi].tolist()]
    return MultitaskTable(
        ids=[ids[i] for i in rows],
        smiles=[smiles[i] for i in rows],
        tasks=list(tasks),
        values=arrays.values[rows],  # [N, T]
        observed=arrays.observed[rows],  # [N, T]
        rows=rows.astype(np.int64),
        bad_cells=arrays.bad_cells,
        duplicate_ids=dup,
        ignored_columns=ignored,
        synthetic=truthy(read_manifest(path.parent).get("synthetic", False)),
        source=path,
    )
