"""Dataset cards and sources: built-in cards on real packaged data, user cards, checksum errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from molwm.data.registry import DatasetError, get_card, list_cards, load_card
from molwm.data.sources import load_table

pytestmark = pytest.mark.unit

BUILTIN = ["b3db_classification", "chembl_drugs", "esol_molnet", "freesolv", "moleculeace", "moses", "solubility"]


def test_builtin_cards_are_complete():
    cards = {c.name: c for c in list_cards()}
    assert set(BUILTIN) <= set(cards)
    for card in cards.values():
        assert card.license and card.citation.strip(), card.name
        if card.source.kind == "package":
            assert card.source.install and card.source.distribution
            for ref in card.source.files:
                assert ref.sha256 and len(ref.sha256) == 64, f"{card.name}: {ref.path} lacks sha256"


@pytest.mark.parametrize(
    "name,rows,target",
    [
        ("b3db_classification", 7807, "bbb_permeable"),
        ("solubility", 1282, "logS"),
        ("freesolv", 642, "hydration_free_energy"),
        ("chembl_drugs", 1935, None),
    ],
)
def test_packaged_datasets_load_with_verified_checksums(name, rows, target):
    table = load_table(get_card(name))
    assert len(table.frame) == rows
    assert table.frame["smiles"].notna().all()
    assert len(table.digest) == 64
    if target:
        y = table.frame[target]
        assert y.dtype == np.float64 and y.notna().mean() > 0.99


def test_b3db_labels_are_binary_with_bbb_plus_as_one():
    frame = load_table(get_card("b3db_classification")).frame
    assert set(frame["bbb_permeable"].unique()) == {0.0, 1.0}
    assert int(frame["bbb_permeable"].sum()) == 4956  # BBB+ count in B3DB v1.1.1


def test_solubility_merges_train_and_test_files():
    frame = load_table(get_card("solubility")).frame
    assert frame["source_file"].value_counts().to_dict() == {"train": 1025, "test": 257}


def test_moses_reads_a_subset_without_importing_moses():
    import sys

    table = load_table(get_card("moses"), limit=100)
    assert len(table.frame) == 100
    assert "moses" not in sys.modules


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DatasetError, match="unknown dataset 'mosess'.*moses"):
        get_card("mosess")


def test_user_card_for_local_csv(local_csv_card):
    card = get_card("mini", [local_csv_card.parent])
    table = load_table(card)
    assert table.frame["smiles"].tolist()[:2] == ["CCO", "c1ccccc1O"]
    assert np.isnan(table.frame["activity"].iloc[5])
    assert get_card(str(local_csv_card)).name == "mini"


def test_cards_from_env_folder(local_csv_card, monkeypatch):
    monkeypatch.setenv("MOLWM_DATASETS", str(local_csv_card.parent))
    assert "mini" in {c.name for c in list_cards()}


def test_checksum_mismatch_is_a_clear_error(local_csv_card):
    csv = local_csv_card.parent.parent / "mini.csv"
    csv.write_text(csv.read_text() + "CCCC,1.0,butane\n")
    card = get_card(str(local_csv_card))
    with pytest.raises(DatasetError, match=r"(?s)checksum mismatch for .*mini\.csv.*expected sha256.*got +sha256"):
        load_table(card)
    assert len(load_table(card, verify=False).frame) == 7


def test_bad_card_names_file_and_key(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nsource:\n  kind: local\n  filez: []\n")
    with pytest.raises(DatasetError, match=r"broken\.yaml: unknown config key 'source\.filez'"):
        load_card(path)
    path.write_text("name: broken\nsource:\n  kind: ftp\n")
    with pytest.raises(DatasetError, match=r"'source\.kind'"):
        load_card(path)


def test_missing_file_and_missing_column(tmp_path):
    card_path = tmp_path / "c.yaml"
    card_path.write_text("name: c\nsource:\n  kind: local\n  files: [{path: nothere.csv}]\n")
    with pytest.raises(DatasetError, match="file not found"):
        load_table(load_card(card_path))
    (tmp_path / "t.csv").write_text("SMILES,y\nCCO,1\n")
    card_path.write_text("name: c\nsource:\n  kind: local\n  files: [{path: t.csv}]\n")
    with pytest.raises(DatasetError, match=r"no column\(s\) \['smiles'\]"):
        load_table(load_card(card_path))


def test_non_numeric_label_names_the_row(tmp_path):
    (tmp_path / "t.csv").write_text("smiles,y\nCCO,1\nCCN,high\n")
    card_path = tmp_path / "c.yaml"
    card_path.write_text(
        "name: c\nsource:\n  kind: local\n  files: [{path: t.csv}]\ncolumns: {targets: [y]}\ntask: {type: regression}\n"
    )
    with pytest.raises(DatasetError, match=r"row 1: target 'y' has non-numeric value 'high'"):
        load_table(load_card(card_path))


def test_missing_package_gives_install_hint(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nsource:\n  kind: package\n  distribution: no-such-dist-xyz\n  install: pip install no-such-dist-xyz\n"
        "  files: [{path: a.csv}]\n"
    )
    with pytest.raises(DatasetError, match="not installed. Install it with: pip install no-such-dist-xyz"):
        load_table(load_card(path))


def test_local_sdf_parquet_and_smi(tmp_path):
    from rdkit import Chem

    sdf = tmp_path / "m.sdf"
    with Chem.SDWriter(str(sdf)) as w:
        for smi, val in [("CCO", 1.0), ("c1ccccc1", 2.0)]:
            mol = Chem.MolFromSmiles(smi)
            mol.SetProp("y", str(val))
            w.write(mol)
    (tmp_path / "m.yaml").write_text(
        "name: m\nsource: {kind: local, files: [{path: m.sdf}]}\ncolumns: {smiles: null, targets: [y]}\n"
        "task: {type: regression}\n"
    )
    frame = load_table(load_card(tmp_path / "m.yaml")).frame
    assert frame["smiles"].tolist() == ["CCO", "c1ccccc1"] and frame["y"].tolist() == [1.0, 2.0]

    import pandas as pd

    pd.DataFrame({"smi": ["CCO", "CCC"], "p": [0.5, 0.7]}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.yaml").write_text(
        "name: t\nsource: {kind: local, files: [{path: t.parquet}]}\ncolumns: {smiles: smi, targets: [p]}\n"
        "task: {type: regression}\n"
    )
    assert load_table(load_card(tmp_path / "t.yaml")).frame["p"].tolist() == [0.5, 0.7]

    (tmp_path / "s.smi").write_text("CCO ethanol\nc1ccccc1 benzene\n")
    (tmp_path / "s.yaml").write_text("name: s\nsource: {kind: local, files: [{path: s.smi}]}\n")
    frame = load_table(load_card(tmp_path / "s.yaml")).frame
    assert frame["smiles"].tolist() == ["CCO", "c1ccccc1"]


def test_deepchem_molnet_source_reads_local_file_in_deepchem_layout(tmp_path):
    """Offline stand-in for MoleculeNet: the raw CSV placed where load_delaney looks first."""
    data_dir = tmp_path / "molnet"
    data_dir.mkdir()
    csv = data_dir / "delaney-processed.csv"
    csv.write_text(
        "Compound ID,ESOL predicted log solubility in mols per litre,Minimum Degree,Molecular Weight,"
        "Number of H-Bond Donors,Number of Rings,Number of Rotatable Bonds,Polar Surface Area,"
        "measured log solubility in mols per litre,smiles\n"
        "Amigdalin,-0.974,1,457.432,7,3,7,202.32,-0.77,OCC3OC(OCC2OC(OC(C#N)c1ccccc1)C(O)C(O)C2O)C(O)C(O)C3O \n"
        "Fenfuram,-2.885,1,201.225,1,2,2,42.24,-3.3,Cc1occc1C(=O)Nc2ccccc2\n"
        "citral,-2.579,1,152.237,0,0,4,17.07,-2.06,CC(C)=CCCC(C)=CC(=O)\n"
    )
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    card = tmp_path / "esol.yaml"
    card.write_text(
        "name: esol_local\nsource:\n  kind: deepchem_molnet\n  loader: delaney\n"
        f"  data_dir: {data_dir}\n  files: [{{path: delaney-processed.csv, sha256: {digest}}}]\n"
        "columns:\n  targets: ['measured log solubility in mols per litre']\n"
        "  rename: {'measured log solubility in mols per litre': logS}\ntask: {type: regression}\n"
    )
    table = load_table(load_card(card))
    assert table.frame["logS"].tolist() == [-0.77, -3.3, -2.06]
    assert table.frame["smiles"].iloc[1] == "Cc1occc1C(=O)Nc2ccccc2"
    assert table.files == [csv]


def test_builtin_card_dir_exists():
    from molwm.data.registry import builtin_card_dir

    assert Path(builtin_card_dir(), "moses.yaml").is_file()
