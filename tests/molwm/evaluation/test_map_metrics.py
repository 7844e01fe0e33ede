"""mAP of profile retrieval: hand-computed cases, and copairs' numbers where copairs is installed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molwm.evaluation.map_metrics import (average_precision, benjamini_hochberg, mean_average_precision,
                                     phenotypic_activity, phenotypic_consistency)

pytestmark = pytest.mark.unit


def test_average_precision_by_hand():
    # candidates ranked by similarity: pos 0.9, neg 0.8, pos 0.7, neg 0.1 -> AP = (1/1 + 2/3) / 2
    sim = np.array([[0.7, 0.9, 0.1, 0.8, 0.95]])
    pos = np.array([[True, True, False, False, False]])
    neg = np.array([[False, False, True, True, False]])  # the last profile is not a candidate
    np.testing.assert_allclose(average_precision(sim, pos, neg), [(1 + 2 / 3) / 2])
    # no positive or no negative: undefined
    assert np.isnan(average_precision(sim, np.zeros_like(pos), neg)).all()
    assert np.isnan(average_precision(sim, pos, np.zeros_like(neg))).all()


def test_benjamini_hochberg_by_hand():
    # sorted p 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.04, 0.04, 0.5
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.03, 0.5, 0.01, 0.02])), [0.04, 0.5, 0.04, 0.04])


def test_separable_replicates_are_active_and_noise_is_not():
    rng = np.random.default_rng(0)
    ctl = rng.normal(size=(12, 8))
    strong = np.repeat(np.eye(8)[:4] * 10, 3, axis=0) + 0.1 * rng.normal(size=(12, 8))
    x = np.concatenate([strong, ctl])
    group = [f"c{i // 3}" for i in range(12)] + ["DMSO"] * 12
    is_ctl = np.r_[np.zeros(12, bool), np.ones(12, bool)]
    res = phenotypic_activity(x, group, is_ctl, null_size=2000)
    assert res.map == pytest.approx(1.0) and res.retrieved == 1.0 and res.n_groups == 4
    noise = phenotypic_activity(rng.normal(size=(24, 8)), group, is_ctl, null_size=2000)
    assert noise.map < 0.6 and noise.retrieved == 0.0
    # consistency: the four compounds of two labels, perfectly clustered
    cons = phenotypic_consistency(np.array([[1, 0], [1.1, 0.1], [0, 1], [0.1, 1.2]]), ["a", "a", "b", "b"],
                                  null_size=500)
    assert cons.map == pytest.approx(1.0) and cons.n_groups == 2


def test_null_p_values_by_hand():
    # one positive among 2 candidates: a random ranking has AP 1 or 1/2, each half the time;
    # the p-value counts null mAPs strictly above the observed one (as copairs does)
    table = mean_average_precision(np.array([0.5, 1.0]), np.array([1, 1]), np.array([2, 2]), ["second", "first"],
                                   null_size=4000).set_index("group")
    assert table.loc["second", "p_value"] == pytest.approx(0.5, abs=0.03)
    assert table.loc["first", "p_value"] == pytest.approx(1 / 4001)


def test_matches_copairs(tmp_path):
    copairs_map = pytest.importorskip("copairs.map")
    rng = np.random.default_rng(1)
    x, comp, ctl = [], [], []
    for c in range(10):
        mu = rng.normal(size=16) * (c % 3) * 0.6
        for _ in range(3):
            x.append(mu + rng.normal(size=16))
            comp.append(f"c{c}")
            ctl.append(False)
    for _ in range(9):
        x.append(rng.normal(size=16))
        comp.append("DMSO")
        ctl.append(True)
    x, ctl = np.array(x), np.array(ctl)
    meta = pd.DataFrame({"cpd": comp, "ref": np.where(ctl, np.arange(len(ctl)), -1)})
    ap = copairs_map.average_precision(meta, x, ["cpd", "ref"], [], [], ["cpd", "ref"], progress_bar=False)
    theirs = copairs_map.mean_average_precision(ap, ["cpd"], null_size=2000, threshold=0.05, seed=0,
                                                progress_bar=False, cache_dir=tmp_path).set_index("cpd")
    ours = phenotypic_activity(x, comp, ctl, null_size=2000).per_group.set_index("group").loc[theirs.index]
    np.testing.assert_allclose(ours["mean_average_precision"], theirs["mean_average_precision"], atol=1e-6)
    np.testing.assert_allclose(ours["p_value"], theirs["p_value"])
    np.testing.assert_allclose(ours["corrected_p_value"], theirs["corrected_p_value"], atol=1e-12)
