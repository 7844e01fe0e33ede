"""Helpers shared by the format readers: the error type, manifests, column checks."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from molwm.data.csv_rows import conserving_source
from molwm.errors import MolwmError


class FormatError(MolwmError, ValueError):
    """A data file does not follow its layout; the message names the file and the column or line."""


def line_of(row: int) -> int:
    """File line of 0-based data row ``row`` in a CSV with one header line."""
    return row + 2


def read_manifest(folder: Path) -> dict:
    """``folder/manifest.json`` as a dict (empty if there is none).

    Raises:
        FormatError: The manifest exists but is not a JSON object.
    """
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def truthy(value) -> bool:
    """``True``/``"true"``/``"1"``/``b"yes"`` -> True; anything else False."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y")
    return bool(value)


def require_columns(frame: pd.DataFrame, required: Iterable[str], source: Path | str) -> None:
    """Raise a :class:`FormatError` naming ``source`` and every missing column."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise FormatError(f"{source}: missing required column(s) {', '.join(missing)} "
                          f"(columns: {', '.join(map(str, frame.columns))})")


def read_csv_text(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV (optionally .gz) with every cell as text and blanks as ``""``.

    Raises:
        FormatError: The file is missing or cannot be parsed as CSV, or a line has an unterminated
            quote or another number of fields than the header (:mod:`molwm.data.csv_rows`).
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{what} not found: {path}")
    try:
        _, malformed = conserving_source(path)
        if malformed:  # a well or a row of a table cannot be half read: say which line, rather than guess
            lines = list(malformed.values())
            raise FormatError(f"{path}: {len(lines)} line(s) cannot be split into the header's fields: "
                              f"{preview(lines, 3)}")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FormatError:
        raise
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a broken .gz
        raise FormatError(f"{path}: cannot be read as CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.astype(object)


def preview(items: Sequence, limit: int = 5) -> str:
    """``a, b, c, ... (12 in all)``: a short list for error messages."""
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
