"""On-disk cache of featurized graphs: featurize once, read many times.

Layout of one prepared dataset::

    <root>/<dataset>/<key>/
        manifest.json          # written last: its presence marks a complete cache
        rejects.csv            # every input that was not featurized, with the reason
        shard_00000/           # GraphArrays as .npy (memory-mappable) + meta.parquet
        shard_00001/ ...

``key`` hashes the source files' checksums, the row limit, the featurizer
spec (names, sizes, version) and the featurization options, so a changed
featurizer or file never reads stale shards.

Faults (docs/reliability.md): a build writes into ``<root>/<dataset>/.partial/<key>-<pid>``
and renames the whole folder into place when it is complete, under a file lock
(``<root>/<dataset>/.<key>.lock``), so two processes preparing the same dataset
build it once, and a build killed at any point leaves nothing read as complete.
Each shard's files are listed in the manifest with their size and SHA-256:
:meth:`GraphCache.open` checks the sizes, :meth:`GraphCache.verify` the checksums
(caches written before checksums were recorded are read as before).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from featurizers.graphs import GraphArrays, MolGraph
from featurizers.molecule import GRAPH_SPEC
from featurizers.spec import GraphSpec
from molwm.data.paths import cache_root  # noqa: F401 (re-exported: callers import it from here)
from molwm.errors import MolwmError

CACHE_FORMAT = 1


class CorruptCacheError(MolwmError, FileNotFoundError):
    """A cache whose files do not match its manifest (truncated, edited or removed)."""


def file_checksums(folder: Path) -> dict[str, dict]:
    """``{file name: {"bytes": size, "sha256": hex}}`` for the files directly in ``folder``."""
    return {f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
            for f in sorted(folder.iterdir()) if f.is_file()}


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of one file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def build_lock(directory: Path):
    """Hold an exclusive lock on building the cache ``directory`` (``<root>/<dataset>/<key>``); another
    process asking for it waits. The lock is a ``flock``, so a killed holder releases it."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def staging_dir(directory: Path) -> Path:
    """A fresh private folder to build ``directory`` in (never read as a cache); call under
    :func:`build_lock`, which makes the leftovers of killed builds of the same key safe to remove."""
    partial = directory.parent / ".partial"
    for old in partial.glob(f"{directory.name}-*"):
        shutil.rmtree(old, ignore_errors=True)
    staging = partial / f"{directory.name}-{os.getpid()}"
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, directory: Path) -> None:
    """Move a complete build from ``staging`` to ``directory`` (replacing what is there) by renames."""
    old = None
    if directory.exists():
        old = staging.parent / f"{directory.name}-{os.getpid()}.old"
        os.rename(directory, old)
    os.rename(staging, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def cache_key(source_digest: str, limit: int | None, spec: GraphSpec = GRAPH_SPEC, **options) -> str:
    """Content key of a prepared dataset (hex, 16 chars).

    Args:
        source_digest: Checksum of the source files.
        limit: Row limit (None for all rows).
        spec: The featurizer's declared output; its version is included.
        **options: Featurization options that change the output (e.g. ``max_smiles_length``).
    """
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "source": source_digest,
            "limit": limit,
            "spec": spec.to_dict(),
            "options": options,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ShardWriter:
    """Accumulates featurized chunks and writes fixed-size shards atomically."""

    def __init__(self, directory: Path, shard_size: int, frame: pd.DataFrame):
        self.directory = directory
        self.shard_size = shard_size
        self.frame = frame
        self.pending: list[GraphArrays] = []
        self.n_pending = 0
        self.shards: list[dict] = []

    def add(self, arrays: GraphArrays) -> None:
        if len(arrays) == 0:
            return
        self.pending.append(arrays)
        self.n_pending += len(arrays)
        while self.n_pending >= self.shard_size:
            merged = GraphArrays.concat(self.pending)
            self._write(merged.slice(0, self.shard_size))
            rest = merged.slice(self.shard_size, len(merged))
            self.pending, self.n_pending = ([rest], len(rest)) if len(rest) else ([], 0)

    def close(self) -> list[dict]:
        if self.n_pending:
            self._write(GraphArrays.concat(self.pending))
            self.pending, self.n_pending = [], 0
        return self.shards

    def _write(self, arrays: GraphArrays) -> None:
        name = f"shard_{len(self.shards):05d}"
        tmp = self.directory / f"{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        arrays.save(tmp)
        meta = self.frame.iloc[arrays.index].copy()
        meta.insert(0, "index", arrays.index)
        meta["smiles"] = meta["smiles"].astype(str).str.strip()
        meta.reset_index(drop=True).to_parquet(tmp / "meta.parquet", index=False)
        files = file_checksums(tmp)
        os.replace(tmp, self.directory / name)  # a shard appears whole or not at all
        self.shards.append(
            {"name": name, "n": len(arrays), "atoms": int(arrays.atom_ptr[-1]), "bonds": int(arrays.bond_ptr[-1]),
             "files": files}
        )


@dataclass
class GraphCache:
    """A complete prepared dataset on disk.

    Attributes:
        path: The ``<root>/<dataset>/<key>`` folder.
        manifest: Its parsed ``manifest.json``.
    """

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> "GraphCache":
        """Open a prepared dataset, checking that every file its manifest lists is there at its size.

        Raises:
            FileNotFoundError: If the cache is incomplete (no manifest) or of another format.
            CorruptCacheError: If a listed file is missing or has another size (run ``molwm data prepare``
                again: it rebuilds the cache).
        """
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no complete molwm cache at {path} (manifest.json missing)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            raise CorruptCacheError(f"cache at {path}: manifest.json is not JSON ({err})") from None
        if manifest.get("format") != CACHE_FORMAT:
            raise FileNotFoundError(f"cache at {path} has format {manifest.get('format')}, expected {CACHE_FORMAT}")
        cache = cls(path, manifest)
        problems = cache.verify(checksums=False)
        if problems:
            raise CorruptCacheError(f"cache at {path}: {problems[0]}" + (f" (and {len(problems) - 1} more)"
                                                                        if len(problems) > 1 else ""))
        return cache

    def verify(self, checksums: bool = True) -> list[str]:
        """What does not match the manifest: a line per missing, resized or (with ``checksums``) changed
        file; empty when all match. Caches written before sizes and checksums were recorded pass."""
        problems = []
        for shard in self.manifest["shards"]:
            for name, want in shard.get("files", {}).items():
                f = self.path / shard["name"] / name
                if not f.is_file():
                    problems.append(f"{shard['name']}/{name} is missing")
                elif f.stat().st_size != want["bytes"]:
                    problems.append(f"{shard['name']}/{name} has {f.stat().st_size} bytes, the manifest says "
                                    f"{want['bytes']} (truncated or edited)")
                elif checksums and file_sha256(f) != want["sha256"]:
                    problems.append(f"{shard['name']}/{name} does not match its SHA-256 (edited)")
        return problems

    @property
    def has_checksums(self) -> bool:
        """Whether the manifest lists its shards' files (caches written before it did read as before)."""
        return all("files" in s for s in self.manifest["shards"])

    def __len__(self) -> int:
        return int(self.manifest["n_ok"])

    @property
    def spec(self) -> dict:
        """The featurizer spec the shards were made with."""
        return self.manifest["spec"]

    @property
    def target_names(self) -> list[str]:
        """Label columns stored in the shards' meta tables."""
        return list(self.manifest.get("targets", []))

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self.manifest["shards"]]

    def shard_arrays(self, i: int, mmap: bool = True) -> GraphArrays:
        """Arrays of shard ``i`` (memory-mapped by default)."""
        return GraphArrays.load(self.path / self.shard_names[i], mmap=mmap)

    def shard_meta(self, i: int) -> pd.DataFrame:
        """``index``, ``smiles`` and target columns of shard ``i``."""
        return pd.read_parquet(self.path / self.shard_names[i] / "meta.parquet")

    def meta(self) -> pd.DataFrame:
        """All shards' meta tables, concatenated in molecule order."""
        if not self.shard_names:
            return pd.DataFrame(columns=["index", "smiles", *self.target_names])
        return pd.concat([self.shard_meta(i) for i in range(len(self.shard_names))], ignore_index=True)

    def iter_graphs(self) -> Iterator[MolGraph]:
        """Every graph, shard by shard, with ``smiles`` and (if labelled) ``y`` ``[1, n_targets]``."""
        for i in range(len(self.shard_names)):
            arrays = self.shard_arrays(i)
            meta = self.shard_meta(i)
            graphs = arrays.to_graphs(meta["smiles"].tolist())
            if self.target_names:
                y = torch.tensor(meta[self.target_names].to_numpy(np.float32))
                for g, row in zip(graphs, y):
                    g.y = row.unsqueeze(0)
            yield from graphs

    def graphs(self) -> list[MolGraph]:
        """Every graph in memory (fine for the labelled sets; stream MOSES with :meth:`iter_graphs`)."""
        return list(self.iter_graphs())

    def disk_bytes(self) -> int:
        """Total size of the cache folder."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


class GraphDataset(torch.utils.data.Dataset):
    """Map-style dataset over a :class:`GraphCache`, reading shards memory-mapped.

    Memory stays flat in the number of molecules: only the shard pointers are
    held, and each item is built on demand.
    """

    def __init__(self, cache: GraphCache):
        self.cache = cache
        counts = [s["n"] for s in cache.manifest["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._arrays: dict[int, GraphArrays] = {}
        self._targets: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, idx: int) -> MolGraph:
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} molecules")
        shard = int(np.searchsorted(self.offsets, idx, side="right") - 1)
        if shard not in self._arrays:
            self._arrays[shard] = self.cache.shard_arrays(shard)
            if self.cache.target_names:
                meta = self.cache.shard_meta(shard)
                self._targets[shard] = meta[self.cache.target_names].to_numpy(np.float32)
        local = idx - int(self.offsets[shard])
        graph = self._arrays[shard].slice(local, local + 1).to_graphs()[0]
        if shard in self._targets:
            graph.y = torch.from_numpy(self._targets[shard][local : local + 1].copy())
        return graph
