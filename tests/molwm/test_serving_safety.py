"""A served model cannot be turned against its host: models are logged from code (no pickle), and a
checkpoint swapped for a pickle that runs code is refused without running it."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import pytest

from molwm.checkpoints import CheckpointError
from molwm.packaging import package_for
from molwm.tracking import make_tracker

pytestmark = pytest.mark.integration


class _Payload:
    """Unpickling this runs ``os.system``: what a crafted "checkpoint" would do to a host that unpickles it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _logged_model(checkpoint: Path, tmp_path: Path) -> Path:
    tracker = make_tracker(True, experiment="serving-safety")
    with tracker.run("log"):
        uri = tracker.log_model(checkpoint, package_for("property_model"), name="model")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "model")))


def test_a_logged_model_holds_code_and_a_checkpoint_never_a_pickle(finetune_run, tmp_path):
    local = _logged_model(finetune_run.checkpoint, tmp_path)
    assert not list(local.rglob("*.pkl"))
    assert (local / "pyfunc_model.py").is_file()
    assert "python_model.pkl" not in (local / "MLmodel").read_text()
    served = mlflow.pyfunc.load_model(str(local)).predict({"smiles": ["CCO"]})
    assert list(served["status"]) == ["ok"]


def test_a_checkpoint_replaced_by_a_code_running_pickle_is_refused_unrun(finetune_run, tmp_path):
    local = _logged_model(finetune_run.checkpoint, tmp_path)
    (ckpt,) = list((local / "artifacts").rglob("*.pt"))
    marker = tmp_path / "pwned"
    with open(ckpt, "wb") as fh:
        pickle.dump({"format": 1, "kind": "property_model", "model": _Payload(marker)}, fh)
    with pytest.raises(CheckpointError, match="unreadable"):
        mlflow.pyfunc.load_model(str(local))
    assert not marker.exists()  # weights_only=True: the payload never ran
    shutil.rmtree(local)


def _plant(folder: Path, marker: Path) -> None:
    """Append a command to a model folder's stored models-from-code file, as an attacker with write access
    to the registry would."""
    with open(folder / "pyfunc_model.py", "a") as fh:
        fh.write(f"\nimport os\nos.system('touch {marker}')\n")


def test_serving_and_loading_never_run_code_stored_with_a_model(finetune_run, tmp_path, monkeypatch):
    """Issue 26 item 1: code planted in a logged model's stored pyfunc_model.py (in the store, served by
    URI, and in a local model folder) is refused in one line naming both digests, and never runs."""
    from mlflow.models import Model

    from molwm.api import load_model
    from molwm.serving import MODEL_PATH_ENV, create_app, serve, served_model

    tracker = make_tracker(True, experiment="serving-code")
    with tracker.run("log"):
        uri = tracker.log_model(finetune_run.checkpoint, package_for("property_model"), name="model")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "local")))
    # an untouched model serves through molwm's own loader
    answer = served_model(local).predict({"smiles": ["CCO", "not a smiles"]})
    assert list(answer["status"])[0] == "ok" and list(answer["status"])[1] != "ok"
    stored = Path(Model.load(str(local / "MLmodel")).artifact_path)  # the copy inside the store
    assert (stored / "pyfunc_model.py").is_file()
    marker = tmp_path / "pwned"
    _plant(stored, marker)
    _plant(local, marker)
    for attempt in (lambda: serve(uri, port=1), lambda: serve(str(local), port=1), lambda: load_model(uri),
                    lambda: load_model(local), lambda: served_model(local)):
        with pytest.raises(CheckpointError, match=r"stored code pyfunc_model.py \(sha256 [0-9a-f]{64}\) differs "
                                                  r"from the installed molwm's \(sha256 [0-9a-f]{64}\)"):
            attempt()
    monkeypatch.setenv(MODEL_PATH_ENV, str(local))
    with pytest.raises(CheckpointError, match="refusing"):
        create_app()  # what the uvicorn worker runs
    assert not marker.exists()
