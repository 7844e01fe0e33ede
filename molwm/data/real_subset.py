"""Rebuild the compact real-cell files molwm ships (``datasets/real_cells/``) from the raw public files.

``molwm data compact <raw card> [--data-dir DIR] [--out datasets/real_cells]`` reads the raw card's files
(found in a mirror folder, checksum-verified), joins them with the card's reader, and writes the compact
files whose SHA-256 the compact card pins; rebuilding from the same raw files gives byte-identical files.
``--check`` compares instead of writing. A rejects report (wells that did not join, with their reasons) is
written beside the compact files. :data:`COMPACT_OF` names, for each raw card, its compact card, the
writer and the rejects report.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from molwm.atomic import write_text_atomic
from molwm.data.formats import cell_injury, lincs, lincs_profiles
from molwm.data.formats.common import FormatError
from molwm.data.registry import DatasetCard, DatasetError, builtin_card_dir, get_card


@dataclass
class CompactBuild:
    """What a writer produced: the files, the rejects report and a summary (``wells``, ``plates``, ``compounds``)."""

    files: list[Path]
    rejects: pd.DataFrame
    summary: dict


@dataclass(frozen=True)
class CompactSpec:
    """How one raw card becomes its compact copy.

    Attributes:
        compact: The compact card's name (it pins the files' SHA-256).
        write: ``write(raw card, data_dir, folder, progress)`` reads the raw files and writes the compact files.
        rejects: File name of the rejects report written beside them.
    """

    compact: str
    write: Callable[[DatasetCard, "str | Path | None", Path, bool], CompactBuild]
    rejects: str


def _lincs_batch2(card, data_dir, folder, progress) -> CompactBuild:
    wells = lincs.read_lincs_wells(lincs.card_files(card, data_dir), progress)
    return CompactBuild(lincs.write_compact(wells.wells, folder), wells.rejects, wells.summary())


def _cell_injury(card, data_dir, folder, progress) -> CompactBuild:
    files = lincs.card_files(card, data_dir)
    wells = cell_injury.read_cell_injury_wells(files)
    readouts, readout_rejects = cell_injury.read_cell_injury_readouts(files)
    rejects = pd.concat([wells.rejects, readout_rejects[~readout_rejects["file"].isin(cell_injury.PROFILE_FILES)]],
                        ignore_index=True)
    return CompactBuild(cell_injury.write_compact(wells, readouts, folder), rejects, wells.summary())


def _lincs_plate(card, data_dir, folder, progress) -> CompactBuild:
    wells = lincs_profiles.read_plate_profiles(lincs.card_files(card, data_dir))
    return CompactBuild(lincs_profiles.write_compact(wells, folder), wells.rejects, wells.summary())


COMPACT_OF = {
    "lincs_cellpainting_batch2": CompactSpec("lincs_cellpainting_batch2_compact", _lincs_batch2,
                                             "lincs_batch2_rejects.csv"),
    "cell_injury_profiles": CompactSpec("cell_injury_profiles_compact", _cell_injury, "cell_injury_rejects.csv"),
    "lincs_sq00015054_profiles": CompactSpec("lincs_sq00015054_profiles_compact", _lincs_plate,
                                             "lincs_SQ00015054_rejects.csv"),
}
"""Raw card -> its compact card, writer and rejects report."""


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
    if raw not in COMPACT_OF:
        raise DatasetError(f"no compact copy of '{raw}' is shipped; known: {', '.join(COMPACT_OF)}")
    spec = COMPACT_OF[raw]
    card, compact = get_card(raw), get_card(spec.compact)
    pinned = {Path(f.path).name: (f.sha256 or "") for f in compact.source.files}
    target = Path(out) if out else Path(compact.card_path).parent / "real_cells"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if check else target
        try:
            built = spec.write(card, data_dir, folder, progress)
        except FormatError as err:
            raise DatasetError(str(err)) from None
        digests = {str(target / p.name): hashlib.sha256(p.read_bytes()).hexdigest() for p in built.files}
    if not check:
        write_text_atomic(target / spec.rejects, built.rejects.to_csv(index=False, lineterminator="\n"))
    return CompactResult(digests, pinned, len(built.rejects), built.summary)


def default_out() -> Path:
    """Where the compact files live in a source checkout."""
    return builtin_card_dir() / "real_cells"
