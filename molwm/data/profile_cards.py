"""Load a real well-profile set from its card: the raw files (a ``mirror`` card) or the compact copy molwm ships.

``load_profile_set("cell_injury_profiles_compact")`` works from a clean clone;
``load_profile_set("cell_injury_profiles", data_dir="../shared/data")`` reads the raw public files. The card's
``reader`` names the function; only the readers listed in :data:`PROFILE_READERS` are called (a card is
data, never a way to run arbitrary code).
"""

from __future__ import annotations

from pathlib import Path

from molwm.data.formats import cell_injury, lincs_profiles
from molwm.data.formats.common import FormatError
from molwm.data.formats.lincs import card_files
from molwm.data.formats.profile_sets import ProfileWells
from molwm.data.registry import DatasetError, get_card

PROFILE_READERS = {
    "molwm.data.formats.cell_injury.read_cell_injury_wells": cell_injury.read_cell_injury_wells,
    "molwm.data.formats.cell_injury.read_compact": cell_injury.read_compact,
    "molwm.data.formats.lincs_profiles.read_plate_profiles": lincs_profiles.read_plate_profiles,
    "molwm.data.formats.lincs_profiles.read_compact": lincs_profiles.read_compact,
}
"""Card ``reader`` -> function. Raw readers take ``{path on the card: local path}``, compact ones the paths."""


def load_profile_set(dataset: str, data_dir: str | Path | None = None) -> ProfileWells:
    """The wells and features of a profile card (raw or compact), files located and checksum-verified.

    Raises:
        FormatError: Naming the card or file, when the card is unknown or not a profile set, or a file
            cannot be found, verified or read.
    """
    try:
        card = get_card(dataset)
    except DatasetError as err:
        raise FormatError(str(err)) from None
    reader = PROFILE_READERS.get(card.reader or "")
    if reader is None:
        raise FormatError(f"dataset '{card.name}' is not a profile set (its reader is {card.reader!r}; "
                          f"profile readers: {', '.join(PROFILE_READERS)})")
    files = card_files(card, data_dir)
    return reader(files) if card.source.kind == "mirror" else reader(*files.values())
