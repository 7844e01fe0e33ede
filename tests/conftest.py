"""Shared fixtures: every test gets its own cache folder and MLflow store."""

from __future__ import annotations

import pytest
import torch

# tests are tiny; one thread avoids oversubscribing a 2-core machine
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test reads or writes the user's cache, MLflow store or card folders."""
    monkeypatch.setenv("MOLWM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MOLWM_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def local_csv_card(tmp_path):
    """A user-written card for a small local CSV, with a correct checksum."""
    import hashlib

    csv = tmp_path / "mini.csv"
    csv.write_text(
        "smiles,activity,name\n"
        "CCO,1.5,ethanol\n"
        "c1ccccc1O,2.0,phenol\n"
        "not_a_smiles,0.3,junk\n"
        "CC(=O)Oc1ccccc1C(=O)O,3.1,aspirin\n"
        ",0.1,blank\n"
        "C1CCNCC1,,piperidine\n"
    )
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    card = tmp_path / "cards" / "mini.yaml"
    card.parent.mkdir()
    card.write_text(
        "name: mini\n"
        "source:\n  kind: local\n  files:\n    - path: ../mini.csv\n"
        f"      sha256: {digest}\n"
        "columns:\n  smiles: smiles\n  id: name\n  targets: [activity]\n"
        "task:\n  type: regression\n  metric: rmse\n"
        "license: CC0-1.0\n"
        "citation: made up for tests\n"
    )
    return card
