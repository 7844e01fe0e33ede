"""Rebuild the compact real-cell files molwm ships (``datasets/real_cells/``) from the raw public files.

``molwm data compact lincs_cellpainting_batch2 [--data-dir DIR] [--out datasets/real_cells]`` reads the
raw card's files (found in a mirror folder, checksum-verified), joins and normalises them with the
card's reader, and writes the compact files whose SHA-256 the compact card pins; rebuilding from the same
raw files gives byte-identical files. ``--check`` compares instead of writing. A rejects report (wells
that did not join, with their reasons) is written beside the compact files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from molwm.data.registry import DatasetError, builtin_card_dir, get_card

COMPACT_OF = {"lincs_cellpainting_batch2": "lincs_cellpainting_batch2_compact"}
"""Raw card -> the compact card rebuilt from it."""


@dataclass
class CompactResult:
    """What a rebuild wrote (or compared): files with their SHA-256, and whether each matches the card."""

    files: dict[str, str]
    pinned: dict[str, str]
    rejects: int
    summary: dict

    @property
    def matches(self) -> bool:
        return all(self.pinned.get(Path(p).name) == d for p, d in self.files.items())


def build_compact(raw: str, out: str | Path | None = None, data_dir: str | Path | None = None,
                  check: bool = False, progress: bool = True) -> CompactResult:
    """Rebuild (or with ``check``, rebuild into a temporary folder and compare) the compact files of ``raw``.

    Raises:
        DatasetError: If ``raw`` has no compact card, or its files cannot be found or verified.
    """
    import tempfile

    from molwm.data.formats.common import FormatError as CourseError
    from molwm.data.formats.lincs import read_lincs_wells, write_compact

    if raw not in COMPACT_OF:
        raise DatasetError(f"no compact copy of '{raw}' is shipped; known: {', '.join(COMPACT_OF)}")
    card, compact = get_card(raw), get_card(COMPACT_OF[raw])
    pinned = {Path(f.path).name: (f.sha256 or "") for f in compact.source.files}
    from molwm.data.formats.lincs import card_files

    try:
        wells = read_lincs_wells(card_files(card, data_dir), progress)
    except CourseError as err:
        raise DatasetError(str(err)) from None
    target = Path(out) if out else Path(compact.card_path).parent / "real_cells"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if check else target
        written = write_compact(wells.wells, folder)
        digests = {str(target / p.name): hashlib.sha256(p.read_bytes()).hexdigest() for p in written}
    if not check:
        from molwm.atomic import write_text_atomic

        write_text_atomic(target / "lincs_batch2_rejects.csv", wells.rejects.to_csv(index=False, lineterminator="\n"))
    return CompactResult(digests, pinned, len(wells.rejects), wells.summary())


def default_out() -> Path:
    """Where the compact files live in a source checkout."""
    return builtin_card_dir() / "real_cells"
