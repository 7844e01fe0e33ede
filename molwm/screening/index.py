"""A nearest-neighbour index of a reference set's embeddings, tied to the model that made them.

An index is a folder: ``index.json`` (what it is: the model's digest, the reference, the backend and its
settings, recall@10 measured at build time), ``reference.parquet`` (the reference rows' SMILES and ids),
the backend's own file, and ``sample.npy`` (up to 20,000 unit embeddings, the background of embedding
maps). ``index.json`` is written last: a folder without it is not an index.

Backends (``BACKENDS``): ``exact`` (every reference compared with every query; kept for small sets),
``usearch`` (HNSW graph, memory-mapped on load so the workers of one machine share one copy) and
``faiss-hnsw`` (FAISS's HNSW graph). ``auto`` picks exact up to ``EXACT_MAX`` rows and FAISS's HNSW
above (docs/benchmarks.md, "Screening": chosen by recall@10 and build time on MOSES).

:class:`IndexedReference` is a :class:`~molwm.query.ReferenceSet` whose ``search`` answers from the index,
so every neighbour query (``molwm query --what neighbours``, locally or on Ray) takes one unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from molwm.atomic import atomic_path, write_text_atomic
from molwm.query import MoleculeModel, ReferenceSet
from molwm.screening.shards import ScreeningError
from molwm.tracking import download_model

INDEX_FORMAT = 1
EXACT_MAX = 50_000
"""``auto`` searches sets up to this size exactly: 1,000 queries took 0.31 s against 50,000 MOSES rows and
1.15 s against 200,000 on one loaded core, against 0.33 s through HNSW at recall@10 0.9999 (200,000)."""
APPROXIMATE_DEFAULT = "faiss-hnsw"
SAMPLE_ROWS = 20_000
BACKENDS = ("auto", "exact", "usearch", "faiss-hnsw")
RECALL_QUERIES = 1000


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ScreeningError(f"the {module} index needs the 'scale' extra: pip install 'molwm[scale]'") from None


class ExactSearch:
    """Every query against every row (``unit.npy``)."""

    file = "unit.npy"

    def __init__(self, unit: np.ndarray, settings: dict | None = None):
        self.unit = unit
        self.settings = {}

    @classmethod
    def build(cls, unit: np.ndarray, settings: dict, threads: int) -> "ExactSearch":
        return cls(unit)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.unit)

    @classmethod
    def load(cls, path: Path, settings: dict) -> "ExactSearch":
        return cls(np.load(path))

    def search(self, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return ReferenceSet("", np.empty(0), np.empty(0), self.unit).search(unit, k)


class UsearchHNSW:
    """usearch's HNSW over inner products of unit vectors (cosine)."""

    file = "index.usearch"
    defaults = {"connectivity": 32, "expansion_add": 128, "expansion_search": 128}

    def __init__(self, index, settings: dict):
        self.index = index
        self.settings = settings

    @classmethod
    def build(cls, unit: np.ndarray, settings: dict, threads: int) -> "UsearchHNSW":
        _require("usearch")
        from usearch.index import Index

        settings = {**cls.defaults, **settings}
        index = Index(ndim=unit.shape[1], metric="ip", dtype="f32", **settings)
        index.add(np.arange(len(unit), dtype=np.uint64), np.ascontiguousarray(unit, dtype=np.float32),
                  threads=threads)
        return cls(index, settings)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            self.index.save(str(tmp))

    @classmethod
    def load(cls, path: Path, settings: dict) -> "UsearchHNSW":
        _require("usearch")
        from usearch.index import Index

        index = Index.restore(str(path), view=True)  # memory-mapped: one copy in the page cache per machine
        index.expansion_search = settings.get("expansion_search", cls.defaults["expansion_search"])
        return cls(index, settings)

    def search(self, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.index.search(np.ascontiguousarray(unit, dtype=np.float32), k, threads=1)
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(unit), -1)
        dist = np.asarray(found.distances, dtype=np.float32).reshape(len(unit), -1)
        counts = np.asarray(found.counts).reshape(-1)
        missing = np.arange(keys.shape[1])[None, :] >= counts[:, None]  # fewer than k found
        keys[missing] = -1
        sim = np.where(missing, np.nan, np.clip(1.0 - dist, -1.0, 1.0)).astype(np.float32)
        return keys, sim


