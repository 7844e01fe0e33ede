"""Descriptor targets stored beside a prepared dataset's graph shards, and their statistics.

Layout, inside a graph cache folder ``<root>/<dataset>/<key>/``::

    descriptors/<dkey>/
        manifest.json        # written last: its presence marks a complete table
        shard_00000.npy      # float32 [n, K], the rows of graph shard_00000, NaN where missing
        shard_00001.npy ...

``dkey`` hashes the graph cache's key (the source's content, limit, featurizer) and the
descriptor spec (set, version, names, RDKit version), so a changed source or descriptor
set never reads stale values. Shards are computed in worker processes, one graph shard
at a time, and each is written atomically, so memory stays flat in the number of
molecules and an interrupted build resumes where it stopped.

Statistics (:class:`DescriptorStats`) are fitted on training rows only: the median and a
robust scale (1.4826 x MAD, the standard deviation where the MAD is 0) of each descriptor;
values are standardised, clipped at +-6 and left NaN where missing (a missing value carries
no loss). Descriptors constant on the fitting rows are dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from featurizers.descriptors import DescriptorSpec, compute_descriptors, descriptor_spec
from featurizers.molecule import resolve_n_jobs
from molwm.data.cache import GraphCache

DESCRIPTOR_FORMAT = 1
CHUNK = 1000
"""Molecules per worker task."""


def descriptor_key(cache: GraphCache, spec: DescriptorSpec) -> str:
    """Content key of a descriptor table (16 hex chars)."""
    blob = json.dumps({"format": DESCRIPTOR_FORMAT, "graphs": cache.manifest["key"], "spec": spec.to_dict()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class DescriptorTable:
    """A complete descriptor table beside a graph cache, rows aligned with its molecules.

    Attributes:
        path: The ``descriptors/<dkey>`` folder.
        manifest: Its parsed ``manifest.json``.
    """

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> "DescriptorTable":
        """Open a complete table; raises ``FileNotFoundError`` if it is incomplete."""
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"no complete descriptor table at {path} (manifest.json missing)")
        table = cls(path, json.loads((path / "manifest.json").read_text()))
        counts = [s["n"] for s in table.manifest["shards"]]
        table._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        table._maps = {}
        return table

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def names(self) -> list[str]:
        """Descriptor names, in column order."""
        return list(self.manifest["spec"]["names"])

    def shard(self, i: int) -> np.ndarray:
        """``[n_i, K]`` values of shard ``i`` (memory-mapped)."""
        if i not in self._maps:
            self._maps[i] = np.load(self.path / f"{self.manifest['shards'][i]['name']}.npy", mmap_mode="r")
        return self._maps[i]

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """``[len(positions), K]`` float32 values of molecules ``positions`` (cache order), in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), len(self.names)), dtype=np.float32)
        shard = np.searchsorted(self._offsets, positions, side="right") - 1
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            out[sel] = self.shard(int(s))[positions[sel] - self._offsets[s]]
        return out


def prepare_descriptors(cache: GraphCache, n_jobs: int = 0, progress: bool = True) -> DescriptorTable:
    """The descriptor table of ``cache``, computed (in ``n_jobs`` processes; 0: every core) unless it exists.

    An interrupted build keeps the shards it finished and computes only the rest.
    """
    spec = descriptor_spec()
    folder = cache.path / "descriptors" / descriptor_key(cache, spec)
    if not (folder / "manifest.json").is_file():
        build_column_shards(cache, folder, compute_descriptors, n_jobs, progress,
                            f"descriptors {cache.manifest['dataset']}",
                            {"spec": spec.to_dict(), "spec_digest": spec.digest()})
    return DescriptorTable.open(folder)


