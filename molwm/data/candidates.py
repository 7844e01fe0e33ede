"""Read candidate compounds for queries: CSV, SMILES (.smi), SDF and Parquet files, in chunks.

Every reader yields frames with the same columns, so the query loop never
cares where molecules came from:

* ``row``: 0-based position in the file (SDF: record number),
* ``id``: the file's identifier (a named column, the .smi name, the SDF title)
  or the row number as text,
* ``smiles``: the SMILES (None where a record could not be read),
* ``status``: None, or why the record was unreadable before featurization.

Files are streamed (``chunk_size`` rows at a time), so memory stays flat in
the number of candidates.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd

from molwm.data.csv_rows import conserving_source
from molwm.data.sources import load_table, sha256_file
from molwm.errors import MolwmError

CANDIDATE_SUFFIXES = (".csv", ".tsv", ".smi", ".smiles", ".sdf", ".parquet")
SMILES_COLUMN_GUESSES = ("smiles", "canonical_smiles", "isomeric_smiles", "smi", "mol_smiles")
ID_COLUMN_GUESSES = ("id", "name", "compound_id", "mol_id", "molecule_chembl_id")


class CandidateError(MolwmError, ValueError):
    """A candidates file cannot be read as asked (unknown format, no SMILES column)."""


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _pick(columns: Sequence[str], wanted: str | None, guesses: Sequence[str], path: Path, what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise CandidateError(f"{path}: no column '{wanted}' (columns: {', '.join(map(str, columns))})")
        return wanted
    lower = {str(c).lower(): c for c in columns}
    for g in guesses:
        if g in lower:
            return lower[g]
    if what == "smiles":
        raise CandidateError(f"{path}: no SMILES column found among {', '.join(map(str, columns))}; "
                             f"name it with --smiles-column")
    return None


def candidate_frame(rows: range | Sequence[int], ids, smiles, status=None) -> pd.DataFrame:
    """The frame every reader yields: ``row``, ``id`` (as text), ``smiles``, ``status`` (None = readable)."""
    n = len(smiles)
    return pd.DataFrame({
        "row": list(rows),
        "id": [str(i) for i in ids],
        "smiles": pd.Series(list(smiles), dtype=object),
        # object dtype: pandas 3 reads None beside text as NaN, which is truthy (`pre or s` in the query)
        "status": pd.Series(list(status) if status is not None else [None] * n, dtype=object),
    })


def iter_candidates(path: str | Path, smiles_column: str | None = None, id_column: str | None = None,
                    chunk_size: int = 10_000) -> Iterator[pd.DataFrame]:
    """Yield chunks of candidates from ``path`` (see the module docstring for the columns).

    Args:
        path: ``.csv``, ``.tsv``, ``.smi``/``.smiles``, ``.sdf`` (each optionally
            ``.gz``) or ``.parquet``.
        smiles_column: Column holding SMILES (CSV/TSV/Parquet; default: guessed,
            e.g. ``smiles``, ``canonical_smiles``).
        id_column: Column holding identifiers (default: guessed, else the row number).
        chunk_size: Rows per yielded frame.

    Raises:
        CandidateError: Unknown format or no SMILES column.
        FileNotFoundError: ``path`` does not exist.
    """
    path = check_candidates_path(path)
    kind = _suffix(path)
    try:
        if kind in (".csv", ".tsv"):
            yield from _iter_table(path, "\t" if kind == ".tsv" else ",", smiles_column, id_column, chunk_size)
        elif kind in (".smi", ".smiles"):
            yield from _iter_smi(path, chunk_size)
        elif kind == ".sdf":
            yield from _iter_sdf(path, chunk_size)
        else:
            yield from _iter_parquet(path, smiles_column, id_column, chunk_size)
    except CandidateError:
        raise
    # what a damaged file raises: not text (UnicodeDecodeError), a broken gzip stream (OSError, EOFError,
    # zlib.error), a table the parser rejects (pandas' errors and pyarrow's are ValueErrors); RDKit's SDF
    # reader turns an error of the stream under it into a SystemError
    except (UnicodeDecodeError, OSError, EOFError, zlib.error, ValueError, SystemError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        gz = " (gzipped)" if path.suffix.lower() == ".gz" else ""
        raise CandidateError(f"{path}: not a readable {kind[1:]} file{gz}: {reason[:300]}") from None


def check_candidates_path(path: str | Path) -> Path:
    """``path`` as a Path if it exists and has a known candidates format.

    Raises:
        FileNotFoundError / CandidateError: With the path and the accepted formats.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"candidates file not found: {path}")
    kind = _suffix(path)
    if kind not in CANDIDATE_SUFFIXES:
        raise CandidateError(f"{path}: unknown candidates format '{kind or path.name}' "
                             f"(expected one of {', '.join(CANDIDATE_SUFFIXES)})")
    return path


