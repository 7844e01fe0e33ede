"""Models shipped inside the package, loaded by name: ``molwm:base`` anywhere a model URI is accepted.

Each shipped model is one checkpoint file in this folder with its SHA-256 pinned here; a file
whose digest differs (edited, truncated, replaced) is refused on load. ``docs/models/<name>.md``
is its model card (corpus, objective, config, steps, wall time, machine, commit, results, and the
command that reproduces it); ``benchmarks/ship_base.py`` writes the file from a pretraining
checkpoint and prints the digest to pin.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from molwm.errors import MolwmError

FOLDER = Path(__file__).resolve().parent
SCHEME = "molwm:"

SHIPPED: dict[str, tuple[str, str]] = {
    "base": ("base.pt", "760715ffb5730a26174c6832cfba74494f19c531a55eee381bb331d4aa057a22"),
}
"""Name -> (file in this folder, pinned SHA-256)."""


class ShippedModelError(MolwmError, ValueError):
    """An unknown shipped model name, or a shipped file that is missing or not the pinned one."""


def is_shipped_uri(uri: object) -> bool:
    """True for ``molwm:<name>``."""
    return isinstance(uri, str) and uri.startswith(SCHEME)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_path(uri: str) -> Path:
    """The verified local file of ``molwm:<name>``.

    Raises:
        ShippedModelError: Unknown name, missing file, or a digest that is not the pinned one.
    """
    name = uri[len(SCHEME):]
    if name not in SHIPPED:
        raise ShippedModelError(f"unknown shipped model {uri!r} (shipped: {', '.join(SCHEME + n for n in SHIPPED)})")
    file, pinned = SHIPPED[name]
    path = FOLDER / file
    if not path.is_file():
        raise ShippedModelError(f"{uri}: {path} is missing from this installation (reinstall molwm)")
    found = sha256(path)
    if found != pinned:
        raise ShippedModelError(f"{uri}: {path} has SHA-256 {found[:16]}..., not the pinned {pinned[:16]}... "
                                "(the file was changed; reinstall molwm)")
    return path
