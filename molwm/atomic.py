"""Files appear whole or not at all: atomic writes, the full-disk error, and outputs that never overwrite inputs.

Every file molwm writes for a user (query, forecast and plan outputs, reports, split files,
configs, checkpoints, outbox files) is written to a temporary file in the same folder
(``.<stem>.partial-<pid><suffix>``, so format detection by suffix still works) and renamed
over the target once it is complete and synced. A run killed or stopped by a full disk
leaves at most that temporary file, never a target that reads as complete.

This module imports nothing from molwm but :mod:`molwm.errors`, so any layer can use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Callable, Iterator

from molwm.errors import MolwmError

FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""Write errors that mean "no room": a full disk, a quota, a file-size limit (``ulimit -f``)."""


class DiskFullError(MolwmError, OSError):
    """A write failed for lack of space; the message names the file and the size needed."""


class OutputError(MolwmError, ValueError):
    """An output path is unusable, e.g. it is one of the run's inputs."""


def human_size(n: int | float) -> str:
    """``1536`` -> ``1.5 KB``."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def is_disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` that means the disk (or a quota or file-size limit) is full.

    PyArrow reports such errors as ``OSError`` without an errno, with the system's text.
    """
    if not isinstance(err, OSError) or isinstance(err, DiskFullError):
        return False
    return err.errno in FULL_DISK_ERRNOS or "No space left on device" in str(err)


def disk_full(err: OSError, path: str | Path, needed: int | None, written: int = 0) -> DiskFullError:
    """The one-line error for a full disk while writing ``path``.

    Args:
        err: The ``OSError`` the write raised (its text is used where it is not "no space").
        path: What was being written (a file or a folder).
        needed: Bytes the whole write needs, when known.
        written: Bytes written before the failure, a lower bound when ``needed`` is unknown.
    """
    what = "No space left on device" if err.errno in (None, errno.ENOSPC) else (err.strerror or str(err))
    size = f"{human_size(needed)} needed" if needed else f"over {human_size(written)} needed"
    return DiskFullError(f"{what} while writing {path} ({size})")


def partial_path(path: str | Path) -> Path:
    """The temporary file ``path`` is written to before it is renamed into place (same folder, same suffix)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_path(path: str | Path, needed: int | None = None,
                before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, sync it and rename it over ``path``.

    When the block raises (or the process is interrupted), the temporary file is removed and
    ``path`` is left as it was; a full disk becomes a :class:`DiskFullError`.

    Args:
        path: The target; its folder is created.
        needed: The expected size in bytes, for the full-disk message (default: what was written).
        before_replace: Called once the temporary file is complete and synced, just before the
            rename (e.g. to keep the file being replaced under another name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        if not tmp.exists():  # the block wrote nothing (e.g. no rows): neither does this
            return
        with open(tmp, "rb+") as fh:  # the bytes reach the disk before the name points at them
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as err:
        written = _size(tmp)
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full(err, path, needed, written) from None
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode())


def refuse_overwriting_inputs(output: str | Path, *inputs: str | Path | None, option: str = "--output") -> None:
    """Refuse an output that is one of the inputs (same path after resolving links, or the same file).

    Call it before any input is read: writing the output would truncate the input under the reader.

    Raises:
        OutputError: Naming both paths.
    """
    out = Path(output)
    for given in inputs:
        if given is None:
            continue
        src = Path(given)
        same = out.resolve() == src.resolve()
        if not same and out.exists() and src.exists():
            same = os.path.samefile(out, src)  # hard links, bind mounts
        if same:
            raise OutputError(f"{option} {out} is the input file {src}: writing it would destroy the input; "
                              "choose another output path")
