"""molwm.tracking against a real (temporary SQLite) MLflow store."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from molwm.tracking import MLflowTracker, NullTracker, default_tracking_uri, flatten, make_tracker

pytestmark = pytest.mark.integration


@dataclass
class Cfg:
    name: str = "x"
    lr: float = 0.1


def test_default_uri_is_local_sqlite_unless_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team-server:5000")
    assert default_tracking_uri() == "http://team-server:5000"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": {}}) == {"a.b": 1, "a.c.d": 2, "e": {}}


def test_mlflow_tracker_logs_everything(tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = MLflowTracker(experiment="unit")
    art = tmp_path / "rejects.csv"
    art.write_text("index,smiles,code,reason\n")
    frame = pd.DataFrame({"smiles": ["CCO", "CCN"], "y": [1.0, 2.0]})
    with tracker.run("r1", tags={"dataset": "mini"}) as run_id:
        tracker.log_config(Cfg())
        tracker.log_metrics({"loss": 1.0}, step=0)
        tracker.log_metrics({"loss": 0.5}, step=1)
        tracker.log_artifact(art, "data")
        tracker.log_dataset(frame, name="mini", source=art.as_uri(), digest="f" * 64, targets="y")
    client = MlflowClient(tracker.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.params == {"name": "x", "lr": "0.1"}
    assert run.data.tags["dataset"] == "mini"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    paths = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "data")}
    assert {"config.yaml", "data/rejects.csv"} <= paths
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "mini" and inputs[0].dataset.digest == "f" * 36
    assert str(tmp_path) in tracker.tracking_uri  # the conftest's temporary store


def test_make_tracker():
    assert isinstance(make_tracker(False), NullTracker)
    assert isinstance(make_tracker(True, "e"), MLflowTracker)
