"""``molwm query --engine ray``: a query's blocks answered by Ray workers that each hold the model once.

The driver (this process) streams the inputs in blocks (:mod:`molwm.screening.shards`) and hands each
block to the least-loaded worker, at most two blocks queued per worker (memory stays flat in the number
of molecules). A worker is a Ray actor: it loads the model (and the neighbour index or reference set)
once, answers a block exactly as the single-process query answers a chunk
(:func:`molwm.query_files.answer_chunk`: one row per input, in input order, rejects with their reasons),
and writes the block's Parquet shard atomically. The driver records each finished shard in the manifest,
so a rerun of a killed job redoes only the shards it does not list.

Why actors and not Ray Data: a shard per block with its own manifest entry (what resuming needs) and the
input order inside each shard are direct here, and a block's rows travel to a worker once.

The output folder must be one every worker can write (the local disk for a local cluster; a shared file
system on a multi-node cluster).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from molwm.atomic import atomic_path, refuse_overwriting_inputs
from molwm.data.candidates import count_candidates
from molwm.query import MoleculeModel
from molwm.query_files import answer_chunk, resolve_what, return_freed_memory
from molwm.screening.index import load_index
from molwm.screening.shards import Manifest, ScreeningError, fingerprint, iter_blocks, resolve_inputs
from molwm.tracking import NullTracker, Tracker, default_tracking_uri

QUEUED_PER_WORKER = 2
"""Blocks handed to a worker ahead of its results: one running, one waiting (no idle gap between)."""
SAVE_EVERY_S = 1.0
"""The manifest is rewritten at most this often (and at the end); a shard finished but not yet recorded
when the job is killed is redone on the rerun, with the same content."""


def require_ray():
    """``import ray``, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ScreeningError("--engine ray needs Ray, which comes with the 'scale' extra: "
                             "pip install 'molwm[scale]'") from None
    return ray


@dataclass
class ScreenResult:
    """What a sharded query did.

    Attributes:
        output: The output folder (shards + ``manifest.json``).
        n: Input rows over the whole job (resumed shards included).
        n_ok: Rows answered.
        reasons: Reject reason -> count over the whole job.
        shards: Shards in the job.
        resumed: Shards a previous run had completed (not redone).
        new_rows: Rows answered by this run.
        seconds: Wall time of this run's dispatch loop (after the workers loaded the model).
        workers: Ray workers used.
        peak_rss_mib: Largest peak resident memory of any worker process, MiB.
    """

    output: Path
    n: int
    n_ok: int
    reasons: Counter
    shards: int
    resumed: int
    new_rows: int
    seconds: float
    workers: int
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        """Molecules per second answered by this run."""
        return self.new_rows / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """One line: counts, rate, where."""
        top = ", ".join(f"{r.split(':')[0]}: {c}" for r, c in self.reasons.most_common(3))
        rejected = f"{self.n - self.n_ok:,} rejected" + (f" ({top})" if top else "")
        resumed = f", {self.resumed} resumed from an earlier run" if self.resumed else ""
        return (f"queried {self.n:,} molecules on {self.workers} Ray workers: {self.n_ok:,} ok, {rejected}; "
                f"{self.shards} shards{resumed}; {self.new_rows:,} in {self.seconds:.1f} s "
                f"({self.rate:,.0f} molecules/s) -> {self.output}")


