"""What a run could not send to its tracking store, kept in order until the store answers again.

:class:`molwm.tracking.MLflowTracker` sends every metric, parameter, tag, artifact,
model and run ending through an :class:`Outbox`. While the store is reachable the
call goes straight through. When a call fails because the store is unreachable, the
call is kept (in memory and, one JSON line each, in a fallback file, with a copy of
any artifact or checkpoint file), training goes on, and the store is tried again at
most every ``retry_seconds``; the first call that gets through sends everything kept
first, in order. What is still kept when the run ends stays in the fallback file,
which :func:`replay` sends later (``molwm tracking replay FILE``). This module knows
nothing of MLflow (it imports only the error base): the tracker hands it a
``send(kind, payload)`` callable.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from molwm.atomic import write_text_atomic
from molwm.errors import MolwmError

Send = Callable[[str, dict], Any]
"""``send(kind, payload)``: one call to the store; what it returns (a model URI) is handed back."""
MAX_RETRY_SECONDS = 60.0
"""Longest wait between two tries of a store that is down."""


class StoreUnreachable(MolwmError, ConnectionError):
    """Raised by a ``send`` callable when the store did not answer (as opposed to refusing the call)."""


class OutboxError(MolwmError, ValueError):
    """A fallback file that is missing or is not one written by an :class:`Outbox`."""


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
        self.late: list[Any] = []  # what calls sent late returned (the URIs of models logged late)
        self.outages = 0
        self.down_since: float | None = None
        self.down_seconds = 0.0
        self._last_try = 0.0
        self._wait = retry_seconds

    @property
    def file(self) -> Path:
        """The fallback file: one JSON object per kept call, ``{"kind": ..., "payload": ...}``."""
        return self.folder / "outbox.jsonl"

    def call(self, kind: str, payload: dict, artifact: Path | None = None) -> Any:
        """Send ``payload`` now and return what ``send`` returned, or keep it if the store is down and
        return ``None`` (``artifact``: a file the payload names as ``path``, copied into the outbox folder
        when kept, since the original may be temporary or overwritten later)."""
        waiting = self.down_since is not None and time.monotonic() - self._last_try < self._wait
        if waiting or (self.kept and not self.flush()):
            self._keep(kind, payload, artifact)
            return None
        try:
            result = self.send(kind, payload)
        except StoreUnreachable:
            self._went_down()
            self._keep(kind, payload, artifact)
            return None
        self.sent[kind] += _count(kind, payload)
        return result

    def flush(self) -> bool:
        """Send everything kept, in order; True when nothing is left (the store answered)."""
        self._last_try = time.monotonic()
        while self.kept:
            kind, payload = self.kept[0]
            try:
                result = self.send(kind, payload)
            except StoreUnreachable:
                self._went_down()
                self._rewrite()
                return False
            self.kept.pop(0)
            if result is not None:
                self.late.append(result)
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
        line = (f"tracking store {where} was unreachable {self.outages} time(s): logged {_join(self.sent)} "
                f"(of which {_join(self.flushed)} sent late, once it answered again)")
        if self.late:
            line += f"; models logged late: {', '.join(map(str, self.late))}"
        if self.kept:
            line += (f"; NOT logged: {describe(self.kept)}, kept in {self.file} (`molwm tracking replay "
                     f"{self.file}` sends them)")
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
        write_text_atomic(self.file, "".join(json.dumps({"kind": k, "payload": p}) + "\n" for k, p in self.kept))


@dataclass
class Replay:
    """What :func:`replay` sent.

    Attributes:
        file: The fallback file (removed when everything was sent).
        sent: The calls that reached the store, in order.
        left: The calls the store still could not take (still in ``file``).
        model_uris: The URIs of the models it logged.
        error: Why the rest was not sent (the store's first line), or ``None``.
    """

    file: Path
    sent: list[tuple[str, dict]]
    left: list[tuple[str, dict]]
    model_uris: list[Any]
    error: str | None = None

    def summary(self) -> str:
        """What was sent and what was not, a line each."""
        lines = [f"sent: {describe(self.sent)}"] + [f"model: {uri}" for uri in self.model_uris]
        if self.left:
            lines.append(f"NOT sent: {describe(self.left)}, still in {self.file} ({self.error})")
        return "\n".join(lines)


def replay(path: str | Path, send: Send, where: str = "the store") -> Replay:
    """Send the calls kept in a fallback file (or the folder holding ``outbox.jsonl``) through ``send``, in
    order, until the store stops answering; what is left stays in the file (removed when nothing is).

    Raises:
        OutboxError: If the file is missing or is not an outbox file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "outbox.jsonl"
    calls, errors = read_outbox(path), []

    def send_noting(kind: str, payload: dict) -> Any:
        try:
            return send(kind, payload)
        except StoreUnreachable as err:
            errors.append(str(err))
            raise

    box = Outbox(send_noting, path.parent, retry_seconds=0.0)
    box.kept = list(calls)
    box.flush()
    return Replay(file=path, sent=calls[: len(calls) - len(box.kept)], left=box.kept, model_uris=box.late,
                  error=f"{where} is unreachable: {errors[-1]}" if box.kept else None)


def read_outbox(path: str | Path) -> list[tuple[str, dict]]:
    """The calls kept in a fallback file, in order.

    Raises:
        OutboxError: If the file is missing, unreadable, or a line is not a kept call.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise OutboxError(f"cannot read outbox file {path}: {getattr(err, 'strerror', None) or err}") from None
    calls = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise OutboxError(f"{path} line {number} is not JSON ({err.msg}): not an outbox file") from None
        if not (isinstance(item, dict) and item.get("kind") in LABELS and isinstance(item.get("payload"), dict)):
            raise OutboxError(f"{path} line {number} is not a kept tracker call (a kind among "
                              f"{', '.join(LABELS)} and a payload): not an outbox file")
        calls.append((item["kind"], item["payload"]))
    return calls


def describe(calls: list[tuple[str, dict]]) -> str:
    """``calls`` counted by kind, e.g. ``1 artifacts, 3 metric values``."""
    counts: Counter = Counter()
    for kind, payload in calls:
        counts[kind] += _count(kind, payload)
    return _join(counts)


def _join(counts: Counter) -> str:
    return ", ".join(f"{n} {_label(k)}" for k, n in sorted(counts.items())) or "nothing"


def _count(kind: str, payload: dict[str, Any]) -> int:
    return len(payload.get("metrics", payload.get("params", payload.get("tags", {})))) or 1


LABELS = {"metrics": "metric values", "params": "params", "tags": "tags", "artifact": "artifacts",
          "dict": "dict artifacts", "model": "models", "end": "run endings"}
"""Every kind of call an outbox keeps, and how a report names it."""


def _label(kind: str) -> str:
    return LABELS.get(kind, kind)
