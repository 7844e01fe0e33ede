"""pretrain (kind: world) on a synthetic time-course lab -> forecast / plan / pyfunc, through the CLI on a
temporary SQLite store (``molwm sim generate`` itself is tested in tests/molwm/sim/test_sim.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli



def _one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err and err.startswith("molwm: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def _train_world_model(tmp_path, capsys, repo_root, lab) -> str:
    """A 20-step world model trained on ``lab`` (``tiny_world_lab``: 6 drugs, 2 doses, 3 time points); its
    model URI."""
    assert main(["pretrain", "--config", str(repo_root / "configs/world/lab_tiny.yaml"),
                 f"data.lab={lab.path}", "max_steps=20", f"out_dir={tmp_path / 'world'}",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^data: \d+ conditions \(\d+ train, \d+ held out\), 6 drugs, [\d,]+ observations "
                     r"\(synthetic\)$", out, re.M), out
    uri = re.search(r"^model_uri: (\S+)$", out, re.M).group(1)
    assert uri.startswith("models:/")
    return uri


def test_world_model_end_to_end(tmp_path, capsys, repo_root, tiny_world_lab):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from molwm.errors import RequestError

    world_uri = _train_world_model(tmp_path, capsys, repo_root, tiny_world_lab)

    # forecast: 2 compounds x 2 doses x 2 times, with a plot
    assert main(["forecast", "--model", world_uri, "--smiles", "CCO", "c1ccccc1O", "--doses", "1,10",
                 "--times", "8,24", "--output", str(tmp_path / "out.csv"), "--plot"]) == 0
    assert "forecast 2 compounds x 2 doses x 2 times" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "out.csv")
    assert len(frame) == 8
    assert list(frame.columns[:5]) == ["compound", "dose_uM", "time_h", "cell_line", "latent_spread"]
    assert set(frame["cell_line"]) == {"sim"}  # the synthetic lab's one context, named in every row
    assert sorted(set(zip(frame["compound"], frame["dose_uM"], frame["time_h"]))) == sorted(
        (c, d, t) for c in ("CCO", "c1ccccc1O") for d in (1.0, 10.0) for t in (8.0, 24.0))
    assert "Cells_Count" in frame.columns and "Cells_Count_std" in frame.columns
    assert "true_log_count" in frame.columns  # the hidden-state probe of the synthetic lab
    assert np.isfinite(frame.drop(columns=["compound", "cell_line"]).to_numpy(float)).all()
    assert (tmp_path / "out.png").stat().st_size > 0

    # plan: the reference compound itself, at the reference dose, is at distance 0
    (tmp_path / "cands.smi").write_text("c1ccccc1O\nCCO\nC1CC(\nCCN\n")
    assert main(["plan", "--model", world_uri, "--target", "CCO@10", "--candidates",
                 str(tmp_path / "cands.smi"), "--time", "24", "--output", str(tmp_path / "plan.csv")]) == 0
    err = capsys.readouterr().err
    assert "rejected: candidate 2 'C1CC(': not a valid SMILES" in err
    table = pd.read_csv(tmp_path / "plan.csv")
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert table.loc[0, "compound"] == "CCO" and table.loc[0, "dose_uM"] == 10.0
    assert table.loc[0, "distance"] < 1e-4
    assert (table.loc[1:2, "distance"] > 1e-3).all()
    assert table.loc[3, "compound"] == "C1CC(" and np.isnan(table.loc[3, "score"])
    assert (tmp_path / "plan.png").stat().st_size > 0

    # the MLflow pyfunc: one row per request row, each with its own status
    model = mlflow.pyfunc.load_model(world_uri)
    answer = model.predict(pd.DataFrame({"smiles": ["CCO", "bad((", "CCO"], "dose_uM": [1.0, 1.0, -1.0],
                                         "time_h": [24.0, 24.0, 24.0]}))
    assert len(answer) == 3
    status = answer["status"].tolist()
    assert status[0] == "ok" and status[1].startswith("invalid_smiles") and status[2].startswith("bad_dose")
    assert np.isfinite(float(answer.loc[0, "Cells_Count"])) and answer.loc[1, "Cells_Count"] is None
    # the REST answer matches the CLI forecast of the same (compound, dose, time)
    cli = frame[(frame["compound"] == "CCO") & (frame["dose_uM"] == 1.0) & (frame["time_h"] == 24.0)]
    assert float(answer.loc[0, "Cells_Count"]) == pytest.approx(float(cli["Cells_Count"].iloc[0]), rel=1e-4)
    no_time = pd.DataFrame({"smiles": ["CCO"], "dose_uM": [1.0]})
    with pytest.raises(MlflowException, match=r"missing inputs \['time_h'\]"):  # the logged signature
        model.predict(no_time)
    with pytest.raises(RequestError, match=r"needs columns smiles, dose_uM, time_h \(missing: time_h\)"):
        model.unwrap_python_model().model.answer(no_time)  # molwm's own check behind it
    with pytest.raises(MlflowException, match=r"needs columns smiles, dose_uM, time_h \(missing: time_h\)"):
        model.unwrap_python_model().predict(None, no_time)  # served as a 400 with that message

    # requests this model cannot answer: exit code 2, one line, no traceback
    capsys.readouterr()  # whatever MLflow said while loading
    assert main(["forecast", "--model", world_uri, "--smiles", "CCO", "--doses", "1", "--times", "0,24",
                 "--output", "x.csv", "--no-track"]) == 2
    _one_line_error(capsys.readouterr().err, "forecast times must be after the start state at 0 h")
    (tmp_path / "c.smi").write_text("CCO\n")
    assert main(["plan", "--model", world_uri, "--target", "nonsense", "--candidates",
                 str(tmp_path / "c.smi"), "--time", "24", "--output", "p.csv", "--no-track"]) == 2
    _one_line_error(capsys.readouterr().err, "give a .npy embedding or SMILES@DOSE")
    assert not Path("x.csv").exists() and not Path("p.csv").exists()


def test_world_cli_errors_are_one_line_messages(tmp_path, capsys, repo_root):
    from molwm.checkpoints import save_checkpoint

    graph = save_checkpoint({"kind": "graph_jepa", "config": {}}, tmp_path / "graph.pt")
    assert main(["forecast", "--model", str(graph), "--smiles", "CCO", "--doses", "1", "--times", "24",
                 "--output", "x.csv", "--no-track"]) == 2
    _one_line_error(capsys.readouterr().err, "not a world model", "graph_jepa")
    assert main(["plan", "--model", str(graph), "--target", "CCO@10", "--candidates",
                 str(tmp_path / "none.smi"), "--time", "24", "--output", "p.csv", "--no-track"]) == 2
    _one_line_error(capsys.readouterr().err, "not a world model")
    assert main(["pretrain", "--config", str(repo_root / "configs/world/lab_tiny.yaml"),
                 f"data.lab={tmp_path}/nolab", "--no-track", "--no-progress"]) == 2
    _one_line_error(capsys.readouterr().err, "nolab: not a synthetic lab (no manifest.json)")
    assert not Path("x.csv").exists() and not Path("p.csv").exists()