class ShardWorker:
    """A Ray actor's body: one model (and reference) loaded once, then one block per call."""

    def __init__(self, model: str, tracking_uri: str, what: list[str], k: int, reference, index: str | None,
                 index_local: str | None, threads: int, env: dict):
        os.environ.update(env)
        torch.set_num_threads(threads)
        self.wm = MoleculeModel.load(model, tracking_uri)
        self.wm.workers = 0  # one thread per worker: featurize and encode in turn
        self.what = what
        self.k = k
        self.need_emb = "embed" in what or "neighbours" in what
        self.ref = None
        if index:  # the driver's download where this node sees it, else this worker's own
            self.ref = load_index(index_local if index_local and Path(index_local).is_dir() else index,
                                  self.wm, tracking_uri)
        elif reference is not None:
            self.ref = reference

    def run(self, frame, path: str) -> dict:
        """Answer one block, write its shard atomically, return its manifest record."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        t0 = time.perf_counter()
        out, status, _, _ = answer_chunk(self.wm, frame, self.what, self.need_emb, self.ref, self.k)
        out = out.astype({c: "string" for c in out.columns if out[c].dtype == object})
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pandas(out, preserve_index=False), tmp)
        reasons = Counter(s for s in status if s != "ok")
        n = len(out)
        del out
        return_freed_memory()  # as the local query does after each chunk: without it the heap grows per block
        return {"n": n, "n_ok": n - sum(reasons.values()), "reasons": dict(reasons),
                "first_row": int(frame["row"].iloc[0]), "last_row": int(frame["row"].iloc[-1]),
                "worker": os.getpid(), "peak_rss_mib": round(_peak_rss_mib(), 1),
                "seconds": round(time.perf_counter() - t0, 3)}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _check_what(wm: MoleculeModel, what, reference, index) -> list[str]:
    what = resolve_what(wm, what, ScreeningError)
    if "neighbours" in what and not (index or reference):
        raise ScreeningError("neighbours needs --index (molwm index build) or --reference (a dataset name or file)")
    return what


def run_query_ray(model: str, inputs: str | Path, output: str | Path, what: Sequence[str] | None = None,
                  reference=None, index: str | None = None, k: int = 5, smiles_column: str | None = None,
                  block_rows: int = 10_000, workers: int | None = None, threads: int = 1,
                  address: str | None = None, tracker: Tracker | None = None, progress: bool = True) -> ScreenResult:
    """Answer ``what`` for every candidate of ``inputs`` on a Ray cluster; Parquet shards and a manifest out.

    Args:
        model: A model URI (checkpoint path, ``molwm:base``, ``runs:/``, ``models:/``); each worker loads it.
        inputs: One candidates file, a folder of them, or a glob pattern.
        output: A folder: ``part-<input>-<block>.parquet`` shards and ``manifest.json``.
        what: Among ``embed``, ``predict``, ``neighbours`` (default as ``molwm query``).
        reference: For ``neighbours`` without an index: a dataset name or file (embedded once, here).
        index: For ``neighbours``: a vector index (``molwm index build``), a folder or an MLflow URI.
        k: Neighbours per candidate.
        smiles_column: For tables: the SMILES column (default: guessed).
        block_rows: Rows per block, i.e. per shard.
        workers: Ray workers (default: the cluster's CPUs divided by ``threads``).
        threads: CPUs (torch threads) per worker.
        address: An existing Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``); without it a
            local cluster starts and stops with this call.
        tracker: Where the counts go (default: nowhere).
        progress: Show a progress bar (molecules/s).

    Raises:
        ScreeningError: Ray missing, another job in ``output``, a worker's failure (in one line).
    """
    ray = require_ray()
    files = resolve_inputs(inputs)
    refuse_overwriting_inputs(output, *files)
    tracker = tracker or NullTracker()
    output = Path(output).resolve()
    tracking_uri = default_tracking_uri()
    model = str(Path(model).resolve()) if Path(model).is_file() else str(model)  # workers may start elsewhere
    wm = MoleculeModel.load(model, tracking_uri)
    what = _check_what(wm, what, reference, index)
    ref = index_local = None
    if "neighbours" in what:
        if index:
            ref = load_index(index, wm, tracking_uri)  # refuses an index of another model, here, once
            index_local = str(ref.folder)
        else:
            ref = wm.reference(reference, progress=progress)
    job = {"model_digest": wm.digest, "what": what, "k": k if "neighbours" in what else None,
           "reference": (ref.digest if index else ref.name) if ref is not None else None,
           "smiles_column": smiles_column, "block_rows": block_rows, "inputs": [fingerprint(f) for f in files]}
    manifest = Manifest.open(output, job)
    started = _start(ray, address, workers, threads)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        env = {key: os.environ[key] for key in ("MOLWM_CACHE", "MOLWM_DATASETS") if key in os.environ}
        actor = ray.remote(num_cpus=threads)(ShardWorker)
        pool = [actor.remote(model, tracking_uri, what, k, None if index else ref, index, index_local, threads, env)
                for _ in range(workers)]
        with tracker.run("query-ray", tags={"engine": "ray"}):
            tracker.log_params({"model": model, "model_digest": wm.digest, "what": ",".join(what),
                                "inputs": len(files), "block_rows": block_rows, "workers": workers,
                                "threads_per_worker": threads, "cluster": address or "local",
                                "output": str(output)})
            result = _dispatch(ray, pool, manifest, files, block_rows, smiles_column, progress)
            tracker.log_metrics({"n": result.n, "n_ok": result.n_ok, "n_rejected": result.n - result.n_ok,
                                 "shards": result.shards, "shards_resumed": result.resumed,
                                 "rows_this_run": result.new_rows, "seconds": result.seconds,
                                 "molecules_per_s": result.rate, "worker_peak_rss_mib": result.peak_rss_mib})
            tracker.log_dict(dict(result.reasons), "rejects.json")
            tracker.log_artifact(manifest.path)
        return result
    finally:
        if started or address:
            ray.shutdown()  # stops a local cluster; only disconnects from an existing one


def _start(ray, address, workers, threads) -> bool:
    """Connect to ``address`` or start a local cluster sized for the workers; True if started here."""
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ScreeningError(f"cannot join the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
        return False
    cpus = (workers or len(os.sched_getaffinity(0)) // threads or 1) * threads
    # address="local": a new cluster even when `ray start` left one on this machine (ray.init would join it)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=256 * 2**20, **quiet)
    return True


def _dispatch(ray, pool, manifest: Manifest, files, block_rows, smiles_column, progress) -> ScreenResult:
    from tqdm.auto import tqdm

    counts = [count_candidates(f) for f in files]
    total = sum(counts) if None not in counts else None
    resumed = len(manifest.shards)
    inflight: dict = {}  # ObjectRef -> (worker, shard name)
    load = np.zeros(len(pool), dtype=int)
    new_rows, last_save, shards = 0, time.monotonic(), 0
    for ready in pool:  # the models are loaded (a worker that cannot load one says why): time the answering
        _get(ray, ready.__ray_ready__.remote(), "while loading the model")
    bar = tqdm(total=total, initial=manifest.counts()[0], unit="mol", desc="query (ray)", disable=not progress)
    t0 = time.perf_counter()

    def finish_one() -> None:
        nonlocal new_rows, last_save
        ready, _ = ray.wait(list(inflight), num_returns=1)
        worker, name = inflight.pop(ready[0])
        load[worker] -= 1
        record = _get(ray, ready[0], f"on shard {name}")
        manifest.add(name, record)
        new_rows += record["n"]
        bar.update(record["n"])
        if time.monotonic() - last_save > SAVE_EVERY_S:
            manifest.save()
            last_save = time.monotonic()

    try:
        for block in iter_blocks(files, block_rows, smiles_column):
            shards += 1
            if manifest.done(block.name):
                continue
            while len(inflight) >= QUEUED_PER_WORKER * len(pool):
                finish_one()
            worker = int(np.argmin(load))
            ref = pool[worker].run.remote(block.frame, str(manifest.folder / block.name))
            inflight[ref] = (worker, block.name)
            load[worker] += 1
        while inflight:
            finish_one()
        seconds = time.perf_counter() - t0
        n, n_ok, reasons = manifest.counts()
        manifest.complete = True
        manifest.totals = {"n": n, "n_ok": n_ok, "n_rejected": n - n_ok, "reasons": dict(reasons),
                           "shards": shards}
    finally:
        bar.close()
        manifest.save()  # what finished is kept, also when a worker failed or the job was interrupted
    peak = max((r["peak_rss_mib"] for r in manifest.shards.values()), default=0.0)
    return ScreenResult(manifest.folder, n, n_ok, reasons, shards, resumed, new_rows, seconds, len(pool), peak)


def _get(ray, ref, what: str):
    """What a worker returned, or its failure in one line (``what``: the work, for the message)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None) or err
        text = " ".join(str(cause).split()) or type(cause).__name__
        raise ScreeningError(f"{what}: {text[:400]}; rerun the same command to resume") from None
    except ray.exceptions.RayActorError as err:
        text = " ".join(str(err).split())[:300]
        raise ScreeningError(f"a Ray worker died {what} ({text}); rerun the same command to resume the "
                             "unfinished shards") from None