class FaissHNSW:
    """FAISS's HNSW (flat storage) over inner products of unit vectors."""

    file = "index.faiss"
    defaults = {"M": 32, "ef_construction": 128, "ef_search": 128}

    def __init__(self, index, settings: dict):
        self.index = index
        self.settings = settings

    @classmethod
    def build(cls, unit: np.ndarray, settings: dict, threads: int) -> "FaissHNSW":
        faiss = _require("faiss")
        settings = {**cls.defaults, **settings}
        previous = faiss.omp_get_max_threads()  # FAISS and torch share one OpenMP runtime: put it back after
        faiss.omp_set_num_threads(threads)
        try:
            index = faiss.IndexHNSWFlat(unit.shape[1], settings["M"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = settings["ef_construction"]
            index.add(np.ascontiguousarray(unit, dtype=np.float32))
        finally:
            faiss.omp_set_num_threads(previous)
        index.hnsw.efSearch = settings["ef_search"]
        return cls(index, settings)

    def save(self, path: Path) -> None:
        faiss = _require("faiss")
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    @classmethod
    def load(cls, path: Path, settings: dict) -> "FaissHNSW":
        faiss = _require("faiss")
        index = faiss.read_index(str(path))
        index.hnsw.efSearch = settings.get("ef_search", cls.defaults["ef_search"])
        return cls(index, settings)

    def search(self, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sim, idx = self.index.search(np.ascontiguousarray(unit, dtype=np.float32), k)
        sim = np.where(idx < 0, np.nan, np.clip(sim, -1.0, 1.0)).astype(np.float32)
        return idx.astype(np.int64), sim


SEARCHERS = {"exact": ExactSearch, "usearch": UsearchHNSW, "faiss-hnsw": FaissHNSW}


@dataclass
class IndexedReference(ReferenceSet):
    """A reference set searched through its index (``unit`` holds only a sample, for embedding maps).

    Attributes:
        searcher: The backend answering :meth:`search`.
        folder: Where the index lies on this machine.
        meta: ``index.json``.
    """

    searcher: object = None
    folder: Path = Path(".")
    meta: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Identifies the index's content (its ``index.json`` records it)."""
        return self.meta.get("digest", "")

    def search(self, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` from the index: ``(indices [b, k], similarities [b, k])``, best first."""
        return self.searcher.search(unit, k)


def recall_at(searcher, unit: np.ndarray, k: int = 10, queries: int = RECALL_QUERIES, seed: int = 0) -> float:
    """Recall@``k`` of ``searcher`` against exact search, with ``queries`` reference rows as queries.

    Each query's own row is left out of both lists (finding itself is no test), and a returned row counts
    when its exact similarity reaches the exact ``k``-th neighbour's (ties at the boundary are not misses).
    """
    n = len(unit)
    if n <= k + 1:
        return 1.0
    rows = np.random.default_rng(seed).choice(n, min(queries, n), replace=False)
    q = np.asarray(unit[rows], dtype=np.float32)
    exact_idx, exact_sim = ExactSearch(unit).search(q, k + 1)
    found_idx, _ = searcher.search(q, k + 1)
    hits = 0
    for i, row in enumerate(rows):
        kth = exact_sim[i][exact_idx[i] != row][:k][-1]
        got = [j for j in found_idx[i] if j >= 0 and j != row][:k]
        hits += int(np.sum(np.asarray(unit[got], dtype=np.float32) @ q[i] >= kth - 1e-5)) if got else 0
    return hits / (len(rows) * k)


def choose_backend(backend: str, n: int) -> str:
    """``auto``: exact up to :data:`EXACT_MAX` rows, else :data:`APPROXIMATE_DEFAULT`."""
    if backend not in BACKENDS:
        raise ScreeningError(f"unknown index backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        return "exact" if n <= EXACT_MAX else APPROXIMATE_DEFAULT
    return backend


def write_index(folder: str | Path, ref: ReferenceSet, model: MoleculeModel, backend: str = "auto",
                settings: dict | None = None, threads: int | None = None) -> dict:
    """Build the index of ``ref`` (embedded by ``model``) into ``folder``; returns its ``index.json``.

    Args:
        folder: Where to write (created; an index already there is replaced).
        ref: The reference set's unit embeddings, SMILES and ids.
        model: The model that embedded them (its digest ties the index to it).
        backend: One of :data:`BACKENDS`.
        settings: Backend settings over its defaults (e.g. ``{"expansion_search": 256}``).
        threads: Build threads (default: every core of this process).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").unlink(missing_ok=True)  # not an index until it is complete again
    name = choose_backend(backend, len(ref))
    threads = threads or len(os.sched_getaffinity(0))
    unit = np.ascontiguousarray(ref.unit, dtype=np.float32)
    t0 = time.perf_counter()
    searcher = SEARCHERS[name].build(unit, dict(settings or {}), threads)
    build_s = time.perf_counter() - t0
    searcher.save(folder / SEARCHERS[name].file)
    recall = recall_at(searcher, unit) if name != "exact" else 1.0
    q = unit[np.random.default_rng(1).choice(len(unit), min(1000, len(unit)), replace=False)]
    t0 = time.perf_counter()
    searcher.search(q, 10)
    query_s = time.perf_counter() - t0
    with atomic_path(folder / "reference.parquet") as tmp:
        pd.DataFrame({"smiles": np.asarray(ref.smiles, dtype=object), "id": np.asarray(ref.ids, dtype=object)}
                     ).astype("string").to_parquet(tmp, index=False)
    sample = unit[np.sort(np.random.default_rng(0).choice(len(unit), min(SAMPLE_ROWS, len(unit)), replace=False))]
    with atomic_path(folder / "sample.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, sample)
    meta = {"format": INDEX_FORMAT, "model": str(model.source), "model_digest": model.digest,
            "reference": ref.name, "backend": name, "settings": searcher.settings, "n": len(unit),
            "dim": int(unit.shape[1]), "recall_at_10": round(recall, 4), "build_seconds": round(build_s, 2),
            "query_1000_seconds": round(query_s, 4), "build_threads": threads}
    meta["digest"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()
                                    + hashlib.sha256(unit.tobytes()).digest()).hexdigest()
    write_text_atomic(folder / "index.json", json.dumps(meta, indent=1))
    return meta


def load_index(uri: str | Path, model: MoleculeModel, tracking_uri: str | None = None) -> IndexedReference:
    """Open the index at ``uri`` (a folder, or an MLflow artifact URI such as ``runs:/<id>/index``) for ``model``.

    Raises:
        ScreeningError: No index there, or it was built with another model (compared by digest).
    """
    folder = Path(str(uri))
    if not folder.is_dir():
        if "://" not in str(uri) and not str(uri).startswith(("runs:/", "models:/")):
            raise FileNotFoundError(f"no index at {uri} (a folder written by molwm index build, or its runs:/ URI)")
        folder = download_model(str(uri), tracking_uri)
    meta_path = folder / "index.json"
    if not meta_path.is_file():
        raise ScreeningError(f"{uri} is not a molwm index (it has no index.json); build one with molwm index build")
    meta = json.loads(meta_path.read_text())
    if meta.get("model_digest") != model.digest:
        raise ScreeningError(f"index {uri} was built with model {meta.get('model')} (digest "
                             f"{str(meta.get('model_digest'))[:12]}), not {model.source} (digest {model.digest[:12]}); "
                             f"rebuild it: molwm index build --model {model.source} --reference {meta.get('reference')}")
    cls = SEARCHERS.get(meta.get("backend"))
    if cls is None:
        raise ScreeningError(f"{meta_path}: unknown index backend {meta.get('backend')!r}")
    table = pd.read_parquet(folder / "reference.parquet")
    return IndexedReference(meta["reference"], table["smiles"].to_numpy(dtype=object),
                            table["id"].to_numpy(dtype=object), np.load(folder / "sample.npy"),
                            searcher=cls.load(folder / cls.file, meta.get("settings", {})), folder=folder.resolve(),
                            meta=meta)
