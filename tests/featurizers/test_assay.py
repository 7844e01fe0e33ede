"""Assay columns to values + observed mask, and the train-only normaliser."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from featurizers.assay import AssayError, AssayNormalizer, assay_arrays, describe_bad_cells

pytestmark = pytest.mark.unit


def test_blanks_are_missing_text_and_inf_are_reported():
    frame = pd.DataFrame({
        "a": ["1.5", "", "active?", "inf", "NA", "2"],
        "b": [0.0, np.nan, 1.0, -np.inf, 3.0, 1e39],  # 1e39 overflows float32
        "note": ["x"] * 6,
    })
    arrays = assay_arrays(frame, ["a", "b"])
    values, observed = arrays  # unpacks like a tuple
    assert values.dtype == np.float32 and values.shape == (6, 2)
    assert observed.tolist() == [[True, True], [False, False], [False, True],
                                 [False, False], [False, True], [True, False]]
    assert np.isnan(values[~observed]).all()
    assert values[0, 0] == 1.5 and values[5, 0] == 2.0
    bad = [(b.row, b.column, b.value, b.problem) for b in arrays.bad_cells]
    assert bad == [(2, "a", "active?", "non_numeric"), (3, "a", float("inf"), "infinite"),
                   (3, "b", float("-inf"), "infinite"), (5, "b", 1e39, "infinite")]
    assert "row 2 a 'active?'" in describe_bad_cells(arrays.bad_cells)


def test_missing_column_lists_available():
    with pytest.raises(AssayError, match="NR-XX.*available: a, b"):
        assay_arrays(pd.DataFrame({"a": [1], "b": [2]}), ["a", "NR-XX"])


def test_bool_columns_read_as_numbers():
    values, observed = assay_arrays(pd.DataFrame({"a": [True, False]}), ["a"])
    assert values[:, 0].tolist() == [1.0, 0.0] and observed.all()


def test_normalizer_uses_train_rows_only_and_roundtrips():
    values = np.array([[1.0, 5.0, np.nan], [3.0, np.nan, np.nan], [100.0, 7.0, 2.0]], np.float32)
    observed = ~np.isnan(values)
    norm = AssayNormalizer(columns=["a", "b", "c"]).fit(values, observed, rows=np.array([0, 1]))
    np.testing.assert_allclose(norm.mean, [2.0, 5.0, 0.0])
    np.testing.assert_allclose(norm.std, [1.0, 1.0, 1.0])  # b: one observation -> std 1; c: none
    assert norm.count.tolist() == [2, 1, 0]
    z = norm.transform(values, observed)
    np.testing.assert_allclose(z[0, :2], [-1.0, 0.0])
    assert np.isnan(z[1, 1]) and z[2, 0] == 98.0
    back = norm.inverse_transform(z)
    np.testing.assert_allclose(back[observed], values[observed], rtol=1e-6)
    again = AssayNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(again.transform(values), z)
    assert again.columns == ["a", "b", "c"]


def test_normalizer_std_floor_and_errors():
    values = np.array([[4.0], [4.0], [4.0]], np.float32)
    norm = AssayNormalizer(min_std=0.5).fit(values)
    assert norm.std.tolist() == [0.5]
    with pytest.raises(RuntimeError, match="not fitted"):
        AssayNormalizer().transform(values)
    with pytest.raises(ValueError, match="observed cells must hold finite"):
        AssayNormalizer().fit(np.array([[np.nan]]), np.array([[True]]))
    with pytest.raises(ValueError, match="fitted on 1 assays, got 2"):
        norm.transform(np.zeros((1, 2), np.float32))
