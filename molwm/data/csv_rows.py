"""The one reader policy for delimited text (cards, candidates, profiles): every line becomes a row.

pandas either stops at a line it cannot split (an unterminated quote: the whole file is
refused, or with some options the rest of the file is lost) or fills and drops fields
without a word (a line with too few or too many fields). :func:`conserving_source` scans the
file once with Python's ``csv`` module first. A file without such lines is handed to pandas
as it is (the common case: nothing changes). Otherwise pandas reads a rewritten copy in
memory in which each malformed line is a row of empty fields in its place, and the caller
gets ``{row: "line N: why"}`` to report those rows as rejects, so counts add up.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from pathlib import Path

csv.field_size_limit(sys.maxsize)  # a long SMILES or a long unterminated field is a row, not an error


def _open_text(path: Path, skip: int = 0):
    fh = gzip.open(path, "rt", newline="") if path.suffix.lower() == ".gz" else open(path, newline="")
    for _ in range(skip):
        fh.readline()
    return fh


def _records(path: Path, sep: str, limit: int | None):
    """``(first line, fields or None, why)`` for each record; an unterminated quote is one bad record
    (its first line), and reading goes on from the next line."""
    start = 0  # physical lines consumed before the current reader's first
    n = 0
    while True:
        with _open_text(path, start) as fh:
            reader = csv.reader(fh, delimiter=sep, strict=True)
            while limit is None or n <= limit:  # header + ``limit`` records
                first = start + reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    if "end of data" in str(err):  # EOF inside a quoted field
                        yield first, None, "unterminated quote"
                        start = first  # read on from the line after the one that opened the quote
                        break
                    yield first, None, f"bad quoting ({err})"
                    n += 1
                    continue
                if fields:  # pandas skips blank lines: so does the row count
                    n += 1
                    yield first, fields, ""
            else:
                return


def conserving_source(path: str | Path, sep: str = ",", limit: int | None = None):
    """What to hand to ``pd.read_csv`` so that every line of ``path`` is a row, and the malformed rows.

    Args:
        path: A CSV or TSV file (optionally ``.gz``) with one header line.
        sep: The field separator.
        limit: Scan only the header and this many records (the reader's ``nrows``).

    Returns:
        ``(source, malformed)``: ``path`` itself when every line is well formed, else a
        ``StringIO`` of the file with each malformed line replaced by empty fields; and
        ``{0-based data row: "line N: <why>"}``.

    Raises:
        OSError, EOFError, zlib.error, UnicodeDecodeError: The file cannot be read (callers
            turn these into their one-line error naming the file).
    """
    path = Path(path)
    malformed = _malformed(path, sep, limit)
    if not malformed:
        return path, {}
    out = io.StringIO()  # second pass, only for a file with malformed lines
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    width = 0
    for row, (_, fields, _) in enumerate(_records(path, sep, limit), start=-1):
        if row == -1:
            width = len(fields)
            writer.writerow(fields)
        else:
            writer.writerow([""] * width if row in malformed else fields)
    out.seek(0)
    return out, malformed


def _malformed(path: Path, sep: str, limit: int | None) -> dict[int, str]:
    malformed: dict[int, str] = {}
    width = None
    for row, (line, fields, why) in enumerate(_records(path, sep, limit), start=-1):
        if width is None:
            if fields is None:  # a broken header: pandas says what it makes of it
                return {}
            width = len(fields)
            continue
        if fields is not None and len(fields) != width:
            why = f"{len(fields)} fields, the header has {width}"
        if why:
            malformed[row] = f"line {line}: {why}"
    return malformed
