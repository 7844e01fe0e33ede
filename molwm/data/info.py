"""What molwm knows about a dataset: card, availability, prepared caches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd

from molwm.data.paths import cache_root
from molwm.data.registry import BrokenCard, DatasetCard, DatasetError, get_card, scan_cards
from molwm.data.sources import load_table, resolve_files


@dataclass
class DatasetStatus:
    """A card plus whether its data can be read here.

    Attributes:
        card: The card.
        available: True when the source package or file is present.
        detail: Version of the source package, the local path, or why it is missing.
        prepared: Manifests of complete caches under the cache root.
        preview: First rows of the table (only from :func:`show_dataset`).
        error: Why data that is present cannot be used (a checksum mismatch, an unreadable file; only
            from :func:`show_dataset`); ``molwm data show`` prints the card, then this line, and exits 2.
    """

    card: DatasetCard
    available: bool
    detail: str
    prepared: list[dict] = field(default_factory=list)
    preview: pd.DataFrame | None = None
    n_rows: int | None = None
    error: str | None = None


@dataclass
class DatasetListing:
    """What ``molwm data list`` shows.

    Attributes:
        statuses: One per readable card, sorted by name.
        broken: Card files that cannot be read (:class:`molwm.data.registry.BrokenCard`); they do not hide
            the others.
    """

    statuses: list[DatasetStatus]
    broken: list[BrokenCard]


def _availability(card: DatasetCard) -> tuple[bool, str]:
    src = card.source
    if src.kind == "package":
        try:
            return True, f"{src.distribution} {metadata.version(src.distribution)}"
        except metadata.PackageNotFoundError:
            return False, f"missing: {src.install or 'pip install ' + str(src.distribution)}"
    if src.kind == "local":
        path = Path(src.files[0].path).expanduser()
        if not path.is_absolute() and card.card_path:
            path = Path(card.card_path).parent / path
        return path.is_file(), str(path) if path.is_file() else f"missing file {path}"
    if src.kind == "mirror":
        from molwm.data.mirror import MIRROR_ENV, locate_mirror_file

        try:
            path = locate_mirror_file(card, src.files[0], download=False)
        except DatasetError:
            return False, f"not found locally: set {MIRROR_ENV} (or --data-dir), or prepare it online"
        return True, f"mirror {path.parents[len(Path(src.files[0].path).parts) - 1]}"
    return True, f"DeepChem load_{src.loader} (downloads when online)"


def prepared_caches(name: str, cache_dir: str | Path | None = None) -> list[dict]:
    """Manifests of the complete caches of dataset ``name``."""
    base = cache_root(cache_dir) / name
    if not base.is_dir():
        return []
    out = []
    for manifest in sorted(base.glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        data["path"] = str(manifest.parent)
        out.append(data)
    return out


def list_datasets(extra_dirs=(), cache_dir: str | Path | None = None) -> list[DatasetStatus]:
    """Every readable card with its availability and prepared caches (:func:`dataset_listing` also names
    the unreadable ones)."""
    return dataset_listing(extra_dirs, cache_dir).statuses


def dataset_listing(extra_dirs=(), cache_dir: str | Path | None = None) -> DatasetListing:
    """Every readable card with its availability and prepared caches, and every card file that cannot be read."""
    found = scan_cards(extra_dirs)
    statuses = []
    for card in found.cards:
        ok, detail = _availability(card)
        statuses.append(DatasetStatus(card, ok, detail, prepared_caches(card.name, cache_dir)))
    return DatasetListing(statuses=statuses, broken=found.broken)


def show_dataset(name: str, extra_dirs=(), cache_dir: str | Path | None = None, preview_rows: int = 5) -> DatasetStatus:
    """One card in full, with a preview of its rows when the source is available.

    The preview reads the whole table for small sets, and ``preview_rows``
    rows (checksum still verified) for large ones. A card whose file is not a
    table (``card.tabular`` False) gets its checksums verified and no preview.
    """
    card = get_card(name, extra_dirs)
    ok, detail = _availability(card)
    status = DatasetStatus(card, ok, detail, prepared_caches(card.name, cache_dir))
    if ok and not card.tabular:  # not a molecule table: locate and checksum only, no preview
        try:
            resolve_files(card)
        except DatasetError as err:
            status.available, status.error = False, str(err)
            return status
        status.detail = f"{detail}; checksums verified; {card.format}, read with {card.reader}"
        return status
    if ok and card.source.kind != "deepchem_molnet":
        big = (card.size or 0) > 100_000
        try:
            table = load_table(card, limit=preview_rows if big else None)
        except DatasetError as err:  # present but not what the card describes, or unreadable
            status.available, status.error = False, str(err)
            return status
        status.preview = table.frame.head(preview_rows)
        status.n_rows = None if big else len(table.frame)
    return status
