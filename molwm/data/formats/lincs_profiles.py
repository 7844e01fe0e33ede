"""One LINCS Cell Painting plate as well profiles: SQ00015054 (A549, 48 h), as cytominer-eval ships it.

Raw layout (github.com/cytomining/cytominer-eval, ``cytominer_eval/example_data/compound/
SQ00015054_normalized_feature_select.csv.gz``), read as it is: 384 wells, 26 ``Metadata_`` columns
(``Metadata_Plate``, ``Metadata_Well``, ``Metadata_broad_sample`` (``DMSO`` for the 24 vehicle wells),
``Metadata_mmoles_per_liter`` (which is uM), ``Metadata_cell_id``, ``Metadata_moa``, ``Metadata_target``
...) then 454 CellProfiler features, read by :func:`molwm.data.formats.profiles.read_profiles`. 58
compounds x 6 doses (0.04-10 uM; two positive-control compounds also at 20 uM).

Structures: the compound id (first 13 characters of ``Metadata_broad_sample``) joins, through
:func:`molwm.data.formats.lincs.structure_table` (the batch-2 reader's join), to the Drug Repurposing Hub's
``repurposing_info.tsv`` of github.com/broadinstitute/lincs-cell-painting, then its older
``clue/repurposing_samples_*.txt`` releases, then the L1000 perturbagen table of dhimmel/lincs (14 of the
58 compounds are only in the older releases). A treated well whose compound has no structure in any of
them is a row of ``rejects``.
The class (``label``) is the plate's ``Metadata_moa``, else the Hub's MoA; the time is 48 h (LINCS Cell
Painting's single time point for these plates; the file has no time column).

Normalisation: the features are **already normalised and feature-selected upstream**
(``normalized_feature_select``: pycytominer robust z-scores against the plate's DMSO wells, then feature
selection over the whole LINCS batch) and are kept as published;
:func:`molwm.data.formats.profile_sets.dmso_normalise` does it again only when asked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from molwm.data.formats.common import FormatError, require_columns
from molwm.data.formats.lincs import CLUE_SAMPLES, PERTINFO, REPURPOSING, structure_table
from molwm.data.formats.profile_sets import (REJECT_COLUMNS, WELL_COLUMNS, ProfileWells, read_profile_compact,
                                             write_profile_compact)
from molwm.data.formats.profiles import read_profiles

PLATE = "SQ00015054"
PROFILE_FILE = f"cytominer-eval/cytominer_eval/example_data/compound/{PLATE}_normalized_feature_select.csv.gz"
TIME_H = 48.0
"""Hours after treatment of LINCS Cell Painting plates such as SQ00015054 (not a column of the file)."""
NEEDED = ("Metadata_Plate", "Metadata_Well", "Metadata_broad_sample", "Metadata_mmoles_per_liter",
          "Metadata_cell_id", "Metadata_moa", "Metadata_target")
EXTRA_COLUMNS = ("broad_sample", "target", "smiles_source")
COMPACT_STEM = "lincs_SQ00015054_profiles"
ROWS_PER_FILE = 384


def read_plate_profiles(files: dict[str, Path]) -> ProfileWells:
    """The plate's wells joined to structures, with their features as published.

    Args:
        files: Relative path (as on the card) -> local file: the profile file and the structure sources
            (``repurposing_info.tsv`` is needed; the ``clue`` releases and ``pertinfo.tsv.gz`` are used
            when present).

    Raises:
        FormatError: Naming the file (and line), when a file is missing or unreadable, lacks a column or
            holds text in a feature column.
    """
    for rel in (PROFILE_FILE, REPURPOSING):
        if rel not in files:
            raise FormatError(f"the SQ00015054 files lack {rel}")
    table = read_profiles(files[PROFILE_FILE])
    meta = table.meta.astype(object).where(table.meta.notna(), "")
    require_columns(meta, NEEDED, PROFILE_FILE)
    sources = {r: p for r, p in files.items() if r == REPURPOSING or r == PERTINFO or r.startswith(CLUE_SAMPLES)}
    structures = structure_table(sources).set_index("compound_id")
    sample = meta["Metadata_broad_sample"].astype(str).str.strip()
    control = sample.isin(["DMSO", "", "nan"])
    cid = sample.str[:13].where(~control, "DMSO")
    dose = pd.to_numeric(meta["Metadata_mmoles_per_liter"], errors="coerce")
    moa = meta["Metadata_moa"].astype(str).str.strip()
    hub_moa = cid.map(structures["moa"]).fillna("")
    wells = pd.DataFrame({
        "plate": meta["Metadata_Plate"].astype(str), "well": meta["Metadata_Well"].astype(str),
        "compound_id": cid, "smiles": cid.map(structures["smiles"]).where(~control, "CS(C)=O"),
        "dose_uM": dose.where(~control, 0.0), "time_h": TIME_H, "cell_line": meta["Metadata_cell_id"].astype(str),
        "label": moa.where(moa != "", hub_moa).where(~control, ""), "is_control": control.to_numpy(),
        "broad_sample": sample, "target": meta["Metadata_target"].astype(str),
        "smiles_source": cid.map(structures["smiles_source"]).where(~control, "DMSO")})
    rejects = []
    bad = np.zeros(len(wells), bool)
    for mask, why in ((~control & ~(dose > 0), "Metadata_mmoles_per_liter is not a positive number"),
                      (~control & wells["smiles"].isna(), "compound has no structure in any source")):
        for i in np.flatnonzero(mask.to_numpy() & ~bad):
            rejects.append((wells["plate"].iloc[i], wells["well"].iloc[i], PROFILE_FILE,
                            f"line {i + 2}: {cid.iloc[i]}: {why}"))
        bad |= mask.to_numpy()
    not_finite = ~np.isfinite(table.features).all(1) & ~bad
    for i in np.flatnonzero(not_finite):
        rejects.append((wells["plate"].iloc[i], wells["well"].iloc[i], PROFILE_FILE,
                        f"line {i + 2}: {int((~np.isfinite(table.features[i])).sum())} feature(s) are not finite"))
    keep = ~(bad | not_finite)
    return ProfileWells(wells[keep].reset_index(drop=True), table.features[keep], list(table.feature_names),
                        pd.DataFrame(rejects, columns=list(REJECT_COLUMNS)),
                        {PROFILE_FILE: files[PROFILE_FILE], **sources})


def write_compact(wells: ProfileWells, folder: str | Path) -> list[Path]:
    """The compact copy: ``lincs_SQ00015054_profiles_1.csv.gz`` (every kept well, float16 features)."""
    return write_profile_compact(wells, folder, COMPACT_STEM, ROWS_PER_FILE)


def read_compact(*paths: str | Path) -> ProfileWells:
    """The plate's wells from the compact file(s) :func:`write_compact` wrote."""
    parts = sorted(Path(p) for p in paths if Path(p).name.startswith(COMPACT_STEM + "_"))
    if not parts:
        raise FormatError(f"no {COMPACT_STEM}_<k>.csv.gz among {', '.join(str(p) for p in paths)}")
    return read_profile_compact(parts)


__all__ = ["PROFILE_FILE", "WELL_COLUMNS", "read_plate_profiles", "write_compact", "read_compact"]
