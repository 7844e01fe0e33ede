"""Real well-profile sets: the readers on tiny files in the raw layouts, the compact copies through their cards,
and (where the raw public files are at hand) the byte-identical rebuild."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molwm.cli import main
from molwm.data.formats import cell_injury, lincs_profiles
from molwm.data.formats.common import FormatError
from molwm.data.formats.lincs import REPURPOSING
from molwm.data.formats.profile_sets import (ProfileWells, dmso_normalise, read_profile_compact,
                                             write_profile_compact)
from molwm.data.profile_cards import load_profile_set

REPO = Path(__file__).resolve().parents[3]


def _mirror() -> Path | None:
    """``$MOLWM_DATA_MIRROR`` (first folder) or ``../shared/data`` beside the repository, if it exists."""
    env = [p for p in os.environ.get("MOLWM_DATA_MIRROR", "").split(os.pathsep) if p]
    for folder in [Path(p) for p in env] + [REPO.parent / "shared" / "data"]:
        if (folder / "real-cells").is_dir():
            return folder
    return None


def _injury_rows(plate: str, rows: list[tuple]) -> pd.DataFrame:
    """Raw-layout rows: (well, compound, smiles, dose, time, class, control type, feature 1, feature 2)."""
    out = []
    for well, name, smiles, dose, t, label, ctl, f1, f2 in rows:
        out.append({"injury_code": 0, "injury_type": label, "Plate": plate, "Well": well,
                    "Characteristics [Cell Line]": "U2OS", "Experimental Condition [Treatment time (h)]": t,
                    "Experimental Condition [Experimental Batch]": 1, "Compound Name": name,
                    "Compound Class": "x", "Compound Concentration (microMolar)": dose, "Compound SMILES": smiles,
                    "Control Type": ctl, "Mahalanobis distance": 5.0, "Relative well cellcount": 0.9,
                    "Cells_A": f1, "Nuclei_B": f2})
    return pd.DataFrame(out)


@pytest.fixture
def injury_files(tmp_path):
    """The three fs_*_holdout files and the read-out file, a few wells each, in the upstream layout."""
    dmso = ("DMSO", "CS(=O)C", "", 24, "Control", "Negative")
    frames = {
        cell_injury.PROFILE_FILES[0]: _injury_rows("P1", [("B2", *dmso, 0.1, 0.2), ("B3", "Taxol", "CCO", 1.0, 24,
                                                          "Cytoskeletal", "Positive", 2.0, 1.0)]),
        cell_injury.PROFILE_FILES[1]: _injury_rows("P2", [("C2", "Nosmiles", "", 1.0, 48, "Kinase", "", 1.0, 1.0),
                                                          ("C3", "Phenol", "c1ccccc1O", 10.0, 48, "Redox", "", 3.0, 0.5)]),
        cell_injury.PROFILE_FILES[2]: _injury_rows("P1", [("B3", "Taxol", "CCO", 1.0, 24, "Cytoskeletal", "", 2.0, 1.0),
                                                          ("B4", *dmso, -0.1, 0.0)]),
        cell_injury.READOUTS_FILE: _injury_rows("P3", [("D1", *dmso, 0, 0)]).drop(columns=["Cells_A", "Nuclei_B"]),
    }
    files = {}
    for rel, frame in frames.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        files[rel] = path
    return files


@pytest.mark.unit
def test_cell_injury_reader_keeps_wells_as_published_and_reports_rejects(injury_files):
    wells = cell_injury.read_cell_injury_wells(injury_files)
    assert len(wells) == 4 and wells.features.shape == (4, 2) and wells.features.dtype == np.float32
    assert wells.feature_names == ["Cells_A", "Nuclei_B"]
    w = wells.wells.set_index(["plate", "well"])
    assert w.loc[("P1", "B2"), "is_control"] and w.loc[("P1", "B2"), "dose_uM"] == 0.0
    assert not w.loc[("P1", "B3"), "is_control"] and w.loc[("P1", "B3"), "control_type"] == "Positive"
    assert w.loc[("P2", "C3"), "label"] == "Redox" and w.loc[("P2", "C3"), "time_h"] == 48
    np.testing.assert_allclose(wells.features[list(w.index).index(("P2", "C3"))], [3.0, 0.5])  # not renormalised
    reasons = dict(zip(wells.rejects["well"], wells.rejects["reason"]))
    assert reasons["C2"] == "line 2: Nosmiles: no SMILES in the row"
    assert reasons["B3"] == "the same plate and well appear earlier"
    readouts, rejects = cell_injury.read_cell_injury_readouts(injury_files)
    assert len(readouts) == 5 and readouts["profiled"].sum() == 4 and len(rejects) == 2


@pytest.mark.unit
def test_cell_injury_bad_files_are_one_line_naming_them(injury_files, tmp_path):
    rel = cell_injury.PROFILE_FILES[1]
    frame = pd.read_csv(injury_files[rel], dtype=str)
    frame.loc[1, "Nuclei_B"] = "oops"
    frame.to_csv(injury_files[rel], index=False)
    with pytest.raises(FormatError) as err:
        cell_injury.read_cell_injury_wells(injury_files)
    assert str(err.value) == f"{rel} line 3: feature 'Nuclei_B' is 'oops', not a number"
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"Plate,Well\n" * 100)[:40])
    with pytest.raises(FormatError) as err:
        cell_injury.read_cell_injury_wells({**injury_files, cell_injury.PROFILE_FILES[0]: broken})
    assert "\n" not in str(err.value) and str(broken) in str(err.value)
    with pytest.raises(FormatError, match="lack .*fs_plate_holdout"):
        cell_injury.read_cell_injury_wells({})


@pytest.fixture
def plate_files(tmp_path):
    """A 4-well SQ00015054-like plate (DMSO, two joined compounds, one with no structure) and a Hub table."""
    meta = {"Metadata_Plate": ["SQ1"] * 4, "Metadata_Well": ["A01", "A02", "A03", "A04"],
            "Metadata_broad_sample": ["DMSO", "BRD-K00000001-001-01-1", "BRD-K00000002-001-01-1",
                                      "BRD-K99999999-001-01-1"],
            "Metadata_mmoles_per_liter": [0.0, 10.0, 1.1111, 3.3333], "Metadata_cell_id": ["A549"] * 4,
            "Metadata_moa": ["", "EGFR inhibitor", "", ""], "Metadata_target": ["", "EGFR", "", ""]}
    frame = pd.DataFrame({**meta, "Cells_A": [0.0, 1.5, -2.0, 0.3], "Nuclei_B": [0.1, 0.2, 0.3, 0.4]})
    profile = tmp_path / lincs_profiles.PROFILE_FILE
    profile.parent.mkdir(parents=True)
    frame.to_csv(profile, index=False)
    hub = tmp_path / REPURPOSING
    hub.parent.mkdir(parents=True)
    hub.write_text("broad_id\tsmiles\tmoa\nBRD-K00000001-001-05-3\tCCO\tEGFR inhibitor\n"
                   "BRD-K00000002-003-01-9\tc1ccccc1\tHDAC inhibitor\n")
    return {lincs_profiles.PROFILE_FILE: profile, REPURPOSING: hub}


@pytest.mark.unit
def test_lincs_plate_joins_structures_and_rejects_the_rest(plate_files):
    wells = lincs_profiles.read_plate_profiles(plate_files)
    assert list(wells.wells["compound_id"]) == ["DMSO", "BRD-K00000001", "BRD-K00000002"]
    assert list(wells.wells["smiles"]) == ["CS(C)=O", "CCO", "c1ccccc1"]
    assert list(wells.wells["label"]) == ["", "EGFR inhibitor", "HDAC inhibitor"]  # plate's MoA, else the Hub's
    assert list(wells.wells["time_h"]) == [48.0] * 3 and wells.features.shape == (3, 2)
    (reject,) = wells.rejects.itertuples()
    assert reject.well == "A04" and reject.reason == "line 5: BRD-K99999999: compound has no structure in any source"
    with pytest.raises(FormatError, match="lack .*repurposing_info.tsv"):
        lincs_profiles.read_plate_profiles({lincs_profiles.PROFILE_FILE: plate_files[lincs_profiles.PROFILE_FILE]})


@pytest.mark.unit
def test_compact_layout_round_trips_byte_identically(plate_files, tmp_path):
    wells = lincs_profiles.read_plate_profiles(plate_files)
    first = write_profile_compact(wells, tmp_path / "a", "demo", rows_per_file=2)
    again = write_profile_compact(wells, tmp_path / "b", "demo", rows_per_file=2)
    assert [p.name for p in first] == ["demo_1.csv.gz", "demo_2.csv.gz"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    back = read_profile_compact(first)
    assert back.wells["compound_id"].tolist() == wells.wells["compound_id"].tolist()
    written = [[float(f"{float(v):.4g}") for v in row] for row in wells.features.astype(np.float16)]
    np.testing.assert_array_equal(back.features, np.asarray(written, np.float32))  # float16, then %.4g
    assert back.wells["is_control"].tolist() == [True, False, False]


@pytest.mark.unit
def test_dmso_normalisation_is_explicit_and_robust():
    wells = pd.DataFrame({"plate": ["p"] * 4, "is_control": [True, True, True, False]})
    x = np.array([[1.0], [2.0], [3.0], [5.0]], np.float32)
    out = dmso_normalise(ProfileWells(wells, x, ["f"]))
    np.testing.assert_allclose(out.features[:, 0], (x[:, 0] - 2.0) / 1.4826, rtol=1e-6)
    with pytest.raises(FormatError, match="plate q has no DMSO well"):
        dmso_normalise(ProfileWells(wells.assign(plate=["p", "p", "p", "q"]), x, ["f"]))


@pytest.mark.integration
def test_compact_copies_load_through_their_cards_from_a_clean_clone():
    injury = load_profile_set("cell_injury_profiles_compact")
    assert injury.features.shape == (3199, 352) and injury.summary()["compounds"] == 112
    assert injury.summary()["dmso_wells"] == 1447 and set(injury.wells["time_h"]) == {24.0, 48.0}
    assert injury.wells.loc[~injury.wells["is_control"], "label"].nunique() == 14
    plate = load_profile_set("lincs_sq00015054_profiles_compact")
    assert plate.features.shape == (384, 454) and plate.summary()["compounds"] == 58
    readouts = cell_injury.read_compact_readouts(REPO / "datasets" / "real_cells" / cell_injury.COMPACT_READOUTS)
    assert len(readouts) == 16701 and readouts["profiled"].sum() == 3199
    folder = REPO / "datasets" / "real_cells"
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert sum(sizes.values()) <= 4.5e6 and max(sizes.values()) <= 2e6, sizes
    tracked = subprocess.run(["git", "ls-files", "datasets/real_cells"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode == 0:  # a clean clone holds exactly what git tracks
        for name in ("cell_injury_profiles_1.csv.gz", "cell_injury_readouts.csv.gz",
                     "lincs_SQ00015054_profiles_1.csv.gz", "LICENSE.md"):
            assert f"datasets/real_cells/{name}" in tracked.stdout


@pytest.mark.unit
def test_a_card_that_is_not_a_profile_set_is_one_line():
    with pytest.raises(FormatError, match="is not a profile set"):
        load_profile_set("lincs_cellpainting_batch2_compact")


@pytest.mark.cli
@pytest.mark.parametrize("raw", ["cell_injury_profiles", "lincs_sq00015054_profiles", "lincs_cellpainting_batch2"])
def test_compact_rebuild_is_byte_identical(raw, capsys):
    mirror = _mirror()
    if mirror is None:
        pytest.skip("no raw public files: set MOLWM_DATA_MIRROR or put them in ../shared/data/real-cells")
    assert main(["data", "compact", raw, "--data-dir", str(mirror), "--check", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "matches the card" in out and "DIFFERS" not in out
