"""benchmarks/real_profiles.py: its ranking and split rules by hand, and a tiny run of the whole code path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import real_profiles  # noqa: E402

from molwm.data.splits import murcko_scaffold  # noqa: E402


@pytest.mark.unit
def test_rank_scores_and_chance_by_hand():
    true = np.eye(4)
    perfect = real_profiles.rank_scores(true * 2.0, true)  # cosine ignores scale
    assert perfect == {"top1": 1.0, "top5pct": 1.0, "mrr": 1.0, "n": 4}
    # query i points at profile (i + 1) % 4: its own profile ranks second (ties at 0 count against nobody)
    shifted = real_profiles.rank_scores(np.roll(true, 1, axis=1) + 0.5 * true, true)
    assert shifted["top1"] == 0.0 and shifted["mrr"] == pytest.approx(0.5)
    chance = real_profiles.chance_scores(40)
    assert chance["top1"] == pytest.approx(1 / 40) and chance["top5pct"] == pytest.approx(2 / 40)
    assert chance["mrr"] == pytest.approx(sum(1 / r for r in range(1, 41)) / 40)


@pytest.mark.unit
def test_scaffold_folds_never_split_a_scaffold_and_depend_on_the_seed():
    smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "C1CCCCC1N", "C1CCCCC1O", "c1ccncc1", "c1ccncc1C", "CCO",
              "CCCN", "c1ccc2ccccc2c1"]
    scaf = [murcko_scaffold(s) for s in smiles]
    for seed in (0, 1, 2):
        fold = real_profiles.scaffold_folds(smiles, 3, seed)
        for s in set(scaf):
            assert len({fold[i] for i in range(len(smiles)) if scaf[i] == s}) == 1
        sizes = np.bincount(fold, minlength=3)
        assert sizes.max() - sizes.min() <= max(scaf.count(s) for s in set(scaf))  # dealt to the emptiest fold
    assert any((real_profiles.scaffold_folds(smiles, 3, a) != real_profiles.scaffold_folds(smiles, 3, 7)).any()
               for a in (0, 1, 2))


@pytest.mark.unit
def test_conditions_are_medians_of_replicate_wells():
    wells = pd.DataFrame({"compound_id": ["DMSO", "a", "a", "a"], "smiles": ["CS(C)=O", "CCO", "CCO", "CCO"],
                          "dose_uM": [0.0, 1.0, 1.0001, 10.0], "time_h": [24.0] * 4, "label": ["", "k", "k", "k"],
                          "is_control": [True, False, False, False]})
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    cond, y = real_profiles.conditions(wells, x)
    assert cond["dose"].tolist() == [1.0, 10.0] and cond["n_wells"].tolist() == [2, 1]
    np.testing.assert_allclose(y[:, 0], [2.0, 7.0])


@pytest.mark.unit
def test_classes_from_profiles_beat_chance_when_profiles_carry_the_class():
    smiles = ["C1CC1", "C1CCC1", "C1CCCC1", "C1CCCCC1", "C1CCCCCC1", "c1ccccc1", "c1ccncc1", "c1cnccn1", "c1ccoc1",
              "c1ccsc1", "c1cc[nH]c1", "C1CCNCC1"]  # 12 scaffolds, so every class is in every training fold
    comp = pd.DataFrame({"compound_id": [f"c{i}" for i in range(12)], "smiles": smiles, "label": list("abc") * 4})
    prof = np.tile(np.eye(3), (4, 1)) + 0.01 * np.random.default_rng(0).normal(size=(12, 3))
    bits = dict(zip(comp["compound_id"], np.random.default_rng(1).integers(0, 2, size=(12, 64))))
    rows = {r["method"]: r for r in real_profiles.classes(comp, prof, bits, min_class=3, n_folds=2, seed=0)}
    assert set(rows) == {"rf_morgan", "rf_profile", "logistic_profile", "rf_profile_strongest",
                         "logistic_profile_strongest", "chance"}
    assert rows["logistic_profile"]["macro_f1"] == 1.0 and rows["rf_morgan"]["n_classes"] == 3


@pytest.mark.integration
def test_a_tiny_run_writes_every_task(tmp_path):
    out = tmp_path / "bench"
    assert real_profiles.main(["--sets", "sq00015054", "--max-compounds", "14", "--seeds", "0", "--folds", "2",
                               "--null-size", "50", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    methods = {(r["task"], r["method"]) for r in result["rows"]}
    for m in ("ridge_morgan", "ridge_rdkit2d", "nn_tanimoto", "chance"):
        assert ("retrieval", m) in methods
    assert {("map", "activity_condition"), ("map", "consistency_class")} <= methods
    chance = [r for r in result["rows"] if r["method"] == "chance" and r["task"] == "retrieval"]
    assert all(r["top1"] == pytest.approx(1 / r["n"]) for r in chance)
    assert "### sq00015054: retrieval" in (out / "results.md").read_text()


@pytest.mark.integration
def test_a_tiny_molwm_run_scores_every_objective_resumes_and_plots(tmp_path):
    import real_profiles_molwm

    out = tmp_path / "molwm"
    args = ["--set", "sq00015054", "--max-compounds", "12", "--seeds", "0", "--folds", "2", "--steps", "4",
            "--curve-every", "2", "--null-size", "50", "--objectives", "jepa,contrastive_profile", "--out", str(out)]
    assert real_profiles_molwm.main(args) == 0
    parts = sorted(p.name for p in (out / "parts").glob("*.json"))
    assert parts == [f"sq00015054-s0-f{k}-{o}.json" for k in (0, 1) for o in ("contrastive_profile", "jepa")]
    result = json.loads((out / "sq00015054_results.json").read_text())
    rows = result["rows"]
    curve = [r for r in rows if r["task"] == "curve" and r["method"] == "molwm_jepa" and r["fold"] == 0]
    assert [r["step"] for r in curve] == [2, 4] and curve[0]["train_seconds"] <= curve[1]["train_seconds"]
    methods = {(r["task"], r["method"]) for r in rows}
    assert {("retrieval", "molwm_jepa"), ("retrieval", "molwm_contrastive_profile"), ("retrieval", "ridge_morgan"),
            ("map", "activity_compound_time_raw_features"), ("map", "activity_compound_time_untrained"),
            ("map", "consistency_pooled_jepa"), ("map", "consistency_pooled_raw_features")} <= methods
    parts = [json.loads(p.read_text()) for p in (out / "parts").glob("*jepa.json")]
    assert all(set(p["consensus"]) == {"raw_features", "jepa", "untrained"} for p in parts)
    assert (out / "sq00015054_curves.png").stat().st_size > 0
    # a rerun finds every part and trains nothing: the summary is rebuilt from the parts alone
    (out / "runs").rename(tmp_path / "gone")
    assert real_profiles_molwm.main(args) == 0
    assert not (out / "runs").exists()
