"""featurizers.molecule: bad inputs, the count invariant, feature bits, parallel equality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch

from featurizers import (GRAPH_SPEC, FeaturizationError, GraphArrays, featurize_arrays, featurize_smiles,
                         mol_to_graph)
from featurizers.graphs import _new_graph_fast, _new_graph_safe

pytestmark = pytest.mark.unit

BAD_INPUTS = [
    ("", "empty"),
    ("   ", "empty"),
    ("C1CC(", "parse_error"),
    ("C1CC", "parse_error"),
    ("CC[Xx]C", "parse_error"),
    ("CN(C)(C)(C)C", "valence"),
    ("c1cccc1", "kekulize"),
    ("*CC", "dummy_atom"),
    ("[1*]c1ccccc1", "dummy_atom"),
    ("CC>>CO", "reaction"),
    ("CC>O>CO", "reaction"),
    ("C" * 1001, "too_long"),
    (None, "not_string"),
    (float("nan"), "not_string"),
    (42, "not_string"),
    ("CCO ethanol", "whitespace"),
]


@pytest.mark.parametrize("smiles,code", BAD_INPUTS)
def test_each_bad_input_becomes_a_reject_with_a_reason(smiles, code):
    graphs, rejects = featurize_smiles(["CCO", smiles, "c1ccccc1"])
    assert len(graphs) == 2 and len(rejects) == 1
    rej = rejects[0]
    assert rej.index == 1
    assert rej.code == code
    assert rej.reason and "Traceback" not in rej.reason
    assert [g.index for g in graphs] == [0, 2]


@pytest.mark.parametrize("smiles,code", [b for b in BAD_INPUTS if isinstance(b[0], str)])
def test_mol_to_graph_raises_featurization_error(smiles, code):
    with pytest.raises(FeaturizationError) as info:
        mol_to_graph(smiles)
    assert info.value.code == code
    assert str(info.value) == info.value.reason


def test_reasons_a_chemist_understands():
    _, rejects = featurize_smiles(["CN(C)(C)(C)C", "C1CC(", "C1CC"])
    assert "valence" in rejects[0].reason and "N" in rejects[0].reason
    assert "parentheses" in rejects[1].reason
    assert "unclosed ring bond 1" in rejects[2].reason


def test_length_cap_is_configurable():
    long = "C" * 1500
    _, rejects = featurize_smiles([long])
    assert rejects[0].code == "too_long"
    graphs, rejects = featurize_smiles([long], max_smiles_length=2000)
    assert len(graphs) == 1 and not rejects


def test_count_invariant_and_order_on_a_mixed_batch():
    rng = np.random.default_rng(0)
    good = ["CCO", "c1ccccc1", "CC(=O)O", "C[C@H](N)C(=O)O", "O=[N+]([O-])c1ccccc1", "[Na+].[Cl-]"]
    pool = good + [b[0] for b in BAD_INPUTS]
    smiles = [pool[i] for i in rng.integers(0, len(pool), 300)]
    graphs, rejects = featurize_smiles(smiles, chunk_size=17)
    assert len(graphs) + len(rejects) == len(smiles)
    seen = sorted([g.index for g in graphs] + [r.index for r in rejects])
    assert seen == list(range(len(smiles)))
    assert [g.index for g in graphs] == sorted(g.index for g in graphs)
    for g in graphs:
        assert g.smiles == smiles[g.index].strip()


def test_surrounding_whitespace_is_stripped():
    g = mol_to_graph("  CCO\n")
    assert g.smiles == "CCO" and g.num_nodes == 3


def _reference_atom(atom) -> list[int]:
    return [
        atom.GetAtomicNum(),
        min(atom.GetDegree(), 6),
        max(-3, min(3, atom.GetFormalCharge())) + 3,
        min(atom.GetTotalNumHs(), 4),
        int(atom.GetHybridization()),
        int(atom.GetIsAromatic()),
        int(atom.IsInRing()),
        int(atom.GetChiralTag()),
    ]


def _reference_bond(bond) -> list[int]:
    types = {Chem.BondType.SINGLE: 0, Chem.BondType.DOUBLE: 1, Chem.BondType.TRIPLE: 2, Chem.BondType.AROMATIC: 3}
    return [types.get(bond.GetBondType(), 4), int(bond.GetIsConjugated()), int(bond.IsInRing()), int(bond.GetStereo())]


REFERENCE_SET = [
    "CCO",
    "C[C@H](N)C(=O)O",
    "C/C=C/C",
    "F/C=C\\Cl",
    "O=[N+]([O-])c1ccccc1",
    "CN(=O)=O",
    "c1ccc2[nH]ccc2c1",
    "C#N",
    "[NH4+]",
    "[Fe+2]",
    "C->[Fe]",
    "[Na+].[Cl-]",
    "C1CC2(CC1)CCC2",
    "[H][H]",
    "CC(C)(C)[C@@]1(O)CC[C@H](F)CC1",
    "OC(=O)CCCCCCCC/C=C\\CCCCCCCC",
    "[O-][N+](=O)C[C@@H](c1ccccc1)[S@@](=O)C",
]


@pytest.mark.parametrize("smiles", REFERENCE_SET)
def test_features_match_a_plain_per_atom_reference(smiles):
    g = mol_to_graph(smiles)
    mol = Chem.MolFromSmiles(smiles)
    expected_x = torch.tensor([_reference_atom(a) for a in mol.GetAtoms()])
    assert torch.equal(g.x, expected_x)
    bonds = list(mol.GetBonds())
    assert g.edge_index.shape == (2, 2 * len(bonds))
    for k, bond in enumerate(bonds):
        u, v = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        assert g.edge_index[:, 2 * k].tolist() == [u, v]
        assert g.edge_index[:, 2 * k + 1].tolist() == [v, u]
        assert g.edge_attr[2 * k].tolist() == _reference_bond(bond)
        assert g.edge_attr[2 * k + 1].tolist() == _reference_bond(bond)


def test_dative_bond_is_other_not_single():
    g = mol_to_graph("C->[Fe]")
    assert g.edge_attr[0, 0].item() == 4


def test_values_lie_within_the_declared_sizes():
    graphs, _ = featurize_smiles(REFERENCE_SET)
    x = torch.cat([g.x for g in graphs])
    e = torch.cat([g.edge_attr for g in graphs])
    assert x.dtype == torch.long and e.dtype == torch.long
    assert (x >= 0).all() and (e >= 0).all()
    assert (x.max(0).values < torch.tensor(GRAPH_SPEC.atom_sizes)).all()
    assert (e.max(0).values < torch.tensor(GRAPH_SPEC.bond_sizes)).all()
    assert x.shape[1] == len(GRAPH_SPEC.atom) and e.shape[1] == len(GRAPH_SPEC.bond)


def test_ethanol_by_hand():
    g = mol_to_graph("CCO")
    assert g.x[:, 0].tolist() == [6, 6, 8]  # elements
    assert g.x[:, 1].tolist() == [1, 2, 1]  # degree
    assert g.x[:, 3].tolist() == [3, 2, 1]  # hydrogens
    assert g.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]


def test_parallel_equals_serial():
    smiles = REFERENCE_SET * 20 + ["bad(", ""] * 5
    g1, r1 = featurize_smiles(smiles, n_jobs=1, chunk_size=50)
    g2, r2 = featurize_smiles(smiles, n_jobs=2, chunk_size=50)
    assert [r.index for r in r1] == [r.index for r in r2]
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        assert a.index == b.index
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_attr, b.edge_attr)


def test_batching_keeps_input_index_unshifted():
    graphs, _ = featurize_smiles(["CCO", "bad(", "c1ccccc1", "C"])
    batch = Batch.from_data_list(graphs)
    assert batch.index.tolist() == [0, 2, 3]
    assert batch.num_graphs == 3 and batch.x.shape[0] == 3 + 6 + 1
    assert batch.edge_index.max().item() < batch.num_nodes


def test_graphs_do_not_share_storage():
    graphs, _ = featurize_smiles(["CCO", "CCN"])
    assert graphs[0].x.untyped_storage().nbytes() == graphs[0].x.numel() * 8


def test_fast_constructor_matches_public_constructor():
    x, ei, ea = torch.zeros(3, 8, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long)
    fast, safe = _new_graph_fast(x, ei, ea, 7, "CCO"), _new_graph_safe(x, ei, ea, 7, "CCO")
    assert fast.keys() == safe.keys() and fast.num_nodes == safe.num_nodes == 3
    assert fast.index == safe.index == 7 and fast.smiles == "CCO"


def test_graph_arrays_roundtrip(tmp_path):
    arrays, _ = featurize_arrays(REFERENCE_SET)
    arrays.save(tmp_path / "a")
    loaded = GraphArrays.load(tmp_path / "a")
    for name in GraphArrays.FIELDS:
        assert np.array_equal(getattr(arrays, name), getattr(loaded, name))
    halves = GraphArrays.concat([arrays.slice(0, 5), arrays.slice(5, len(arrays))])
    for a, b in zip(arrays.to_graphs(), halves.to_graphs()):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and a.index == b.index
    assert len(GraphArrays.concat([])) == 0 and GraphArrays.empty().to_graphs() == []


def test_empty_input():
    assert featurize_smiles([]) == ([], [])


def test_largest_fragment_strips_salts_only_when_asked():
    whole = mol_to_graph("CC(N)Cc1ccc(O)cc1.Br")
    parent = mol_to_graph("CC(N)Cc1ccc(O)cc1.Br", largest_fragment=True)
    assert whole.num_nodes == 12 and parent.num_nodes == 11
    assert 35 not in parent.x[:, 0].tolist()
    assert torch.equal(parent.x, mol_to_graph("CC(N)Cc1ccc(O)cc1").x)
    graphs, _ = featurize_smiles(["[Na+].[Cl-]", "CCO"], largest_fragment=True, n_jobs=2, chunk_size=1)
    assert graphs[0].num_nodes == 1 and graphs[1].num_nodes == 3


def test_the_too_long_reason_names_no_option_a_query_lacks():
    # issue 26, smaller ones: "raise max_smiles_length" read as an option of molwm query, which has none
    from featurizers.molecule import featurize_arrays

    _, rejects = featurize_arrays(["C" * 50], max_smiles_length=10)
    assert rejects[0].code == "too_long" and "raise max_smiles_length" not in rejects[0].reason
