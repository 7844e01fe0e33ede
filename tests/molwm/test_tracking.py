"""molwm.tracking against a real (temporary SQLite) MLflow store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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



def _run_through_an_outage(tracker, checkpoint: Path, down: list) -> tuple[str | None, str]:
    from molwm.packaging import package_for

    with tracker.run("outage") as run_id:
        tracker.log_metrics({"loss": 1.0}, step=0)
        down[0] = True
        kept = tracker.log_model(checkpoint, package_for("property_model"), registered_name="kept_model",
                                 alias="champion")
        checkpoint.write_bytes(b"a later run's checkpoint")  # the outbox logs the copy it kept
        down[0] = False
        tracker.log_metrics({"loss": 0.5}, step=1)
    return kept, run_id


def test_a_model_logged_while_the_store_is_down_is_logged_into_its_run_when_it_answers(finetune_run, tmp_path,
                                                                                        monkeypatch):
    import hashlib

    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    from molwm import tracking
    from molwm.outbox import StoreUnreachable

    down, real = [False], tracking.store_call

    def store_call(uri, kind, payload):  # the store as seen from the run: unreachable while down[0]
        if down[0]:
            raise StoreUnreachable("connection refused")
        return real(uri, kind, payload)

    monkeypatch.setattr(tracking, "store_call", store_call)
    monkeypatch.setenv("MOLWM_TRACKING_OUTBOX", str(tmp_path / "outbox"))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(finetune_run.checkpoint.read_bytes())
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    tracker = MLflowTracker(experiment="model-outage", retry_seconds=0.0)
    with pytest.warns(UserWarning, match=r"unreachable 1 time\(s\).*1 models sent late.*models logged late: "
                                         r"models:/m-") as caught:
        kept, run_id = _run_through_an_outage(tracker, checkpoint, down)
    assert kept is None and "NOT logged" not in str(caught[-1].message)
    client = MlflowClient(tracker.tracking_uri)
    version = client.get_model_version_by_alias("kept_model", "champion")
    assert version.run_id == run_id  # into the run it was logged from
    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/kept_model@champion")
    (logged,) = Path(local).rglob("*.pt")
    assert hashlib.sha256(logged.read_bytes()).hexdigest() == sha
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1]
