"""Files of ``mirror`` cards: public data copied from upstream repositories, found locally or fetched.

A ``mirror`` card lists its files by their path inside a mirror folder (``source.root``, e.g.
``real-cells``, then ``<upstream>/<path in that repository>``), each with its SHA-256, and maps each
upstream folder to the address of the repository's files at a pinned commit (``source.upstream``).
A file is found, in order:

1. in a local mirror folder: ``--data-dir`` (passed as ``data_dir``), then each folder of
   ``$MOLWM_DATA_MIRROR`` (``os.pathsep``-separated), as ``<folder>/<root>/<path>`` or ``<folder>/<path>``;
2. in molwm's cache (``<cache>/mirror/<root>/<path>``), where a download went;
3. downloaded from ``upstream`` into the cache when the machine is online.

Every file is checked against its SHA-256 wherever it was found; a download that does not match is
deleted. Standard library and :mod:`molwm.atomic` only, like :mod:`molwm.data.paths`.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from molwm.data.paths import cache_root

if TYPE_CHECKING:  # pragma: no cover
    from molwm.data.registry import DatasetCard, FileRef

MIRROR_ENV = "MOLWM_DATA_MIRROR"
"""Environment variable naming local mirror folders (``os.pathsep``-separated)."""
DOWNLOAD_TIMEOUT_S = 30.0


def mirror_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Local mirror folders, highest priority first: ``data_dir``, then ``$MOLWM_DATA_MIRROR``."""
    env = [p for p in os.environ.get(MIRROR_ENV, "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in ([data_dir] if data_dir else []) + env]


def _safe_relative(card: "DatasetCard", ref: "FileRef") -> Path:
    from molwm.data.registry import DatasetError

    rel = Path(ref.path)
    if rel.is_absolute() or ".." in rel.parts:
        raise DatasetError(f"dataset '{card.name}': mirror file '{ref.path}' must be a relative path inside "
                           "the mirror folder")
    return rel


def cached_path(card: "DatasetCard", ref: "FileRef", cache_dir: str | Path | None = None) -> Path:
    """Where a downloaded copy of ``ref`` is kept."""
    root = card.source.root or card.name
    return cache_root(cache_dir) / "mirror" / root / _safe_relative(card, ref)


def upstream_url(card: "DatasetCard", ref: "FileRef") -> str | None:
    """The address ``ref`` is downloaded from (``source.upstream`` of its first path component)."""
    rel = _safe_relative(card, ref)
    base = (card.source.upstream or {}).get(rel.parts[0])
    if not base:
        return None
    return base.rstrip("/") + "/" + "/".join(rel.parts[1:])


def locate_mirror_file(card: "DatasetCard", ref: "FileRef", data_dir: str | Path | None = None,
                       cache_dir: str | Path | None = None, download: bool = True) -> Path:
    """A local copy of a ``mirror`` card's file (see the module docstring for the search order).

    Its checksum is checked by the caller (:func:`molwm.data.sources.resolve_files`), except for a
    download, checked here before it is kept.

    Raises:
        DatasetError: Naming the file and every place looked in, when no copy is found or fetched.
    """
    from molwm.data.registry import DatasetError

    rel = _safe_relative(card, ref)
    root = card.source.root
    looked = []
    for folder in mirror_dirs(data_dir):
        for candidate in ([folder / root / rel] if root else []) + [folder / rel]:
            looked.append(str(candidate))
            if candidate.is_file():
                return candidate
    cached = cached_path(card, ref, cache_dir)
    looked.append(str(cached))
    if cached.is_file():
        return cached
    url = upstream_url(card, ref)
    if download and url:
        try:
            return _download(url, cached, ref.sha256)
        except (OSError, urllib.error.URLError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise DatasetError(
                f"dataset '{card.name}': {rel} is not in a local mirror ({MIRROR_ENV} or --data-dir) nor in "
                f"the cache, and downloading {url} failed ({reason}); looked at: {', '.join(looked)}") from None
    raise DatasetError(
        f"dataset '{card.name}': file {rel} not found; point {MIRROR_ENV} (or --data-dir) at a folder holding "
        f"{(root + '/') if root else ''}{rel}; looked at: {', '.join(looked)}")


def _download(url: str, dest: Path, sha256: str | None) -> Path:
    """Fetch ``url`` to ``dest`` atomically (:func:`molwm.atomic.atomic_path`), checking ``sha256`` before the
    rename: a download that does not match is never kept."""
    import hashlib

    from molwm.atomic import atomic_path

    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
        if sha256 and h.hexdigest() != sha256.lower():
            raise ValueError(f"the download's sha256 {h.hexdigest()} is not the card's {sha256}")
    return dest
