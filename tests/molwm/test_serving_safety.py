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