def build_column_shards(cache: GraphCache, folder: Path, fn: Callable[[list[str]], np.ndarray], n_jobs: int,
                        progress: bool, desc: str, extra: dict) -> dict:
    """Compute ``fn(smiles)`` (rows aligned with the molecules) for every shard of ``cache`` into
    ``folder/<shard>.npy``, in ``n_jobs`` worker processes, a shard at a time (memory flat), each written
    atomically and skipped if already there (an interrupted build resumes); ``manifest.json`` last.

    Returns:
        The manifest (``extra`` plus the shards, counts and timing).
    """
    folder.mkdir(parents=True, exist_ok=True)
    shards, t0, jobs = [], time.perf_counter(), resolve_n_jobs(n_jobs)
    bar = tqdm(total=len(cache), desc=desc, unit="mol", disable=not progress, mininterval=1.0)
    with ProcessPoolExecutor(jobs) if jobs > 1 else _InProcess() as pool:
        for i, name in enumerate(cache.shard_names):
            target = folder / f"{name}.npy"
            smiles = cache.shard_meta(i)["smiles"].tolist()
            if not target.is_file():  # else done by an earlier, interrupted build
                chunks = [smiles[j:j + CHUNK] for j in range(0, len(smiles), CHUNK)]
                values = np.concatenate(list(pool.map(fn, chunks))) if chunks else fn([])
                tmp = folder / f"{name}.tmp-{os.getpid()}.npy"  # its own: another process may build it too
                np.save(tmp, values)
                os.replace(tmp, target)
            shards.append({"name": name, "n": len(smiles)})
            bar.update(len(smiles))
    bar.close()
    manifest = {"format": DESCRIPTOR_FORMAT, **extra, "graph_key": cache.manifest["key"],
                "n": sum(s["n"] for s in shards), "shards": shards, "seconds": time.perf_counter() - t0,
                "n_jobs": jobs}
    tmp = folder / f"manifest.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / "manifest.json")
    return manifest


class _InProcess:
    """``ProcessPoolExecutor``'s ``map`` in this process (``n_jobs=1``: no workers to start)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items):
        return map(fn, items)


@dataclass
class DescriptorStats:
    """Per-descriptor centre and scale, fitted on training rows only.

    Attributes:
        names: The kept descriptors (constant or never-computed ones are dropped).
        columns: ``[K']`` their column indices in the table.
        median: ``[K']`` medians.
        scale: ``[K']`` robust scales (1.4826 x MAD, or the std where the MAD is 0).
        clip: Standardised values are clipped to ``+-clip``.
        n_rows: How many rows the statistics were fitted on.
    """

    names: list[str]
    columns: np.ndarray
    median: np.ndarray
    scale: np.ndarray
    clip: float = 6.0
    n_rows: int = 0

    @classmethod
    def fit(cls, table: DescriptorTable, rows: np.ndarray, max_rows: int = 200_000, seed: int = 0,
            clip: float = 6.0) -> "DescriptorStats":
        """Fit on ``rows`` (the training rows; a seeded subsample of ``max_rows`` of them if more).

        Raises:
            ValueError: If no descriptor varies over the rows.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
        x = table.rows(rows).astype(np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: dropped below, not an error
            median = np.nanmedian(x, axis=0)
            mad = 1.4826 * np.nanmedian(np.abs(x - median), axis=0)
            std = np.nanstd(x, axis=0)
        scale = np.where(mad > 0, mad, std)
        keep = np.flatnonzero(np.isfinite(median) & np.isfinite(scale) & (scale > 0))
        if not len(keep):
            raise ValueError(f"no descriptor varies over the {len(rows)} rows given")
        names = table.names
        return cls([names[j] for j in keep], keep, median[keep], scale[keep], clip, len(rows))

    @property
    def size(self) -> int:
        """Number of kept descriptors."""
        return len(self.names)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """``[N, K]`` table values -> ``[N, K']`` float32 standardised, clipped, NaN where missing."""
        z = (values[:, self.columns].astype(np.float64) - self.median) / self.scale
        return np.clip(z, -self.clip, self.clip).astype(np.float32)  # NaN stays NaN

    def to_dict(self) -> dict:
        return {"names": self.names, "columns": self.columns.tolist(), "median": self.median.tolist(),
                "scale": self.scale.tolist(), "clip": self.clip, "n_rows": self.n_rows}

    @classmethod
    def from_dict(cls, data: dict) -> "DescriptorStats":
        return cls(list(data["names"]), np.asarray(data["columns"], np.int64), np.asarray(data["median"]),
                   np.asarray(data["scale"]), float(data["clip"]), int(data["n_rows"]))

