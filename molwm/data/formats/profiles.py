"""CellProfiler / pycytominer morphological profiles: ``Metadata_*`` columns + numeric features.

Every column whose name starts with ``Metadata_`` is metadata; every other
column is a feature (``Cells_*``, ``Cytoplasm_*``, ``Nuclei_*`` ...) and must
be numeric. Read from ``.parquet``, ``.csv`` or ``.csv.gz``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from molwm.data.formats.common import FormatError, line_of, preview, read_manifest, truthy

SYNTHETIC_KEY = "molwm.synthetic"
"""Parquet schema-metadata key the simulator sets to ``"true"``."""
META_PREFIX = "Metadata_"


@dataclass
class ProfileTable:
    """Profiles split into metadata and a feature matrix.

    Attributes:
        meta: The ``Metadata_*`` columns, one row per profile.
        features: Feature values; NaN where missing (and where ``errors="coerce"``
            or an infinity made a cell NaN).
        feature_names: Column name of each feature, in order.
        synthetic: True if the parquet metadata (:data:`SYNTHETIC_KEY`) or a
            ``manifest.json`` beside the file says so.
        all_nan_features: Features with no value at all (kept, so that column
            indices match ``feature_names``; drop them before training).
        coerced_cells: Text cells made NaN by ``errors="coerce"``, per feature.
        infinite_cells: Infinite cells made NaN, per feature.
        source: The file read.

    Shapes:
        features: ``[N, F]`` float32.
    """

    meta: pd.DataFrame
    features: np.ndarray
    feature_names: list[str]
    synthetic: bool = False
    all_nan_features: list[str] = field(default_factory=list)
    coerced_cells: dict[str, int] = field(default_factory=dict)
    infinite_cells: dict[str, int] = field(default_factory=dict)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.features)


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read(path: Path) -> tuple[pd.DataFrame, bool]:
    """The table and whether its parquet metadata marks it synthetic."""
    kind = _kind(path)
    try:
        if kind == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            meta = table.schema.metadata or {}
            return table.to_pandas(), truthy(meta.get(SYNTHETIC_KEY.encode(), b""))
        if kind == ".csv":
            return pd.read_csv(path, low_memory=False), False
    except (OSError, ValueError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a broken .gz
        raise FormatError(f"{path}: cannot be read as {kind[1:]} ({exc})") from None
    raise FormatError(f"{path}: unknown profiles format '{kind or path.name}' "
                      f"(expected .parquet, .csv, .csv.gz)")


def read_profiles(path: str | Path, errors: str = "raise") -> ProfileTable:
    """Read a profiles table.

    Args:
        path: ``.parquet``, ``.csv`` or ``.csv.gz``.
        errors: ``"raise"``: a feature column holding text is an error naming
            the column, the first bad line and value. ``"coerce"``: such cells
            become NaN and are counted in ``coerced_cells``.

    Returns:
        A :class:`ProfileTable`. Infinities become NaN (counted in
        ``infinite_cells``); all-NaN features are listed in ``all_nan_features``.

    Raises:
        FormatError: Missing or unreadable file, unknown format, no feature
            column, or (``errors="raise"``) a non-numeric feature column.
    """
    if errors not in ("raise", "coerce"):
        raise ValueError(f"errors must be 'raise' or 'coerce', got {errors!r}")
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"profiles file not found: {path}")
    frame, synthetic = _read(path)
    frame.columns = [str(c) for c in frame.columns]
    meta_cols = [c for c in frame.columns if c.startswith(META_PREFIX)]
    names = [c for c in frame.columns if not c.startswith(META_PREFIX)]
    if not names:
        raise FormatError(f"{path}: no feature columns (every column starts with {META_PREFIX})")
    features = np.empty((len(frame), len(names)), np.float32)  # [N, F]
    coerced: dict[str, int] = {}
    infinite: dict[str, int] = {}
    for j, name in enumerate(names):
        col = frame[name]
        if pd.api.types.is_bool_dtype(col):
            col = col.astype(np.float64)
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna()
        if not pd.api.types.is_numeric_dtype(col):
            bad &= col.astype(str).str.strip() != ""
        if bad.any():
            if errors == "raise":
                i = int(np.flatnonzero(bad.to_numpy())[0])
                where = f"line {line_of(i)}" if _kind(path) == ".csv" else f"row {i}"
                raise FormatError(f"{path}: feature column {name!r} is not numeric "
                                  f"({int(bad.sum())} text cell(s), first at {where}: {col.iloc[i]!r}); "
                                  f"rename it Metadata_{name} if it is metadata, "
                                  f"or read with errors='coerce'")
            coerced[name] = int(bad.sum())
        with np.errstate(over="ignore"):
            values = num.to_numpy(np.float64, na_value=np.nan).astype(np.float32)
        inf = np.isinf(values)
        if inf.any():
            infinite[name] = int(inf.sum())
            values[inf] = np.nan
        features[:, j] = values
    all_nan = [n for n, empty in zip(names, np.isnan(features).all(axis=0)) if empty and len(frame)]
    synthetic = synthetic or truthy(read_manifest(path.parent).get("synthetic", False))
    return ProfileTable(frame[meta_cols].reset_index(drop=True), features, names, synthetic,
                        all_nan, coerced, infinite, path)


def describe_profiles(table: ProfileTable) -> str:
    """One-paragraph summary of what was read and what was fixed up."""
    parts = [f"{len(table)} profiles x {len(table.feature_names)} features from {table.source}"]
    if table.all_nan_features:
        parts.append(f"all-NaN features: {preview(table.all_nan_features)}")
    if table.coerced_cells:
        parts.append(f"{sum(table.coerced_cells.values())} text cell(s) made NaN in "
                     f"{preview(list(table.coerced_cells))}")
    if table.infinite_cells:
        parts.append(f"{sum(table.infinite_cells.values())} infinite cell(s) made NaN")
    return "; ".join(parts)