def _iter_table(path, sep, smiles_column, id_column, chunk_size):
    start = 0
    source, malformed = conserving_source(path, sep)  # a line that cannot be split is a row with its reason
    reader = pd.read_csv(source, sep=sep, chunksize=chunk_size, dtype=str, keep_default_na=False)
    for chunk in reader:
        smi = _pick(list(chunk.columns), smiles_column, SMILES_COLUMN_GUESSES, path, "smiles")
        idc = _pick(list(chunk.columns), id_column, ID_COLUMN_GUESSES, path, "id")
        rows = range(start, start + len(chunk))
        ids = chunk[idc].tolist() if idc else list(rows)
        status = [malformed.get(r) for r in rows]
        smiles = [None if why else s for s, why in zip(chunk[smi].tolist(), status)]
        ids = [r if why else i for r, i, why in zip(rows, ids, status)]  # a malformed line's fields are not read
        yield candidate_frame(rows, ids, smiles, status)
        start += len(chunk)


def _iter_parquet(path, smiles_column, id_column, chunk_size):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    smi = _pick(names, smiles_column, SMILES_COLUMN_GUESSES, path, "smiles")
    idc = _pick(names, id_column, ID_COLUMN_GUESSES, path, "id")
    start = 0
    for batch in pf.iter_batches(batch_size=chunk_size, columns=[c for c in (smi, idc) if c]):
        chunk = batch.to_pandas()
        rows = range(start, start + len(chunk))
        yield candidate_frame(rows, chunk[idc].tolist() if idc else list(rows), chunk[smi].tolist())
        start += len(chunk)


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix.lower() == ".gz" else open(path)


def _iter_smi(path, chunk_size):
    """One molecule per line: ``SMILES [name ...]``; a first line starting with ``smiles`` is a header."""
    rows, ids, smiles = [], [], []
    with _open_text(path) as fh:
        row = 0
        for line_no, line in enumerate(fh):
            text = line.strip()
            if line_no == 0 and text.lower().split()[:1] == ["smiles"]:
                continue
            if not text or text.startswith("#"):
                continue
            parts = text.split(None, 1)
            rows.append(row)
            smiles.append(parts[0])
            ids.append(parts[1].strip() if len(parts) > 1 else row)
            row += 1
            if len(rows) == chunk_size:
                yield candidate_frame(rows, ids, smiles)
                rows, ids, smiles = [], [], []
    if rows:
        yield candidate_frame(rows, ids, smiles)


def _iter_sdf(path, chunk_size):
    from rdkit import Chem, rdBase

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    rows, ids, smiles, status = [], [], [], []
    with opener(path, "rb") as fh, rdBase.BlockLogs():
        for i, mol in enumerate(Chem.ForwardSDMolSupplier(fh, sanitize=True)):
            rows.append(i)
            if mol is None:
                ids.append(i)
                smiles.append(None)
                status.append(f"SDF record {i} could not be read by RDKit (bad molblock or valence)")
            else:
                title = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
                ids.append(title or i)
                smiles.append(Chem.MolToSmiles(mol))
                status.append(None)
            if len(rows) == chunk_size:
                yield candidate_frame(rows, ids, smiles, status)
                rows, ids, smiles, status = [], [], [], []
    if rows:
        yield candidate_frame(rows, ids, smiles, status)


def count_candidates(path: str | Path) -> int | None:
    """Number of records (for a progress bar), counted cheaply; None if unknown."""
    path = Path(path)
    kind = _suffix(path)
    try:
        if kind == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if path.suffix.lower() == ".gz":
            return None
        with open(path, "rb") as fh:
            if kind == ".sdf":
                return sum(line.startswith(b"$$$$") for line in fh)
            first = fh.readline()
            lines = sum(1 for line in fh if line.strip() and not line.startswith(b"#")) + bool(first.strip())
        header = kind in (".csv", ".tsv") or first.strip().lower().split()[:1] == [b"smiles"]
        return max(lines - int(header), 0)
    except OSError:
        return None


def load_reference_smiles(reference) -> tuple[str, list, list, str | None]:
    """A reference set's SMILES: a dataset name, a candidates file, or a list of SMILES.

    Returns:
        ``(name, smiles, ids, content_key)``; ``content_key`` identifies the
        content for caching embeddings (None for in-memory lists).
    """
    if isinstance(reference, (list, tuple)):
        return "smiles list", list(reference), list(range(len(reference))), None
    text = str(reference)
    path = Path(text)
    if path.is_file() and _suffix(path) in CANDIDATE_SUFFIXES:
        frames = list(iter_candidates(path, chunk_size=50_000))
        frame = pd.concat(frames, ignore_index=True) if frames else candidate_frame([], [], [])
        return path.name, frame["smiles"].tolist(), frame["id"].tolist(), sha256_file(path)
    from molwm.data.registry import get_card

    table = load_table(get_card(text))
    frame = table.frame
    ids = frame["id"].astype(str).tolist() if "id" in frame.columns else list(range(len(frame)))
    key = hashlib.sha256(f"{table.card.name}:{table.digest}".encode()).hexdigest()
    return table.card.name, frame["smiles"].tolist(), ids, key
