"""Assay panels: table columns to float32 value matrices with an observed mask.

A blank cell means "not measured": its value is NaN and ``observed`` is False.
Cells that are not numbers, and infinities, are treated as not measured *and*
reported (:class:`BadCell`), so nothing is dropped silently.

:class:`AssayNormalizer` standardises each assay with statistics fitted on the
training rows only, and round-trips through plain lists for checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from featurizers.errors import FeaturizationError

MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "<na>"})
"""Cell texts read as "not measured" without a report (compared lower-cased, stripped)."""


class AssayError(FeaturizationError):
    """An assay table cannot be read as asked (e.g. a requested column is missing)."""


class BadCell(NamedTuple):
    """One cell read as "not measured" because its content was unusable.

    Attributes:
        row: 0-based position of the row in the frame.
        column: Column name.
        value: The cell as found (text, or the float for infinities).
        problem: ``non_numeric`` or ``infinite``.
    """

    row: int
    column: str
    value: object
    problem: str


@dataclass
class AssayArrays:
    """The result of :func:`assay_arrays`.

    Attributes:
        values: Measurements, NaN where not observed.
        observed: True where a finite measurement exists.
        columns: Assay names, in column order.
        bad_cells: Cells that held text or infinities (treated as missing).

    Shapes:
        values: ``[N, A]`` float32; observed: ``[N, A]`` bool.
    """

    values: np.ndarray
    observed: np.ndarray
    columns: list[str]
    bad_cells: list[BadCell] = field(default_factory=list)

    def __iter__(self):
        """Unpack as ``values, observed = assay_arrays(...)``."""
        return iter((self.values, self.observed))


def assay_arrays(frame: pd.DataFrame, columns: Sequence[str]) -> AssayArrays:
    """Read assay columns as float32 values plus an observed mask.

    Blank cells, NaN and :data:`MISSING_TOKENS` are missing (not reported). Non-numeric text and
    ±inf (including numbers beyond float32 range) are missing and reported.

    Args:
        frame: Table holding the assay columns (numbers or text).
        columns: Assay columns to read, in output order.

    Returns:
        An :class:`AssayArrays` (also unpacks as ``values, observed``).

    Shapes:
        values: ``[N, A]``; observed: ``[N, A]``, with ``A = len(columns)``.

    Raises:
        AssayError: A column is not in ``frame`` (the message lists the columns).
    """
    columns = [str(c) for c in columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AssayError(f"assay column(s) {', '.join(missing)} not found; available: "
                         f"{', '.join(map(str, frame.columns))}", "missing_column")
    values = np.full((len(frame), len(columns)), np.nan, np.float32)  # [N, A]
    bad: list[BadCell] = []
    for j, col in enumerate(columns):
        raw = frame[col]
        if pd.api.types.is_bool_dtype(raw):
            raw = raw.astype(np.float64)
        num = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        if not pd.api.types.is_numeric_dtype(raw):
            text = raw.astype(object)
            blank = text.map(_is_blank).to_numpy(bool)
            for i in np.flatnonzero(np.isnan(num) & ~blank):
                bad.append(BadCell(int(i), col, text.iloc[i], "non_numeric"))
        with np.errstate(over="ignore"):
            col32 = num.astype(np.float32)
        for i in np.flatnonzero(np.isinf(col32)):
            bad.append(BadCell(int(i), col, float(num[i]), "infinite"))
        col32[np.isinf(col32)] = np.nan
        values[:, j] = col32
    bad.sort(key=lambda b: (b.row, columns.index(b.column)))
    return AssayArrays(values, ~np.isnan(values), columns, bad)


def _is_blank(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in MISSING_TOKENS
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def describe_bad_cells(bad: Sequence[BadCell], limit: int = 5) -> str:
    """One line summarising bad cells, e.g. ``3 cells read as missing: row 2 NR-AR 'active?' ...``."""
    if not bad:
        return "no bad cells"
    shown = "; ".join(f"row {b.row} {b.column} {b.value!r} ({b.problem})" for b in bad[:limit])
    more = f"; ... {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} cell(s) read as missing: {shown}{more}"


@dataclass
class AssayNormalizer:
    """Per-assay standardisation, ``z = (x - mean) / std``, fitted on training rows only.

    ``std`` is the population standard deviation over observed values, floored
    at ``min_std``; an assay with fewer than 2 observations gets ``std = 1``
    (and ``mean`` = its single value, or 0 with none).

    Attributes:
        mean: Per-assay mean, ``[A]`` (None until fitted).
        std: Per-assay scale, ``[A]`` (None until fitted).
        count: Observations per assay used in the fit, ``[A]``.
        min_std: Floor on ``std``.
        columns: Assay names, if known (kept for checkpoints).
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    count: np.ndarray | None = None
    min_std: float = 1e-6
    columns: list[str] | None = None

    def fit(self, values: np.ndarray, observed: np.ndarray | None = None,
            rows: np.ndarray | None = None) -> "AssayNormalizer":
        """Fit mean and std per assay over observed cells.

        Args:
            values: Measurements (NaN allowed where unobserved).
            observed: Mask of measured cells; default ``isfinite(values)``.
            rows: Optional indices of the training rows; default every row.

        Shapes:
            values, observed: ``[N, A]``; rows: ``[n]``.

        Returns:
            ``self``.
        """
        values, observed = self._check(values, observed)
        if rows is not None:
            values, observed = values[rows], observed[rows]
        x = np.where(observed, values, 0.0).astype(np.float64)  # [N, A]
        count = observed.sum(axis=0)  # [A]
        mean = x.sum(axis=0) / np.maximum(count, 1)
        var = (np.where(observed, x - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
        std = np.maximum(np.sqrt(var), self.min_std)
        std[count < 2] = 1.0
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.count = count.astype(np.int64)
        return self

    def _check(self, values, observed):
        values = np.asarray(values, np.float32)
        if values.ndim != 2:
            raise ValueError(f"values must be 2-D [N, A], got shape {values.shape}")
        observed = np.isfinite(values) if observed is None else np.asarray(observed, np.bool_)
        if observed.shape != values.shape:
            raise ValueError(f"observed has shape {observed.shape}, values {values.shape}")
        if not np.isfinite(values[observed]).all():
            raise ValueError("observed cells must hold finite values (found NaN or inf marked observed)")
        if self.mean is not None and values.shape[1] != len(self.mean):
            raise ValueError(f"fitted on {len(self.mean)} assays, got {values.shape[1]}")
        return values, observed

    def _fitted(self):
        if self.mean is None or self.std is None:
            raise RuntimeError("AssayNormalizer is not fitted; call fit() on the training rows first")
        return self.mean, self.std

    def transform(self, values: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        """Standardise; unobserved cells become NaN.

        Shapes:
            values, observed: ``[N, A]``; returns ``[N, A]`` float32.
        """
        mean, std = self._fitted()
        values, observed = self._check(values, observed)
        return np.where(observed, (values - mean) / std, np.nan).astype(np.float32)

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Back to assay units: ``z * std + mean`` (NaN stays NaN).

        Shapes:
            z: ``[..., A]``; returns ``[..., A]`` float32.
        """
        mean, std = self._fitted()
        return (np.asarray(z, np.float32) * std + mean).astype(np.float32)

    def to_dict(self) -> dict:
        """Plain lists and numbers, for JSON and checkpoints."""
        mean, std = self._fitted()
        return {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "count": self.count.tolist() if self.count is not None else None,
            "min_std": self.min_std,
            "columns": list(self.columns) if self.columns is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "AssayNormalizer":
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            mean=np.asarray(d["mean"], np.float32),
            std=np.asarray(d["std"], np.float32),
            count=np.asarray(d["count"], np.int64) if d.get("count") is not None else None,
            min_std=float(d.get("min_std", 1e-6)),
            columns=list(d["columns"]) if d.get("columns") is not None else None,
        )
