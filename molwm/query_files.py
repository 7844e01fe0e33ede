"""Query a model for a file (or list) of candidates, streaming in chunks; the CLI's ``molwm query``.

Memory stays flat in the number of candidates: each chunk is featurized,
encoded and appended to the output (CSV or Parquet) before the next is read;
only what the plots need (a sample of embeddings, the predicted values) is kept.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from featurizers.molecule import resolve_n_jobs
from molwm.atomic import atomic_path, refuse_overwriting_inputs
from molwm.data.candidates import (CandidateError, candidate_frame, check_candidates_path, count_candidates,
                                   iter_candidates)
from molwm.query import WHAT, MoleculeModel, embedding_frame, neighbour_frame

PLOT_SAMPLE = 5000
"""Candidates kept (uniform reservoir sample) for the embedding map."""


@dataclass
class QueryResult:
    """What a file query did.

    Attributes:
        output: The file written.
        n: Candidates read.
        n_ok: Featurized and answered.
        reasons: Reject reason -> count.
        seconds: Wall time of the query loop (read, featurize, encode, write).
        plots: PNG files written by ``plot``.
    """

    output: Path
    n: int
    n_ok: int
    reasons: Counter
    seconds: float
    plots: list[Path] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return self.n - self.n_ok

    def summary(self) -> str:
        """One line: counts, rate, where."""
        rate = self.n / self.seconds if self.seconds > 0 else float("nan")
        top = ", ".join(f"{r.split(':')[0]}: {c}" for r, c in self.reasons.most_common(3))
        rejected = f"{self.n_rejected:,} rejected" + (f" ({top})" if top else "")
        return (f"queried {self.n:,} molecules: {self.n_ok:,} ok, {rejected} in {self.seconds:.1f} s "
                f"({rate:,.0f} molecules/s) -> {self.output}")


class _Writer:
    """Appends frames to a CSV or Parquet file (the temporary file :func:`atomic_path` renames when complete)."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.kind = kind
        self._pq = None
        self._first = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == ".csv":
            frame.to_csv(self.path, mode="w" if self._first else "a", header=self._first, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # text columns as strings even when a chunk holds only missing values, so every chunk
            # has the first one's schema
            frame = frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object})
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table.cast(self._pq.schema))
        self._first = False

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()


def _output_kind(path: Path) -> str:
    kind = path.suffix.lower()
    if kind not in (".csv", ".parquet"):
        raise CandidateError(f"{path}: output must end in .csv or .parquet")
    return kind


def _chunks(smiles: Sequence[str] | None, input_path, smiles_column, chunk_size):
    if smiles is not None:
        for i in range(0, len(smiles), chunk_size):
            part = list(smiles[i : i + chunk_size])
            rows = range(i, i + len(part))
            yield candidate_frame(rows, rows, part)
    else:
        yield from iter_candidates(input_path, smiles_column=smiles_column, chunk_size=chunk_size)


def resolve_what(wm, what, error: type[Exception] = CandidateError) -> list[str]:
    """``--what`` as a list (default: ``predict`` when the model can, else ``embed``), refused in one line
    (``error``) when it names something unknown or asks a pretrained encoder for predictions."""
    what = list(what or (["predict"] if wm.can_predict else ["embed"]))
    unknown = [w for w in what if w not in WHAT]
    if unknown:
        raise error(f"unknown --what {', '.join(unknown)} (choose from {', '.join(WHAT)})")
    if "predict" in what and not wm.can_predict:
        raise error(f"{wm.source} is a pretrained encoder without property heads: use --what embed")
    return what


def run_query(model: MoleculeModel | str, output: str | Path, smiles: Sequence[str] | None = None,
              input_path: str | Path | None = None, smiles_column: str | None = None,
              what: Sequence[str] | None = None, reference=None, k: int = 5, plot: bool = False,
              chunk_size: int = 10_000, workers: int = 1, progress: bool = True) -> QueryResult:
    """Answer ``what`` (``embed``, ``predict``, ``neighbours``) for every candidate; one output row per input.

    Args:
        model: A loaded :class:`MoleculeModel` or anything :meth:`MoleculeModel.load` takes.
        output: ``.csv`` or ``.parquet``.
        smiles / input_path: The candidates: a list, or a .csv/.tsv/.smi/.sdf/.parquet file.
        smiles_column: For tables: the SMILES column (default: guessed).
        what: Default ``predict`` for a fine-tuned model, ``embed`` for a pretrained encoder.
        reference: For ``neighbours`` and the embedding map: a dataset name or a file
            (default: the dataset the model was fine-tuned on).
        k: Neighbours per candidate.
        plot: Also write ``<output>.embedding_map.png`` and one
            ``<output>.<property>.hist.png`` per predicted property.
        chunk_size: Candidates per chunk (memory is flat in the total).
        workers: Featurizer processes running ahead of the encoder (0: featurize in this process).

    The output is written beside its target and renamed when complete (:func:`molwm.atomic.atomic_path`):
    a killed or failed query leaves no file that reads as a complete answer.

    Raises:
        OutputError: ``output`` is the input file (refused before anything is read).
        DiskFullError: The disk filled up; the output is not written.
    """
    # before the model or a byte of the input is read: the writer would truncate the input under the reader
    refuse_overwriting_inputs(output, input_path)
    _output_kind(Path(output))
    wm = model if isinstance(model, MoleculeModel) else MoleculeModel.load(model)
    previous = wm.workers, torch.get_num_threads()
    wm.workers = workers
    if workers > 0:  # leave the featurizer processes their cores: oversubscribing is slower (docs/benchmarks.md)
        torch.set_num_threads(max(1, resolve_n_jobs(0) - workers))
    try:
        return _query(wm, output, smiles, input_path, smiles_column, what, reference, k, plot, chunk_size, progress)
    finally:
        wm.workers = previous[0]
        torch.set_num_threads(previous[1])


