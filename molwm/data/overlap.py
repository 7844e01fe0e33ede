"""Keeping benchmark molecules out of pretraining: InChIKeys of a pretraining cache and of labelled sets.

A pretraining corpus that contains a benchmark's test molecules lets pretraining see
what the benchmark asks about. ``exclude:`` in a graph pretraining config names the
datasets whose molecules (every row of them, not only a split's test rows: their
splits are drawn per seed) never enter pretraining, matched by standard InChIKey, so
different SMILES of one molecule (kekulé or aromatic, atom order, explicit hydrogens)
are the same key; a salt and its parent are not.

The cache's keys are computed once, beside its graph shards (``inchikeys/<key>/``,
built like the descriptor table: a shard at a time, in worker processes, resumable);
a labelled set's keys are computed when asked (they are small).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from molwm.atomic import atomic_path
from molwm.data.cache import GraphCache
from molwm.data.descriptors import DescriptorTable, build_column_shards
from molwm.data.registry import get_card
from molwm.data.sources import load_table

KEY_FORMAT = 1
KEY_WIDTH = 27
"""Characters of an InChIKey."""


def inchikeys(smiles: Sequence[str]) -> np.ndarray:
    """``[N]`` ``S27`` InChIKeys (``b""`` where RDKit cannot parse the SMILES or make the key)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = np.zeros(len(smiles), dtype=f"S{KEY_WIDTH}")
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
        if mol is not None:
            try:
                out[i] = Chem.MolToInchiKey(mol).encode()
            except Exception:  # an InChI failure on one exotic molecule leaves its key empty
                pass
    return out


def cache_inchikeys(cache: GraphCache, n_jobs: int = 0, progress: bool = True) -> np.ndarray:
    """``[len(cache)]`` InChIKeys of the cached molecules, in cache order (computed once, beside the shards)."""
    import rdkit

    spec = {"format": KEY_FORMAT, "what": "inchikey", "rdkit": rdkit.__version__}
    key = hashlib.sha256(json.dumps({**spec, "graphs": cache.manifest["key"]}, sort_keys=True).encode()).hexdigest()
    folder = cache.path / "inchikeys" / key[:16]
    if not (folder / "manifest.json").is_file():
        build_column_shards(cache, folder, inchikeys, n_jobs, progress, f"InChIKeys {cache.manifest['dataset']}",
                            {"spec": spec})
    table = DescriptorTable.open(folder)
    return np.concatenate([np.asarray(table.shard(i)) for i in range(len(table.manifest["shards"]))]) \
        if table.manifest["shards"] else np.zeros(0, dtype=f"S{KEY_WIDTH}")


def dataset_inchikeys(names: Sequence[str]) -> dict[str, set[bytes]]:
    """For each dataset card name: the InChIKeys of all its rows."""
    out = {}
    for name in names:
        frame = load_table(get_card(name)).frame
        keys = inchikeys(frame["smiles"].tolist())
        out[name] = {k for k in keys.tolist() if k}
    return out


def excluded_rows(cache: GraphCache, datasets: Sequence[str], n_jobs: int = 0,
                  progress: bool = True) -> tuple[np.ndarray, dict[str, int]]:
    """Cache positions whose molecule is in any of ``datasets``, and how many each dataset matched.

    Returns:
        ``(sorted positions, {dataset: molecules of the cache it matched})``.
    """
    if not datasets:
        return np.zeros(0, dtype=np.int64), {}
    keys = cache_inchikeys(cache, n_jobs, progress)
    hits, counts = np.zeros(len(keys), dtype=bool), {}
    for name, found in dataset_inchikeys(datasets).items():
        mine = np.isin(keys, np.array(sorted(found), dtype=f"S{KEY_WIDTH}")) & (keys != b"")
        counts[name] = int(mine.sum())
        hits |= mine
    return np.flatnonzero(hits), counts


def write_exclusions(path: Path, cache: GraphCache, rows: np.ndarray) -> Path:
    """The excluded molecules (cache position, source row, SMILES) as a CSV report."""
    meta = cache.meta()
    frame = meta.iloc[rows][["index", "smiles"]].rename(columns={"index": "source_row"})
    frame.insert(0, "cache_position", rows)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path
