"""Splits: scaffold disjointness, determinism, acyclic handling, split files."""

from __future__ import annotations

import numpy as np
import pytest

from molwm.data.registry import get_card
from molwm.data.sources import load_table
from molwm.data.splits import (
    SplitError,
    load_splits,
    make_split,
    murcko_scaffold,
    random_split,
    save_splits,
    scaffold_split,
    stratified_split,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def solubility_smiles():
    return load_table(get_card("solubility")).frame["smiles"].tolist()


def _check_partition(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n
    for p in parts:
        assert np.all(np.diff(p) > 0)


def test_scaffold_split_is_a_disjoint_partition_by_scaffold(solubility_smiles):
    train, val, test = scaffold_split(solubility_smiles, (0.8, 0.1, 0.1), seed=0)
    _check_partition((train, val, test), len(solubility_smiles))
    scaff = [murcko_scaffold(s) for s in solubility_smiles]
    sets = [{scaff[i] for i in part} for part in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    n = len(solubility_smiles)
    assert abs(len(train) / n - 0.8) < 0.05 and len(val) > 0 and len(test) > 0


def test_scaffold_split_is_deterministic_and_seed_dependent(solubility_smiles):
    a = scaffold_split(solubility_smiles, seed=0)
    b = scaffold_split(solubility_smiles, seed=0)
    c = scaffold_split(solubility_smiles, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])


def test_acyclic_molecules_share_one_group_and_stay_together():
    smiles = ["CCO", "CCCC", "CC(C)O", "CCN"] + ["c1ccccc1" + "C" * k for k in range(1, 7)] + ["C1CCCCC1C"] * 10
    assert murcko_scaffold("CCO") == ""
    train, val, test = scaffold_split(smiles, (0.6, 0.2, 0.2), seed=3)
    _check_partition((train, val, test), len(smiles))
    acyclic = {0, 1, 2, 3}
    homes = [bool(acyclic & set(p.tolist())) for p in (train, val, test)]
    assert sum(homes) == 1


def test_scaffold_split_names_the_bad_row():
    with pytest.raises(SplitError, match="row 1: cannot compute a scaffold"):
        scaffold_split(["CCO", "C1CC(", "CCN"])


def test_random_and_stratified(solubility_smiles):
    n = 1000
    tr, va, te = random_split(n, (0.7, 0.2, 0.1), seed=5)
    _check_partition((tr, va, te), n)
    assert (len(tr), len(va), len(te)) == (700, 200, 100)
    labels = np.array([1] * 900 + [0] * 100)
    tr, va, te = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    _check_partition((tr, va, te), 1000)
    for part in (tr, va, te):
        assert abs(labels[part].mean() - 0.9) < 0.02
    with pytest.raises(SplitError, match="sum to 1"):
        random_split(10, (0.5, 0.5, 0.5))
    with pytest.raises(SplitError, match="needs labels"):
        make_split("stratified", ["C"] * 3)
    with pytest.raises(SplitError, match="unknown split kind"):
        make_split("cluster", ["C"] * 3)


def test_split_file_roundtrip_in_chemprop_format(tmp_path, solubility_smiles):
    splits = [scaffold_split(solubility_smiles, seed=s) for s in (0, 1, 2)]
    path = save_splits(splits, tmp_path / "split.json")
    import json

    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 3 and set(data[0]) == {"train", "val", "test"}
    back = load_splits(path, n_rows=len(solubility_smiles))
    for a, b in zip(splits, back):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_split_files(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[{"train": [0, 1], "val": [1], "test": [2]}]')
    with pytest.raises(SplitError, match="entry 0: a row index appears twice"):
        load_splits(path)
    path.write_text('[{"train": [0, 1], "val": [2], "test": [9]}]')
    with pytest.raises(SplitError, match="out of range for the dataset \\(5 rows\\)"):
        load_splits(path, n_rows=5)
    path.write_text('[{"train": [0]}]')
    with pytest.raises(SplitError, match="must have 'train', 'val' and 'test'"):
        load_splits(path)
    path.write_text("not json")
    with pytest.raises(SplitError, match="cannot read split file"):
        load_splits(path)
