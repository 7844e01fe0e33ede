"""Errors and reject records shared by every featurizer.

A featurizer never lets a library traceback (RDKit, PIL, ...) escape for a bad
input: a single-item call raises :class:`FeaturizationError` carrying a reason
a chemist can read, and a batch call turns every bad input into a
:class:`Reject` so that nothing is silently dropped.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


class FeaturizationError(ValueError):
    """Raised when one input cannot be featurized.

    Args:
        reason: Human-readable explanation, e.g. ``"valence error: explicit
            valence for atom #1 N, 4, is greater than permitted"``.
        code: Short stable category used for counting, e.g. ``"valence"``.
    """

    def __init__(self, reason: str, code: str = "invalid"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Reject:
    """One input that could not be featurized.

    Attributes:
        index: Position of the input in the sequence given to the batch call
            (or its row in the source file, when the caller passes an offset).
        smiles: The input as received (converted with ``str`` if it was not a
            string).
        reason: Human-readable explanation.
        code: Short stable category (``empty``, ``too_long``, ``reaction``,
            ``dummy_atom``, ``parse_error``, ``valence``, ``kekulize``,
            ``not_string``, ``no_atoms``, ``sanitize``).
    """

    index: int
    smiles: str
    reason: str
    code: str


def count_reject_codes(rejects: Iterable[Reject]) -> dict[str, int]:
    """Count rejects by their ``code``, sorted by code name."""
    return dict(sorted(Counter(r.code for r in rejects).items()))


def write_rejects(rejects: Iterable[Reject], path: str | Path) -> Path:
    """Write a rejects report as CSV with columns ``index, smiles, code, reason``.

    Args:
        rejects: The rejects to write, in any order (written sorted by index).
        path: Destination file; parent folders are created.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "smiles", "code", "reason"])
        for r in sorted(rejects, key=lambda r: r.index):
            writer.writerow([r.index, r.smiles, r.code, r.reason])
    return path


def read_rejects(path: str | Path) -> list[Reject]:
    """Read a rejects report written by :func:`write_rejects`."""
    with Path(path).open(newline="") as fh:
        return [
            Reject(int(row["index"]), row["smiles"], row["reason"], row["code"])
            for row in csv.DictReader(fh)
        ]
