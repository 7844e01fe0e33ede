"""Inputs, blocks and the manifest of a sharded query.

A job reads one or many candidate files. Each file is streamed in blocks of ``block_rows`` rows
(:func:`molwm.data.candidates.iter_candidates`, so the blocks of a file are the same on every run); block
``j`` of input ``i`` becomes one output shard, ``part-<i>-<j>.parquet``, written atomically. The manifest
(``manifest.json`` in the output folder) records the job (model digest, question, inputs, block size) and
every complete shard with its counts. A rerun of the same job into the same folder skips the shards the
manifest lists as complete and whose file is there; a different job in that folder is refused.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

from molwm.atomic import write_text_atomic
from molwm.data.candidates import CANDIDATE_SUFFIXES, CandidateError, check_candidates_path, iter_candidates
from molwm.errors import MolwmError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
HEAD_BYTES = 1 << 20
"""Bytes at the start of each input hashed into the job's identity (with the file's size)."""


class ScreeningError(MolwmError, ValueError):
    """A sharded query or an index cannot run as asked (missing extra, another job in the folder, ...)."""


def resolve_inputs(spec: str | Path) -> list[Path]:
    """The candidate files of ``--input``: one file, every candidate file in a folder, or a glob pattern.

    Raises:
        FileNotFoundError: Nothing matches.
        CandidateError: A matched file has an unknown format.
    """
    text = str(spec)
    path = Path(text)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_candidates(p))
        if not files:
            raise FileNotFoundError(f"{path}: no candidate files ({', '.join(CANDIDATE_SUFFIXES)}, optionally "
                                    ".gz) in this folder")
    elif any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"no file matches {text}")
    else:
        raise FileNotFoundError(f"candidates file not found: {path}")
    return [check_candidates_path(p).resolve() for p in files]


def _is_candidates(path: Path) -> bool:
    try:
        check_candidates_path(path)
    except CandidateError:
        return False
    return True


def fingerprint(path: Path) -> dict:
    """What identifies an input file cheaply: its path, size and the SHA-256 of its first MiB."""
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(HEAD_BYTES)).hexdigest()
    return {"path": str(path), "size": path.stat().st_size, "head_sha256": head}


def shard_name(input_index: int, block: int) -> str:
    """``part-<input>-<block>.parquet``: sorting the names sorts the rows by input, then by position."""
    return f"part-{input_index:05d}-{block:06d}.parquet"


@dataclass
class Block:
    """One block of one input: the rows one worker answers and writes as one shard.

    Attributes:
        input_index: Which input file (position in the job's list).
        block: Which block of that file (0-based).
        name: Its shard's file name.
        frame: The candidates (:func:`molwm.data.candidates.candidate_frame` columns), in input order.
    """

    input_index: int
    block: int
    name: str
    frame: pd.DataFrame


def iter_blocks(inputs: list[Path], block_rows: int, smiles_column: str | None = None) -> Iterator[Block]:
    """Every block of every input, in order (the same blocks on every run with the same ``block_rows``)."""
    for i, path in enumerate(inputs):
        for j, frame in enumerate(iter_candidates(path, smiles_column=smiles_column, chunk_size=block_rows)):
            yield Block(i, j, shard_name(i, j), frame)


@dataclass
class Manifest:
    """The output folder's record of a job and its complete shards.

    Attributes:
        folder: The output folder.
        job: What identifies the job (model digest, question, inputs, block size); a rerun must match it.
        shards: Shard file name -> its record (``input``, ``block``, ``n``, ``n_ok``, ``reasons``,
            ``first_row``, ``last_row``, ``worker``, ``peak_rss_mib``, ``seconds``).
        complete: True once every block has its shard.
        totals: Counts over the job, written when it completes.
    """

    folder: Path
    job: dict
    shards: dict[str, dict] = field(default_factory=dict)
    complete: bool = False
    totals: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @classmethod
    def open(cls, folder: str | Path, job: dict) -> "Manifest":
        """The folder's manifest for ``job``: a new one, or the one a previous run of the same job left.

        Shards the manifest lists but whose file is gone are dropped (they are redone).

        Raises:
            ScreeningError: The folder holds another job's manifest, or files without a manifest.
        """
        folder = Path(folder)
        path = folder / MANIFEST
        if folder.exists() and not folder.is_dir():
            raise ScreeningError(f"--output {folder} is a file; the Ray engine writes a folder of Parquet shards")
        if not path.is_file():
            stray = [p.name for p in folder.glob("part-*.parquet")] if folder.is_dir() else []
            if stray:
                raise ScreeningError(f"--output {folder} holds shards ({stray[0]}, ...) but no {MANIFEST}; "
                                     "choose an empty folder")
            return cls(folder, job)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ScreeningError(f"{path}: unreadable manifest ({err}); remove the folder to start over") from None
        if saved.get("format") != MANIFEST_FORMAT or saved.get("job") != job:
            diff = sorted(k for k in set(job) | set(saved.get("job", {})) if job.get(k) != saved.get("job", {}).get(k))
            raise ScreeningError(f"--output {folder} holds another job (differs in {', '.join(diff) or 'format'}); "
                                 "rerun the same command to resume it, or choose another folder")
        shards = {name: rec for name, rec in saved.get("shards", {}).items() if (folder / name).is_file()}
        return cls(folder, job, shards, complete=bool(saved.get("complete")) and len(shards) == len(saved["shards"]),
                   totals=saved.get("totals", {}))

    def done(self, name: str) -> bool:
        """True if shard ``name`` is complete (listed here and on disk)."""
        return name in self.shards

    def add(self, name: str, record: dict) -> None:
        """Record a complete shard (call :meth:`save` to make it durable)."""
        self.shards[name] = record

    def counts(self) -> tuple[int, int, Counter]:
        """``(rows, ok rows, reject reason -> count)`` over the complete shards."""
        reasons: Counter = Counter()
        for rec in self.shards.values():
            reasons.update(rec["reasons"])
        return (sum(r["n"] for r in self.shards.values()), sum(r["n_ok"] for r in self.shards.values()), reasons)

    def save(self) -> Path:
        """Write the manifest atomically (a killed run leaves the previous version, never half a file)."""
        data = {"format": MANIFEST_FORMAT, "job": self.job, "complete": self.complete, "totals": self.totals,
                "shards": dict(sorted(self.shards.items()))}
        return write_text_atomic(self.path, json.dumps(data, indent=1))


def read_shards(folder: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Every shard of a complete job, concatenated in input order (for tests and small outputs).

    Raises:
        ScreeningError: The folder has no manifest, or its job is not complete.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ScreeningError(f"{folder}: no {MANIFEST}")
    saved = json.loads(path.read_text())
    if not saved.get("complete"):
        raise ScreeningError(f"{folder}: the job is not complete; rerun it to finish the missing shards")
    frames = [pd.read_parquet(folder / name, columns=columns) for name in sorted(saved["shards"])]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
