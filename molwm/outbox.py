"""What a run could not send to its tracking store, kept in order until the store answers again.

:class:`molwm.tracking.MLflowTracker` sends every metric, parameter, tag, artifact
and run ending through an :class:`Outbox`. While the store is reachable the call
goes straight through. When a call fails because the store is unreachable, the
call is kept (in memory and, one JSON line each, in a fallback file, with a copy of
any artifact file), training goes on, and the store is tried again at most every
``retry_seconds``; the first call that gets through sends everything kept first,
in order. What is still kept when the run ends stays in the fallback file, which
:func:`molwm.tracking.replay_outbox` sends later. This module knows nothing of
MLflow (it imports only the error base): the tracker hands it a ``send(kind, payload)`` callable.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from molwm.errors import MolwmError

Send = Callable[[str, dict], None]
MAX_RETRY_SECONDS = 60.0
"""Longest wait between two tries of a store that is down."""


class StoreUnreachable(MolwmError, ConnectionError):
    """Raised by a ``send`` callable when the store did not answer (as opposed to refusing the call)."""


class Outbox:
    """Calls to a tracking store, sent now or kept for later.

    Args:
        send: ``send(kind, payload)`` performs one call; raises :class:`StoreUnreachable` when the store
            does not answer (any other error is the caller's and propagates).
        folder: Where the fallback file (``outbox.jsonl``) and copies of kept artifacts go.
        retry_seconds: While the store is down, try it again after this long, then twice as long after each
            failed try, up to :data:`MAX_RETRY_SECONDS` (calls in between are kept without waiting on the
            network, so a store that hangs rather than refuses slows the run by one timeout per try).
    """

    def __init__(self, send: Send, folder: Path, retry_seconds: float = 5.0):
        self.send, self.folder, self.retry_seconds = send, Path(folder), retry_seconds
        self.kept: list[tuple[str, dict]] = []
        self.sent: Counter = Counter()
        self.flushed: Counter = Counter()
        self.outages = 0
        self.down_since: float | None = None
        self.down_seconds = 0.0
        self._last_try = 0.0
        self._wait = retry_seconds

    @property
    def file(self) -> Path:
        """The fallback file: one JSON object per kept call, ``{"kind": ..., "payload": ...}``."""
        return self.folder / "outbox.jsonl"

    def call(self, kind: str, payload: dict, artifact: Path | None = None) -> None:
        """Send ``payload`` now, or keep it if the store is down (``artifact``: a file the payload names
        as ``path``, copied into the outbox folder when kept, since the original may be temporary)."""
        if self.down_since is not None and time.monotonic() - self._last_try < self._wait:
            self._keep(kind, payload, artifact)
            return
        if self.kept and not self.flush():
            self._keep(kind, payload, artifact)
            return
        try:
            self.send(kind, payload)
        except StoreUnreachable:
            self._went_down()
            self._keep(kind, payload, artifact)
            return
        self.sent[kind] += _count(kind, payload)

    def flush(self) -> bool:
        """Send everything kept, in order; True when nothing is left (the store answered)."""
        self._last_try = time.monotonic()
        while self.kept:
            kind, payload = self.kept[0]
            try:
                self.send(kind, payload)
            except StoreUnreachable:
                self._went_down()
                self._rewrite()
                return False
            self.kept.pop(0)
            self.sent[kind] += _count(kind, payload)
            self.flushed[kind] += _count(kind, payload)
        if self.down_since is not None:
            self.down_seconds += time.monotonic() - self.down_since
            self.down_since, self._wait = None, self.retry_seconds
        self._rewrite()
        return True

    def report(self, where: str) -> str | None:
        """One line on what reached ``where`` and what did not; ``None`` when the store never failed."""
        if not self.outages:
            return None
        sent = ", ".join(f"{n} {_label(k)}" for k, n in sorted(self.sent.items())) or "nothing"
        flushed = ", ".join(f"{n} {_label(k)}" for k, n in sorted(self.flushed.items())) or "nothing"
        line = (f"tracking store {where} was unreachable {self.outages} time(s): logged {sent} "
                f"(of which {flushed} sent late, once it answered again)")
        if self.kept:
            left = Counter()
            for kind, payload in self.kept:
                left[kind] += _count(kind, payload)
            line += (f"; NOT logged: {', '.join(f'{n} {_label(k)}' for k, n in sorted(left.items()))}, kept in "
                     f"{self.file} (molwm.tracking.replay_outbox sends them)")
        return line

    def _went_down(self) -> None:
        self._last_try = time.monotonic()
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.outages += 1
        else:
            self._wait = min(self._wait * 2, MAX_RETRY_SECONDS)

    def _keep(self, kind: str, payload: dict, artifact: Path | None) -> None:
        if artifact is not None:
            copy = self.folder / "artifacts" / f"{len(self.kept):05d}" / artifact.name  # same name in the run
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(artifact, copy)
            payload = {**payload, "path": str(copy)}
        self.kept.append((kind, payload))
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.file, "a") as fh:
            fh.write(json.dumps({"kind": kind, "payload": payload}) + "\n")

    def _rewrite(self) -> None:
        if not self.kept:
            self.file.unlink(missing_ok=True)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file.write_text("".join(json.dumps({"kind": k, "payload": p}) + "\n" for k, p in self.kept))


def read_outbox(path: str | Path) -> list[tuple[str, dict]]:
    """The calls kept in a fallback file, in order."""
    lines = Path(path).read_text().splitlines()
    return [(item["kind"], item["payload"]) for item in map(json.loads, lines) if item]


def _count(kind: str, payload: dict[str, Any]) -> int:
    return len(payload.get("metrics", payload.get("params", payload.get("tags", {})))) or 1


def _label(kind: str) -> str:
    return {"metrics": "metric values", "params": "params", "tags": "tags", "artifact": "artifacts",
            "dict": "dict artifacts", "end": "run endings"}.get(kind, kind)
