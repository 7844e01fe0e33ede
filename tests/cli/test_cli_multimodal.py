"""molwm sim generate -> multimodal pretrain (JEPA and contrastive) -> query assay values, on a temporary store."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli



def _chain(out: str) -> tuple[str, str]:
    return (re.search(r"^run_id: (\S+)$", out, re.M).group(1), re.search(r"^model_uri: (\S+)$", out, re.M).group(1))


def test_sim_then_multimodal_pretrain_then_query(capsys, tmp_path, repo_root):
    from mlflow import MlflowClient

    from molwm.query import WorldModel

    tiny = str(repo_root / "configs/pretrain/multimodal_tiny.yaml")
    lab = tmp_path / "lab"
    assert main(["sim", "generate", "--molecules", "40", "--out", str(lab), "--image-size", "48",
                 "--no-progress"]) == 0
    assert "synthetic lab" in capsys.readouterr().out
    assert main(["pretrain", "--config", tiny, f"data.lab={lab}", "max_steps=6", "checkpoint_every=3",
                 f"out_dir={tmp_path / 'mm'}", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^data: [\d,]+ samples \([\d,]+ graphs, [\d,]+ with assays, \d+ images\), 0 rejected$", out, re.M)
    run_id, uri = _chain(out)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.data.tags["molwm.synthetic"] == "true" and run.data.tags["objective"] == "jepa"
    assert {"loss", "loss.image", "health.rankme"} <= set(run.data.metrics)
    # the query returns predicted assay values (lab and MoleculeACE assays) for candidates
    model = WorldModel.load(uri)
    frame = model.predict(["CC(=O)Nc1ccc(O)cc1", "C1CC("])
    assert frame["status"].tolist()[0] == "ok" and frame["status"].tolist()[1] != "ok"
    assert {"SIM_A00", "CHEMBL1862_Ki", "SIM_A00_probe_rmse"} <= set(frame.columns)
    assert "SIM_A00_std" not in frame.columns  # a per-assay constant is not named as a per-molecule spread
    assert frame["SIM_A00_probe_rmse"].dropna().nunique() == 1
    assert np.isfinite(frame.loc[0, "SIM_A00"]) and np.isnan(frame.loc[1, "SIM_A00"])
    assert model.embed(["CCO"]).shape == (1, 64)

    # the contrastive baseline runs through the same command and loads as an encoder
    assert main(["pretrain", "--config", tiny, f"data.lab={lab}", "objective=contrastive", "data.moleculeace=false",
                 "max_steps=4", f"out_dir={tmp_path / 'cl'}", "--no-progress"]) == 0
    _, cl_uri = _chain(capsys.readouterr().out)
    assert WorldModel.load(cl_uri).embed(["CCO", "c1ccccc1"]).shape == (2, 64)


def test_sim_refuses_a_non_empty_folder(capsys, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert main(["sim", "generate", "--molecules", "5", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "molwm: error" in capsys.readouterr().err
