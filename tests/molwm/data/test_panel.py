"""Assay panel: MoleculeACE's 30 targets pivoted to compounds x assays, split and cliff kept per cell."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molwm.data.panel import SPLIT_NONE, SPLIT_TEST, SPLIT_TRAIN, AssayPanel, load_moleculeace_panel
from molwm.data.registry import DatasetError, get_card
from molwm.data.sources import resolve_files

pytestmark = pytest.mark.unit

HEADER = "smiles,exp_mean [nM],y,cliff_mol,split\n"
# Two targets sharing compounds. Target A: ethanol twice (train + test: the cell must become test),
# phenol written two ways (same canonical SMILES), one unparsable SMILES, one missing value.
TARGET_A = (HEADER
            + "CCO,100.0,-2.0,0,train\n"
            + "c1ccccc1O,10.0,-1.0,1,train\n"
            + "not_a_smiles,5.0,-0.699,0,test\n"
            + "OCC,1000.0,-3.0,1,test\n"
            + "CC(=O)O,1.0,0.0,0,test\n"
            + "Oc1ccccc1,,,0,train\n")
# Target B: ethanol is test here, benzene is only measured in B; one row without SMILES.
TARGET_B = (HEADER
            + "OCC,50.0,-1.69897,1,test\n"
            + "c1ccccc1,20.0,-1.30103,0,train\n"
            + "CC(=O)O,2.0,-0.30103,0,train\n"
            + ",3.0,-0.47712,0,train\n")


@pytest.fixture
def ace_card(tmp_path) -> Path:
    """A local card in MoleculeACE's layout: two target files with checksums and tags."""
    files = {"T1_Ki": TARGET_A, "T2_EC50": TARGET_B}
    lines = ["name: mini_ace", "source:", "  kind: local", "  files:"]
    for tag, text in files.items():
        path = tmp_path / f"{tag}.csv"
        path.write_text(text)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [f"    - path: ../{tag}.csv", f"      sha256: {digest}", f"      tag: {tag}"]
    lines += ["format: csv", "columns:", "  smiles: smiles", "  targets: [y]",
              "task:", "  type: multitask_regression", "  metric: rmse", "license: CC0-1.0",
              "citation: made up for tests"]
    card = tmp_path / "cards" / "mini_ace.yaml"
    card.parent.mkdir()
    card.write_text("\n".join(lines) + "\n")
    return card


def _cell(panel: AssayPanel, smiles: str, assay: str) -> tuple[int, int]:
    return panel.smiles.index(smiles), panel.assays.index(assay)


def test_fixture_pivot_values_split_and_cliff_per_cell(ace_card):
    panel = load_moleculeace_panel(ace_card, units="y")
    assert panel.assays == ["T1_Ki", "T2_EC50"]
    assert panel.smiles == sorted(["CCO", "Oc1ccccc1", "CC(=O)O", "c1ccccc1"])
    n, a = panel.shape
    assert panel.values.shape == panel.observed.shape == panel.split.shape == panel.cliff.shape == (n, a)
    assert panel.values.dtype == np.float32 and panel.split.dtype == np.uint8
    assert np.array_equal(panel.observed, ~np.isnan(panel.values))
    assert np.array_equal(panel.observed, panel.split != SPLIT_NONE)
    assert panel.observed.sum() == 6

    i, j = _cell(panel, "CCO", "T1_Ki")  # two repeats averaged; one was test, so the cell is test
    assert panel.values[i, j] == pytest.approx(-2.5)
    assert panel.split[i, j] == SPLIT_TEST and panel.cliff[i, j] and panel.n_measurements[i, j] == 2
    i, j = _cell(panel, "CCO", "T2_EC50")
    assert panel.values[i, j] == pytest.approx(-1.69897) and panel.split[i, j] == SPLIT_TEST
    # acetic acid: test in T1, train in T2 -- kept per cell
    i = panel.smiles.index("CC(=O)O")
    assert list(panel.split[i]) == [SPLIT_TEST, SPLIT_TRAIN]
    i, j = _cell(panel, "Oc1ccccc1", "T1_Ki")
    assert panel.cliff[i, j] and panel.split[i, j] == SPLIT_TRAIN
    assert panel.values[i, j] == pytest.approx(-1.0)
    i, j = _cell(panel, "c1ccccc1", "T1_Ki")
    assert not panel.observed[i, j] and panel.split[i, j] == SPLIT_NONE and not panel.cliff[i, j]


def test_fixture_rejects_duplicates_and_units(ace_card):
    panel = load_moleculeace_panel(ace_card)
    reasons = {(r["assay"], r["row"]): r["reason"] for r in panel.rejects}
    assert reasons == {("T1_Ki", 2): "unparsable SMILES", ("T1_Ki", 5): "missing value in 'y'",
                       ("T2_EC50", 3): "missing SMILES"}
    assert [r["file"] for r in panel.rejects] == ["../T1_Ki.csv", "../T1_Ki.csv", "../T2_EC50.csv"]
    assert panel.duplicates == [
        {"assay": "T1_Ki", "smiles": "CCO", "count": 2, "rows": [0, 3], "split": "test"}]
    assert panel.units == "pXC50"
    i, j = _cell(panel, "CC(=O)O", "T1_Ki")
    assert panel.values[i, j] == pytest.approx(9.0)  # 1 nM -> pKi 9