def _query(wm: MoleculeModel, output, smiles, input_path, smiles_column, what, reference, k, plot, chunk_size,
           progress) -> QueryResult:
    if (smiles is None) == (input_path is None):
        raise CandidateError("give either SMILES or an input file")
    output = Path(output)
    kind = _output_kind(output)
    if input_path is not None:
        check_candidates_path(input_path)
    what = resolve_what(wm, what)
    reference = reference or wm.dataset
    ref = None
    if "neighbours" in what or (plot and reference):
        if not reference:
            raise CandidateError("neighbours needs --reference (a dataset name or a file)")
        ref = wm.reference(reference, progress=progress)
    need_emb = "embed" in what or "neighbours" in what or plot
    t0 = time.perf_counter()  # the rate counts the query loop, not loading the model or the reference
    total = len(smiles) if smiles is not None else count_candidates(input_path)
    n = n_ok = 0
    reasons: Counter = Counter()
    rng = np.random.default_rng(0)
    sample: list[np.ndarray] = []
    seen_ok = 0
    predicted: list[np.ndarray] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="mol", desc="query", disable=not progress)
    # written beside the output and renamed when complete: a killed or full-disk run leaves no
    # file that reads as a complete answer
    try:
        with atomic_path(output) as tmp:
            writer = _Writer(tmp, kind)
            try:
                for chunk in _chunks(smiles, input_path, smiles_column, chunk_size):
                    frame, status, emb, preds = answer_chunk(wm, chunk, what, need_emb, ref, k)
                    writer.write(frame)
                    ok = np.array([s == "ok" for s in status])
                    n += len(chunk)
                    n_ok += int(ok.sum())
                    reasons.update(s for s in status if s != "ok")
                    if preds is not None:
                        predicted.append(preds.mean(0))
                    if plot:
                        seen_ok = _reservoir(sample, emb[ok], seen_ok, rng)
                    bar.update(len(chunk))
                    return_freed_memory()
            finally:
                writer.close()
    finally:
        bar.close()
    result = QueryResult(output, n, n_ok, reasons, time.perf_counter() - t0)
    if plot:
        result.plots = _plots(wm, output, sample, predicted, ref)
    return result


def answer_chunk(wm: MoleculeModel, chunk: pd.DataFrame, what: list[str], need_emb: bool, ref, k: int):
    """One chunk's output rows, its statuses, embeddings and predictions (None unless asked).

    Args:
        wm: The model.
        chunk: Candidates as :func:`molwm.data.candidates.candidate_frame` gives them.
        what: Among ``embed``, ``predict``, ``neighbours``.
        need_emb: Compute embeddings (for ``embed``, ``neighbours`` or plots).
        ref: The :class:`~molwm.query.ReferenceSet` (or index) for ``neighbours``.
        k: Neighbours per candidate.

    Returns:
        ``(frame, status, emb, preds)``: the output rows in input order (``row``, ``id``, ``smiles``,
        ``status``, then the answers), per-row status, ``[n, E]`` embeddings or None, predictions or None.
    """
    smiles = chunk["smiles"].tolist()
    emb, preds, status = wm.compute(smiles, embed=need_emb, predict="predict" in what)
    status = [pre or s for pre, s in zip(chunk["status"], status)]  # unreadable records keep their reason
    parts = [chunk[["row", "id", "smiles"]].assign(status=status)]
    if "predict" in what:
        parts.append(wm._prediction_frame(smiles, preds, status, emb).drop(columns=["smiles", "status"]))
    if "neighbours" in what:
        parts.append(neighbour_frame(smiles, emb, status, ref, k).drop(columns=["smiles", "status"]))
    if "embed" in what:
        parts.append(embedding_frame(smiles, emb, status).drop(columns=["smiles", "status"]))
    frame = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
    return frame, status, emb, (preds if "predict" in what else None)


def return_freed_memory() -> None:
    """Hand freed heap back to the OS after a chunk (glibc only).

    Batches of different sizes fragment glibc's heap: measured on 100,000
    candidates, resident memory grew ~45 MiB per 10,000-molecule chunk without
    this and stayed flat with it (docs/benchmarks.md).
    """
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def _reservoir(sample: list, rows: np.ndarray, seen: int, rng: np.random.Generator) -> int:
    """Keep a uniform sample of at most PLOT_SAMPLE rows across chunks (Algorithm R)."""
    for row in rows:
        if len(sample) < PLOT_SAMPLE:
            sample.append(row)
        else:
            j = rng.integers(0, seen + 1)
            if j < PLOT_SAMPLE:
                sample[j] = row
        seen += 1
    return seen


def _plots(wm: MoleculeModel, output: Path, sample: list, predicted: list, ref) -> list[Path]:
    from molwm.evaluation.plots import embedding_map, property_histogram

    written = []
    stem = output.with_suffix("")
    if sample:
        background = ref.unit if ref is not None and len(ref) else None
        if background is not None and len(background) > 20_000:
            background = background[np.random.default_rng(0).choice(len(background), 20_000, replace=False)]
        points = np.stack(sample)
        points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
        written.append(embedding_map(background, points, f"{stem}.embedding_map.png",
                                     f"candidates in {Path(str(wm.source)).name} embedding space",
                                     ref.name if ref is not None else "reference"))
    if predicted:
        values = np.concatenate(predicted)  # [N, T]
        for j, name in enumerate(wm.targets):
            train = wm.train_targets[:, j] if wm.train_targets is not None else None
            written.append(property_histogram(values[:, j], train, f"{stem}.{name}.hist.png", name,
                                              f"predicted {name}" + ("" if train is not None
                                                                     else " (no training labels in checkpoint)")))
    return written
