"""The descriptor set: names and columns agree, values are RDKit's, bad input gives NaN rows, never errors."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import Descriptors

from featurizers.descriptors import DESCRIPTOR_SET, compute_descriptors, descriptor_spec

pytestmark = pytest.mark.unit


def test_the_spec_names_every_column_and_keys_on_the_rdkit_version():
    spec = descriptor_spec()
    x = compute_descriptors(["CCO"])
    assert x.shape == (1, spec.size) == (1, len(set(spec.names)))
    assert spec.name == DESCRIPTOR_SET and spec.rdkit and len(spec.digest()) == 16
    assert np.isfinite(x).all()


def test_values_are_rdkits_own():
    spec = descriptor_spec()
    smiles = ["CC(=O)Nc1ccc(O)cc1", "c1ccccc1O", "CCN(CC)CC"]
    x = compute_descriptors(smiles)
    for row, s in zip(x, smiles):
        mol = Chem.MolFromSmiles(s)
        for name, fn in [("tpsa", Descriptors.TPSA), ("CrippenClogP", Descriptors.MolLogP),
                         ("NumHBD", Descriptors.NumHDonors), ("MaxEStateIndex", Descriptors.MaxEStateIndex),
                         ("MinAbsEStateIndex", Descriptors.MinAbsEStateIndex)]:
            assert row[spec.names.index(name)] == pytest.approx(fn(mol), rel=1e-5), (s, name)


def test_bad_input_is_a_nan_row_not_an_error():
    x = compute_descriptors(["CCO", "C1CC(", "", None, "c1ccccc1"])
    assert np.isfinite(x[[0, 4]]).all()
    assert np.isnan(x[[1, 2, 3]]).all()
