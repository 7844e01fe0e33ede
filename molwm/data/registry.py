"""Dataset cards: YAML files that say where a dataset lives and what it means.

A card is data about data (name, source, files with SHA-256, columns, task,
license, citation). Cards are looked up, in order, in the folders named by
``MOLWM_DATASETS`` (``os.pathsep``-separated), folders passed by the caller,
and the cards shipped with molwm (the repository's ``datasets/``). A card
file path can be used wherever a name is accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from molwm.config import ConfigError, from_dict, read_yaml
from molwm.errors import MolwmError

SourceKind = Literal["package", "local", "deepchem_molnet", "mirror"]
TableFormat = Literal["csv", "tsv", "sdf", "parquet", "smi", "hdf5", "bundle"]
TaskType = Literal[
    "regression", "classification", "multitask_regression", "multitask_classification", "unlabelled",
    "time_course", "profiles",
]
# formats that are not molecule tables: molwm locates and checksums them, and `reader` reads them
# (``bundle``: several files in their own layouts, e.g. plate maps and per-plate counts)
NON_TABULAR_FORMATS = ("hdf5", "bundle")


class DatasetError(MolwmError, ValueError):
    """A dataset card or its source is missing, malformed or does not match."""


MAX_CARD_BYTES = 1 << 20
"""Largest dataset card read (1 MB; the built-in ones are under 2 KB)."""


@dataclass
class FileRef:
    """One file of a source.

    Attributes:
        path: Inside the distribution (``package``), relative to the card's
            folder or absolute (``local``), or inside ``data_dir``
            (``deepchem_molnet``).
        sha256: Expected SHA-256 of the file; checked on every load when set.
        tag: Optional label stored in the ``source_file`` column when several
            files are merged (e.g. ``train`` / ``test``).
    """

    path: str
    sha256: str | None = None
    tag: str | None = None


@dataclass
class SourceSpec:
    """Where the data comes from.

    Attributes:
        kind: ``package`` (a file inside an installed Python distribution),
            ``local`` (a file on disk), ``deepchem_molnet`` (MoleculeNet via
            DeepChem's loaders, downloading into ``data_dir`` when online) or
            ``mirror`` (public files copied from upstream repositories: a local
            mirror folder, the cache, or a download; :mod:`molwm.data.mirror`).
        distribution: The installed distribution holding the files (``package``).
        install: How to install it, shown when it is missing.
        files: The files; several are concatenated in order.
        loader: DeepChem loader name without ``load_`` (``deepchem_molnet``), e.g. ``delaney``.
        data_dir: Where DeepChem keeps raw files; default ``$MOLWM_MOLNET_DIR``
            or ``~/.cache/molwm/molnet``.
        root: ``mirror``: the folder inside a mirror that holds the files (e.g. ``real-cells``).
        upstream: ``mirror``: first path component -> address of that repository's files at a
            pinned commit (where a file is downloaded from when it is not found locally).
        commits: ``mirror``: first path component -> the upstream repository and commit it was copied at.
    """

    kind: SourceKind
    distribution: str | None = None
    install: str | None = None
    files: list[FileRef] = field(default_factory=list)
    loader: str | None = None
    data_dir: str | None = None
    root: str | None = None
    upstream: dict[str, str] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.kind == "package" and not self.distribution:
            raise ConfigError("source.distribution is required for kind 'package'")
        if self.kind in ("package", "local", "mirror") and not self.files:
            raise ConfigError(f"source.files must list at least one file for kind '{self.kind}'")
        if self.kind == "deepchem_molnet" and not self.loader:
            raise ConfigError("source.loader is required for kind 'deepchem_molnet' (e.g. delaney, bbbp, tox21)")


@dataclass
class Columns:
    """How the table's columns map to molwm's.

    Attributes:
        smiles: Column with SMILES. For SDF, a property name, or null to write
            SMILES from the molecule itself.
        targets: Label columns (empty for unlabelled sets).
        id: Optional identifier column kept alongside.
        label_map: Maps raw label strings to numbers (e.g. ``BBB+: 1``).
        rename: New names for target columns (old -> new).
    """

    smiles: str | None = "smiles"
    targets: list[str] = field(default_factory=list)
    id: str | None = None
    label_map: dict[str, float] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)

    @property
    def target_names(self) -> list[str]:
        """Target column names after renaming."""
        return [self.rename.get(t, t) for t in self.targets]


@dataclass
class TaskSpec:
    """What to predict and how to score it."""

    type: TaskType = "unlabelled"
    metric: str | None = None
    units: str | None = None


@dataclass
class DatasetCard:
    """One dataset, as described by ``datasets/<name>.yaml``.

    A card whose ``format`` is not a table (``hdf5``) names in ``reader`` the
    function that reads its file; molwm then only locates and checksums it.
    """

    name: str
    source: SourceSpec
    description: str = ""
    format: TableFormat | None = None
    columns: Columns = field(default_factory=Columns)
    task: TaskSpec = field(default_factory=TaskSpec)
    license: str = "unknown"
    citation: str = ""
    url: str | None = None
    size: int | None = None
    reader: str | None = None
    card_path: str | None = None

    @property
    def tabular(self) -> bool:
        """False for a card whose file is not a molecule table (see ``reader``)."""
        return self.format not in NON_TABULAR_FORMATS

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"name '{self.name}' must be non-empty without slashes or spaces")
        if not self.tabular and not self.reader:
            raise ConfigError(f"format '{self.format}' is not a table; set 'reader:' to the function "
                              "that reads it")
        needs_targets = self.tabular and self.source.kind != "deepchem_molnet"
        if self.task.type != "unlabelled" and not self.columns.targets and needs_targets:
            raise ConfigError(f"task.type is '{self.task.type}' but columns.targets is empty")

    def table_format(self, path: str) -> str:
        """The declared format, or the one implied by the file name."""
        if not self.tabular:
            raise DatasetError(f"dataset '{self.name}': {path} is {self.format}, not a table of molecules; "
                               f"read it with {self.reader}")
        if self.format:
            return self.format
        name = path.lower().removesuffix(".gz")
        for ext in ("csv", "tsv", "sdf", "parquet", "smi"):
            if name.endswith("." + ext):
                return ext
        raise DatasetError(f"dataset '{self.name}': cannot tell the format of '{path}'; set 'format:' in the card")


def builtin_card_dir() -> Path:
    """Cards shipped with molwm: inside the wheel, or the source checkout's ``datasets/``."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_datasets"
    return packaged if packaged.is_dir() else here.parent / "datasets"


def card_dirs(extra_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """Folders searched for cards, highest priority first.

    Raises:
        DatasetError: If a folder in ``extra_dirs`` (named by the user, e.g. ``--cards``) is not a folder.
    """
    missing = [str(p) for p in extra_dirs if not Path(p).is_dir()]
    if missing:
        raise DatasetError(f"card folder not found: {', '.join(missing)}")
    env = [p for p in os.environ.get("MOLWM_DATASETS", "").split(os.pathsep) if p]
    dirs = [Path(p) for p in env] + [Path(p) for p in extra_dirs] + [builtin_card_dir()]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def load_card(path: str | Path) -> DatasetCard:
    """Read and validate one card file; errors name the file and the key."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > MAX_CARD_BYTES:
        raise DatasetError(f"{path}: {path.stat().st_size:,} bytes is too large for a dataset card "
                           f"(at most {MAX_CARD_BYTES:,}); a card describes data, it does not hold it")
    try:
        data = read_yaml(path)
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not a text file (byte {err.start} is not UTF-8)") from None
    try:
        card = from_dict(DatasetCard, data)
    except ConfigError as err:
        raise DatasetError(f"{path}: {err}") from None
    card.card_path = str(path.resolve())
    return card


@dataclass
class BrokenCard:
    """A card file that cannot be read: its path and the one-line reason."""

    path: str
    error: str


@dataclass
class CardScan:
    """Every card file in the card folders: the readable cards (one per name, the first folder wins, sorted
    by name) and the files that cannot be read, so that one bad card does not hide the others."""

    cards: list[DatasetCard]
    broken: list[BrokenCard]


def scan_cards(extra_dirs: Sequence[str | Path] = ()) -> CardScan:
    """Read every card file in :func:`card_dirs`; unreadable ones are listed, not raised."""
    found: dict[str, DatasetCard] = {}
    broken = []
    for d in card_dirs(extra_dirs):
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            try:
                card = load_card(path)
            except (MolwmError, OSError) as err:  # a DatasetError, not valid YAML (ConfigError), unreadable
                broken.append(BrokenCard(path=str(path), error=" ".join(str(err).split())))
                continue
            found.setdefault(card.name, card)
    return CardScan(cards=[found[k] for k in sorted(found)], broken=broken)


def list_cards(extra_dirs: Sequence[str | Path] = ()) -> list[DatasetCard]:
    """Every card found, one per name (the first folder wins), sorted by name.

    Raises:
        DatasetError: The first card file that cannot be read (:func:`scan_cards` lists them instead).
    """
    found = scan_cards(extra_dirs)
    if found.broken:
        raise DatasetError(found.broken[0].error)
    return found.cards


def get_card(name_or_path: str | Path, extra_dirs: Sequence[str | Path] = ()) -> DatasetCard:
    """Find a card by name, or read it from a path ending in ``.yaml``/``.yml``.

    Raises:
        DatasetError: If no card has that name; lists the known names.
    """
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        return load_card(text)
    for d in card_dirs(extra_dirs):
        for ext in (".yaml", ".yml"):
            path = d / f"{text}{ext}"
            if path.is_file():
                card = load_card(path)
                if card.name == text:
                    return card
    found = scan_cards(extra_dirs)  # a card whose file is named otherwise; a broken card hides no other
    for card in found.cards:
        if card.name == text:
            return card
    known = ", ".join(c.name for c in found.cards) or "none"
    unread = (f" ({len(found.broken)} card file(s) could not be read, such as {found.broken[0].path}; "
              "molwm data list says why)") if found.broken else ""
    raise DatasetError(f"unknown dataset '{text}'. Known datasets: {known}{unread}. Add one with a card "
                       "(see README).")
