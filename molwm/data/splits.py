"""Deterministic train/val/test splits, and Chemprop-compatible split files.

All functions return sorted index arrays and depend only on their inputs and
``seed``. A split file is Chemprop's ``--splits-file`` format: a JSON list
with one ``{"train": [...], "val": [...], "test": [...]}`` per seed.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from molwm.atomic import write_text_atomic
from molwm.errors import MolwmError

Split = tuple[np.ndarray, np.ndarray, np.ndarray]


class SplitError(MolwmError, ValueError):
    """Bad split fractions, inputs or split file."""


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise SplitError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise SplitError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def _sorted(parts) -> Split:
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def murcko_scaffold(smiles: str, include_chirality: bool = False) -> str:
    """Bemis-Murcko scaffold SMILES; ``""`` for acyclic molecules.

    Raises:
        SplitError: If the SMILES cannot be parsed.
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
    if mol is None:
        raise SplitError(f"cannot compute a scaffold for unparsable SMILES {smiles!r}")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold_groups(smiles: Sequence[str]) -> dict[str, list[int]]:
    """Group row indices by Bemis-Murcko scaffold (acyclic molecules share ``""``).

    Raises:
        SplitError: Naming the first row whose SMILES cannot be parsed.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        try:
            groups[murcko_scaffold(s)].append(i)
        except SplitError as err:
            raise SplitError(f"row {i}: {err}") from None
    return dict(groups)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Split so that no Bemis-Murcko scaffold appears in two parts.

    Balanced scaffold split (as in Chemprop): scaffold groups larger than half
    the test size go first, to train, so that val and test are not dominated
    by one big family; the remaining groups are shuffled by ``seed`` and
    filled into train, then val, then test. Acyclic molecules form one group.

    Args:
        smiles: One SMILES per row.
        fractions: (train, val, test), summing to 1.
        seed: Different seeds give different, equally valid splits.

    Returns:
        Sorted ``(train_idx, val_idx, test_idx)``.
    """
    f_train, f_val, _ = _check_fractions(fractions)
    n = len(smiles)
    groups = list(scaffold_groups(smiles).values())
    n_train, n_val = int(np.floor(f_train * n)), int(np.floor(f_val * n))
    n_test = n - n_train - n_val
    rng = np.random.default_rng(seed)
    big = [g for g in groups if len(g) > n_test / 2]
    small = [g for g in groups if len(g) <= n_test / 2]
    order = rng.permutation(len(big))
    big = [big[i] for i in order]
    order = rng.permutation(len(small))
    small = [small[i] for i in order]
    train, val, test = [], [], []
    for group in big + small:
        if len(train) + len(group) <= n_train:
            train += group
        elif len(val) + len(group) <= n_val:
            val += group
        else:
            test += group
    return _sorted((train, val, test))


def random_split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Uniformly random split of ``range(n)``."""
    f_train, f_val, _ = _check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(np.floor(f_train * n)), int(np.floor(f_val * n))
    return _sorted((perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]))


def stratified_split(labels: Sequence, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Random split that keeps each class's share in every part (for classification).

    Args:
        labels: One class label per row (NaN labels form their own stratum).
    """
    f_train, f_val, _ = _check_fractions(fractions)
    labels = np.asarray(labels, dtype=object)
    keys = np.array(["nan" if (isinstance(v, float) and v != v) else repr(v) for v in labels])
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for key in sorted(set(keys)):
        idx = rng.permutation(np.flatnonzero(keys == key))
        a = int(round(f_train * len(idx)))
        b = a + int(round(f_val * len(idx)))
        train += idx[:a].tolist()
        val += idx[a:b].tolist()
        test += idx[b:].tolist()
    return _sorted((train, val, test))


def make_split(kind: str, smiles: Sequence[str], fractions=(0.8, 0.1, 0.1), seed: int = 0, labels=None) -> Split:
    """Dispatch by name: ``scaffold``, ``random`` or ``stratified`` (needs ``labels``)."""
    if kind == "scaffold":
        return scaffold_split(smiles, fractions, seed)
    if kind == "random":
        return random_split(len(smiles), fractions, seed)
    if kind == "stratified":
        if labels is None:
            raise SplitError("a stratified split needs labels")
        return stratified_split(labels, fractions, seed)
    raise SplitError(f"unknown split kind '{kind}' (expected scaffold, random or stratified)")


