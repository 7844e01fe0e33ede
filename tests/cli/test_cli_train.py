"""pretrain -> finetune -> registered model -> query, through the CLI, on a temporary SQLite store."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli


def _chain(out: str) -> tuple[str, str]:
    run_id = re.search(r"^run_id: (\S+)$", out, re.M).group(1)
    model_uri = re.search(r"^model_uri: (\S+)$", out, re.M).group(1)
    return run_id, model_uri


def test_pretrain_finetune_register_query(capsys, tmp_path, repo_root):
    from mlflow import MlflowClient

    from molwm.query import WorldModel

    assert main(["pretrain", "--config", str(repo_root / "configs/pretrain/tiny.yaml"), "--no-progress",
                 f"out_dir={tmp_path / 'pre'}"]) == 0
    pre_run, pre_uri = _chain(capsys.readouterr().out)
    assert pre_uri.startswith("models:/")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(pre_run)
    assert "loss" in run.data.metrics and "health.rankme" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(pre_run, "plots")}
    assert {"plots/loss_curve.png", "plots/embedding_health.png"} <= arts

    assert main(["finetune", "--config", str(repo_root / "configs/finetune/tiny.yaml"), "--from", pre_uri,
                 "--seeds", "0,1", "--register", "tiny_freesolv", "mode=full", "alias=champion", "--no-progress",
                 f"out_dir={tmp_path / 'ft'}"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^test_rmse: [\d.]+ ± [\d.]+ over seeds \[0, 1\]$", out, re.M)
    ft_run, ft_uri = _chain(out)
    children = client.search_runs([client.get_run(ft_run).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{ft_run}'")
    assert len(children) == 2
    version = client.get_model_version_by_alias("tiny_freesolv", "champion")
    assert str(version.version) == "1"
    arts = {a.path for a in client.list_artifacts(ft_run)}
    assert "split.json" in arts

    model = WorldModel.load("models:/tiny_freesolv@champion")
    frame = model.predict(["CCO", "C1CC(", "c1ccccc1O"])
    assert frame["status"].tolist()[0] == "ok" and "parentheses" in frame["status"].tolist()[1]
    assert np.isfinite(frame["hydration_free_energy_std"].iloc[0])


def test_training_errors_are_messages(capsys, tmp_path, repo_root):
    assert main(["finetune", "--config", str(repo_root / "configs/finetune/tiny.yaml"), "mode=linear_probe",
                 "--no-track"]) == 2
    assert "needs from_model" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(tmp_path / "missing.pt"), "--no-track"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