def test_fixture_summary_frame_and_masks(ace_card):
    panel = load_moleculeace_panel(ace_card, units="y")
    s = panel.summary()
    assert (s["n_compounds"], s["n_assays"], s["n_cells"]) == (4, 2, 6)
    assert s["density"] == pytest.approx(6 / 8)
    assert s["per_assay"]["T1_Ki"] == {"n": 3, "train": 1, "test": 2, "cliff": 2, "test_cliff": 1}
    assert s["per_assay"]["T2_EC50"] == {"n": 3, "train": 2, "test": 1, "cliff": 1, "test_cliff": 1}
    assert (s["n_rejects"], s["n_duplicate_cells"]) == (3, 1)
    frame = panel.frame()
    assert list(frame.columns) == ["smiles", "assay", "value", "split", "cliff", "n_measurements"]
    assert len(frame) == 6 and set(frame["split"]) == {"train", "test"}
    assert np.array_equal(panel.train_mask() | panel.test_mask(), panel.observed)
    assert not (panel.train_mask() & panel.test_mask()).any()
    in_test = panel.compounds_in_test_any()
    assert [panel.smiles[i] for i in np.flatnonzero(in_test)] == ["CC(=O)O", "CCO"]


def test_masked_to_train_drops_test_cells(ace_card):
    panel = load_moleculeace_panel(ace_card, units="y")
    before = panel.values.copy()
    train = panel.masked_to("train")
    assert train.smiles == panel.smiles  # rows stay aligned by default
    assert not train.test_mask().any()
    assert np.array_equal(train.observed, panel.train_mask())
    assert np.isnan(train.values[panel.test_mask()]).all()
    assert not train.cliff[panel.test_mask()].any()
    np.testing.assert_array_equal(train.values[train.observed], panel.values[panel.train_mask()])
    assert train.duplicates == []  # the one repeat is a test cell
    np.testing.assert_array_equal(panel.values, before)  # the original is untouched
    dropped = panel.masked_to("train", drop_empty=True)
    assert dropped.smiles == ["CC(=O)O", "Oc1ccccc1", "c1ccccc1"]  # ethanol has only test cells
    assert dropped.observed.sum() == 3 and dropped.observed.any(axis=1).all()
    assert not panel.masked_to("test").train_mask().any()
    with pytest.raises(ValueError, match="train"):
        panel.masked_to("val")


def test_targets_selects_and_orders_and_unknown_target_fails(ace_card):
    panel = load_moleculeace_panel(ace_card, targets=["T2_EC50"])
    assert panel.assays == ["T2_EC50"] and panel.shape == (3, 1)
    with pytest.raises(DatasetError, match="unknown target.*T1_Ki"):
        load_moleculeace_panel(ace_card, targets=["T9_Ki"])
    with pytest.raises(DatasetError, match="twice"):
        load_moleculeace_panel(ace_card, targets=["T1_Ki", "T1_Ki"])


def test_bad_split_value_names_file_and_row(ace_card, tmp_path):
    (tmp_path / "T2_EC50.csv").write_text(HEADER + "CCO,1.0,0.0,0,valid\n")
    with pytest.raises(DatasetError, match="row 0: split 'valid'"):
        load_moleculeace_panel(ace_card, verify=False)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_moleculeace_panel(ace_card)


# ---- the real MoleculeACE files ------------------------------------------------------------------

try:
    metadata.version("MoleculeACE")
    HAVE_ACE = True
except metadata.PackageNotFoundError:
    HAVE_ACE = False
needs_ace = pytest.mark.skipif(
    not HAVE_ACE, reason="MoleculeACE not installed: pip install --no-deps MoleculeACE==3.0.0")
SMALL = ["CHEMBL2835_Ki", "CHEMBL2971_Ki", "CHEMBL4616_EC50"]  # the first two share ~540 compounds


@needs_ace
def test_card_lists_30_verified_files_tagged_by_target():
    card = get_card("moleculeace")
    resolved = resolve_files(card)  # checks every sha256
    assert len(resolved) == 30
    for ref, path, _ in resolved:
        assert ref.tag == Path(ref.path).stem == path.stem and ref.tag.split("_")[1] in ("Ki", "EC50")
    assert card.license == "MIT" and "van Tilborg" in card.citation


@needs_ace
def test_real_subset_keeps_moleculeace_split_and_cliff_exactly():
    panel = load_moleculeace_panel(targets=SMALL, units="y")
    assert panel.assays == SMALL and panel.rejects == [] and panel.duplicates == []
    files = {p.stem: p for _, p, _ in resolve_files(get_card("moleculeace"))}
    for j, tag in enumerate(SMALL):
        raw = pd.read_csv(files[tag])
        counts = raw["split"].value_counts()
        assert panel.train_mask()[:, j].sum() == counts["train"]
        assert panel.test_mask()[:, j].sum() == counts["test"]
        assert panel.cliff[:, j].sum() == raw["cliff_mol"].sum()
        assert (panel.cliff[:, j] & panel.test_mask()[:, j]).sum() == (raw["cliff_mol"].astype(bool)
                                                                      & (raw["split"] == "test")).sum()
        assert np.sort(panel.values[panel.observed[:, j], j]) == pytest.approx(np.sort(raw["y"]), abs=1e-5)
    assert (panel.observed.sum(axis=1) > 1).sum() > 500  # compounds shared by targets are one row
    mixed = panel.train_mask().any(axis=1) & panel.test_mask().any(axis=1)
    assert mixed.sum() > 100  # train in one target, test in another: the split is per cell
    assert panel.source["version"] == "3.0.0" and set(panel.source["files"]) == set(SMALL)
