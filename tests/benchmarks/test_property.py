"""benchmarks/property.py: its metrics by hand, and a one-target run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import property_data
import property_methods

TARGET = "CHEMBL2835_Ki"  # MoleculeACE's smallest target (615 rows)


@pytest.mark.unit
def test_cliff_rmse_is_the_rmse_of_the_flagged_test_molecules_only():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    pred = np.array([0.0, 1.0, 3.0, 5.0])  # errors 0, 0, 1, 2
    cliff = np.array([0, 0, 1, 1])
    assert property_methods.cliff_rmse(y, pred, cliff) == pytest.approx(np.sqrt((1 + 4) / 2))
    assert property_methods.rmse(y, pred) == pytest.approx(np.sqrt(5 / 4))
    assert property_methods.cliff_rmse(y, pred, cliff[::-1]) == pytest.approx(0.0)
    assert np.isnan(property_methods.cliff_rmse(y, pred, np.zeros(4, bool)))


@pytest.mark.unit
def test_validation_is_carved_from_train_by_seed_and_target():
    train = np.arange(100, 300)
    tr, val = property_data.carve_val(train, 0, "A")
    assert len(val) == 20 and not set(tr) & set(val) and set(tr) | set(val) == set(train)
    assert np.array_equal(val, property_data.carve_val(train, 0, "A")[1])
    assert not np.array_equal(val, property_data.carve_val(train, 1, "A")[1])
    assert not np.array_equal(val, property_data.carve_val(train, 0, "B")[1])


@pytest.mark.cli
def test_quick_run_on_one_target_scores_moleculeace_split_and_cliffs(tmp_path):
    out = tmp_path / "p.json"
    proc = subprocess.run([sys.executable, str(BENCH / "property.py"), "--quick", "--sets", "moleculeace",
                           "--targets", TARGET, "--methods", "rf_morgan,svm_ecfp", "--out", str(out),
                           "--feature-cache", str(tmp_path / "feat")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    entry = report["sets"][TARGET]
    # MoleculeACE's own counts: its test rows, and the cliff compounds among them
    spec = find_spec("MoleculeACE")
    raw = pd.read_csv(Path(spec.submodule_search_locations[0]) / "Data" / "benchmark_data" / f"{TARGET}.csv")
    test = raw[raw["split"] == "test"]
    assert entry["info"]["n_test"] == test["smiles"].nunique()
    assert entry["info"]["n_test_cliff"] == test.loc[test["cliff_mol"] == 1, "smiles"].nunique()
    assert entry["info"]["n_train"] + entry["info"]["n_val"] == raw.loc[raw["split"] == "train", "smiles"].nunique()
    for method in ("rf_morgan", "svm_ecfp"):
        run = entry["methods"][method]["per_seed"][0]
        assert 0.1 < run["rmse"] < 2.0 and 0.1 < run["rmse_cliff"] < 3.0
    summary = report["summary"]["moleculeace"]
    assert summary["rf_morgan"]["rmse_ratio_to_rf_morgan"] == pytest.approx(1.0)
    assert "CheMeleon (published)" in report["published"] and "published" in proc.stdout