def dataset_record(rows: Sequence[int], smiles: Sequence[str], n_rows: int) -> dict:
    """What a split file records of the dataset it indexes: its source rows and a SHA-256 of the
    featurized rows' ``index<TAB>SMILES`` lines (a split of another dataset, or of another version of
    it, is refused by :func:`load_splits`)."""
    digest = hashlib.sha256("".join(f"{int(r)}\t{s}\n" for r, s in zip(rows, smiles)).encode()).hexdigest()
    return {"n_rows": int(n_rows), "smiles_sha256": digest}


def save_splits(splits: Sequence[Split], path: str | Path, dataset: dict | None = None) -> Path:
    """Write splits (one per seed) as a Chemprop ``--splits-file`` JSON.

    Args:
        splits: ``(train, val, test)`` source-row indices per seed.
        path: The file (written atomically).
        dataset: :func:`dataset_record` of the dataset, stored in every entry beside the three
            lists (readers that know only ``train``/``val``/``test``, Chemprop's, ignore it).
    """
    path = Path(path)
    data = [{"train": tr.tolist(), "val": va.tolist(), "test": te.tolist(), **(dataset or {})}
            for tr, va, te in splits]
    write_text_atomic(path, json.dumps(data))
    return path


def load_splits(path: str | Path, n_rows: int | None = None, dataset: dict | None = None,
                name: str = "the dataset") -> list[Split]:
    """Read a Chemprop ``--splits-file`` JSON (a list of train/val/test dicts).

    Args:
        path: The JSON file.
        n_rows: If given, every index must be in ``[0, n_rows)``.
        dataset: :func:`dataset_record` of the dataset the split is used with; a file that records
            another dataset is refused. Files without a record (Chemprop's, older molwm's) are
            checked by ``n_rows`` only.
        name: The dataset's name, for messages.

    Raises:
        SplitError: Naming the file, the entry and the problem (missing key,
            overlap between parts, out-of-range index, another dataset).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SplitError(f"{path}: cannot read split file: {err}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise SplitError(f"{path}: expected a list of {{'train', 'val', 'test'}} objects")
    out = []
    for k, entry in enumerate(data):
        if not isinstance(entry, dict) or not {"train", "val", "test"} <= set(entry):
            raise SplitError(f"{path}: entry {k} must have 'train', 'val' and 'test' lists")
        if dataset is not None and "n_rows" in entry:
            _check_record(path, entry, dataset, name)
        try:
            parts = [np.asarray(entry[p], dtype=np.int64).reshape(-1) for p in ("train", "val", "test")]
        except (TypeError, ValueError, OverflowError):
            raise SplitError(f"{path}: entry {k}: 'train', 'val' and 'test' must be lists of row numbers") from None
        seen = np.concatenate(parts)
        if len(np.unique(seen)) != len(seen):
            raise SplitError(f"{path}: entry {k}: a row index appears twice (parts overlap)")
        if n_rows is not None and len(seen) and (seen.min() < 0 or seen.max() >= n_rows):
            bad = int(seen.max() if seen.max() >= n_rows else seen.min())
            raise SplitError(f"{path}: entry {k}: row index {bad} is out of range for {name} ({n_rows} rows): "
                             "a split file of another dataset?")
        out.append(_sorted(parts))
    return out


def _check_record(path: Path, entry: dict, dataset: dict, name: str) -> None:
    theirs = (entry.get("n_rows"), str(entry.get("smiles_sha256", ""))[:12])
    ours = (dataset["n_rows"], dataset["smiles_sha256"][:12])
    if theirs != ours:
        raise SplitError(f"{path} was written for a dataset of {theirs[0]} rows (SMILES sha256 {theirs[1]}), "
                         f"not {name} ({ours[0]} rows, SMILES sha256 {ours[1]})")
