"""The world model on real cells through the CLI (issue 27, part 4): ``molwm pretrain`` on LINCS Cell Painting
batch 2 (the compact copy inside molwm, 40 compounds), then ``molwm forecast`` by cell line and from a plate
map whose rows carry their own dose, time and cell line, with calibrated intervals, and ``molwm plan`` to a
target relative cell count."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli


@pytest.fixture
def lincs_model(tmp_path, capsys, repo_root) -> str:
    assert main(["pretrain", "--config", str(repo_root / "configs/world/lincs_tiny.yaml"),
                 f"out_dir={tmp_path / 'world'}", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^data: \d+ conditions .*, 40 drugs, [\d,]+ observations \(real\)$", out, re.M), out
    return re.search(r"^model_uri: (\S+)$", out, re.M).group(1)


def test_real_cell_forecasts_by_line_and_plate_map_with_calibrated_intervals_and_a_plan(lincs_model, tmp_path,
                                                                                      capsys, repo_root):
    """One trained model (training is most of the time) for every command."""
    from mlflow.tracking import MlflowClient

    run = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("molwm-world").experiment_id])[0]
    assert run.data.metrics["data.rejected_wells"] == 264  # wells with no structure: counted, never silent
    out = tmp_path / "by_line.csv"
    assert main(["forecast", "--model", lincs_model, "--smiles", "CC(=O)Nc1ccc(O)cc1", "--doses", "0.1,1,10",
                 "--times", "6,24,48", "--cell-line", "MCF7", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model trained on real measurements: lincs (A549, MCF7, U2OS)" in printed
    frame = pd.read_csv(out)
    assert len(frame) == 9 and set(frame["cell_line"]) == {"MCF7"}
    assert (frame["rel_count_lo"] <= frame["rel_count"]).all() and (frame["rel_count"] <= frame["rel_count_hi"]).all()

    plate = tmp_path / "plate.csv"
    pd.DataFrame({"well": ["A01", "A02", "A03", "A04"],
                  "smiles": ["CC(=O)Nc1ccc(O)cc1", "CC(=O)Nc1ccc(O)cc1", "CCO", "not a smiles"],
                  "dose_uM": [0.1, 3.0, 10.0, 1.0], "time_h": [24, 48, 6, 24],
                  "cell_line": ["A549", "U2OS", "HeLa", "A549"]}).to_csv(plate, index=False)
    rows = tmp_path / "plate_forecast.csv"
    assert main(["forecast", "--model", lincs_model, "--input", str(plate), "--output", str(rows)]) == 0
    assert "forecast 4 rows at their own dose, time and cell line (2 rejected)" in capsys.readouterr().out
    got = pd.read_csv(rows)
    assert got["well"].tolist() == ["A01", "A02", "A03", "A04"]  # input order and columns kept
    assert got["status"].tolist()[:2] == ["ok", "ok"]
    assert got["status"][2].startswith("unknown_context: 'HeLa'") and got["status"][3].startswith("invalid_smiles")
    assert np.isfinite(got.loc[:1, ["rel_count", "rel_count_lo", "rel_count_hi"]].to_numpy()).all()
    assert got["uncertainty"][0].startswith("conformal")  # calibrated on drugs kept out of training
    # a dose between the trained ones (3 uM) is answered: log dose is continuous

    # plan: which candidate and dose brings U2OS to half the vehicle's cell count at 48 h
    out = tmp_path / "plan.csv"
    assert main(["plan", "--model", lincs_model, "--candidates", str(repo_root / "docs/examples/candidates.smi"),
                 "--target", "rel_count=0.5", "--time", "48", "--doses", "0.1,1,10", "--cell-line", "U2OS",
                 "--output", str(out), "--top", "3"]) == 0
    assert "cell line U2OS" in capsys.readouterr().out
    table = pd.read_csv(out)
    ok = table.dropna(subset=["distance"])
    assert np.allclose(ok["distance"], (ok["rel_count"] - 0.5).abs(), atol=1e-6)
    assert ok["distance"].is_monotonic_increasing
    assert main(["plan", "--model", lincs_model, "--candidates", str(repo_root / "docs/examples/candidates.smi"),
                 "--target", "viability=0.5", "--time", "48", "--output", str(tmp_path / "p2.csv")]) == 2
    assert "'viability' is not a read-out of this model (rel_count)" in capsys.readouterr().err
    assert main(["forecast", "--model", lincs_model, "--smiles", "CCO", "--output", str(tmp_path / "x.csv")]) == 2
    assert "--doses and --times are required" in capsys.readouterr().err
