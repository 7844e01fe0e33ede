"""Applicability domain: distances to the training molecules and the threshold fitted on validation."""

from __future__ import annotations

import numpy as np
import pytest

from molwm.uncertainty.domain import Domain, binned_error, fit_threshold

pytestmark = pytest.mark.unit


def test_threshold_is_the_first_quantile_where_error_beyond_passes_the_factor():
    d = np.arange(10, dtype=float)
    err = np.where(d <= 5, 1.0, 3.0)
    t, ratio, crossed = fit_threshold(d, err, factor=1.3)
    # median 4.5: beyond are 5..9 with errors 1,3,3,3,3 (mean 2.6) against 1 within
    assert (t, crossed) == (4.5, True) and ratio == pytest.approx(2.6)
    t, ratio, crossed = fit_threshold(d, np.ones(10), factor=1.3)  # error never grows
    assert (t, crossed) == (9.0, False) and np.isnan(ratio)


def test_distances_to_training_molecules():
    train = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O"]
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    dom = Domain.build(train, emb, factor=1.3)
    assert dom.fingerprints.shape == (3, 256) and dom.unit.dtype == np.float16  # packed bits, half floats
    tan = dom.max_tanimoto(["CCO", "c1ccccc1O", "CCCCCCCCCC"])
    assert tan[:2] == pytest.approx([1.0, 1.0]) and tan[2] < 0.5
    dist = dom.embedding_distance(np.vstack([emb, [[np.nan, 0.0]]]))
    assert dist[:3] == pytest.approx([0, 0, 0], abs=1e-3) and np.isnan(dist[3])
    dom.threshold = 0.1
    frame = dom.frame(["CCO", "bad"], np.array([[1.0, 0.0], [np.nan, np.nan]]), ["ok", "could not parse"])
    assert list(frame.columns) == ["max_tanimoto", "embedding_distance", "in_domain"]
    assert bool(frame.in_domain[0]) and frame.in_domain.isna()[1]
    again = Domain.from_state(dom.to_state())
    assert again.threshold == 0.1 and np.array_equal(again.fingerprints, dom.fingerprints)
    assert Domain.from_state(None) is None  # checkpoints without a domain


def test_binned_error():
    out = binned_error(np.arange(10.0), np.arange(10.0), bins=2)
    assert out["n"].tolist() == [5, 5] and out["mae"] == pytest.approx([2.0, 7.0])


def test_a_molecule_outside_the_training_sizes_is_out_of_the_domain():
    """Issue 26: a 500-carbon chain was in the domain with max_tanimoto 1.0 (its Morgan bits are octane's)."""
    train = ["CCO", "c1ccccc1O", "CCCCCCCC", "CC(=O)Oc1ccccc1C(=O)O"]
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    dom = Domain.build(train, emb, factor=1.3)
    assert dom.heavy_atoms == (3, 13)
    dom.threshold = 0.1
    chain = "C" * 500
    frame = dom.frame(["CCCCCCCC", chain, "C"], np.array([[1.0, 1.0]] * 3), ["ok"] * 3)  # all at octane's embedding
    assert frame.max_tanimoto[1] == 1.0 and frame.embedding_distance[1] == pytest.approx(0, abs=1e-3)
    assert frame.in_domain.tolist() == [True, False, False]  # 500 and 1 heavy atoms: outside 3..13
    again = Domain.from_state(dom.to_state())
    assert again.heavy_atoms == (3, 13)
    old = dom.to_state()
    del old["heavy_atoms"]  # a checkpoint written before the range was stored: no size check
    assert Domain.from_state(old).frame([chain], np.array([[1.0, 1.0]]), ["ok"]).in_domain.tolist() == [True]
