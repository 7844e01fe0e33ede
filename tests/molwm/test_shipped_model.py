"""Models shipped inside the package (``molwm:base``): loaded by name wherever a model URI is accepted,
their digest checked, and the shipped base model trained without the benchmark sets' molecules."""

from __future__ import annotations

import shutil

import pytest

import molwm.weights as weights
from molwm.api import load_model
from molwm.checkpoints import load_checkpoint
from molwm.kinds import load_encoder
from molwm.query import MoleculeModel
from molwm.weights import SHIPPED, ShippedModelError, sha256

@pytest.fixture
def tiny_shipped(graph_pretrain_run, tmp_path, monkeypatch):
    """The tiny pretraining checkpoint shipped as ``molwm:tiny`` from a temporary folder."""
    path = tmp_path / "tiny.pt"
    shutil.copy(graph_pretrain_run.checkpoint, path)
    monkeypatch.setattr(weights, "FOLDER", tmp_path)
    monkeypatch.setitem(weights.SHIPPED, "tiny", ("tiny.pt", sha256(path)))
    return path


@pytest.mark.integration
def test_a_shipped_model_loads_by_name_everywhere(tiny_shipped):
    assert load_encoder("molwm:tiny").config.dim == 32
    assert MoleculeModel.load("molwm:tiny").embed(["CCO"]).shape[0] == 1
    assert type(load_model("molwm:tiny")).__name__ == "MoleculeModel"


@pytest.mark.integration
def test_a_changed_shipped_file_is_refused(tiny_shipped):
    with open(tiny_shipped, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ShippedModelError, match="not the pinned"):
        load_encoder("molwm:tiny")


@pytest.mark.unit
def test_an_unknown_shipped_name_says_what_is_shipped():
    with pytest.raises(ShippedModelError, match="unknown shipped model 'molwm:nope'"):
        load_encoder("molwm:nope")


@pytest.mark.unit
@pytest.mark.skipif("base" not in SHIPPED, reason="no base model pinned in molwm/weights")
def test_the_base_model_loads_offline_and_never_saw_the_benchmark_molecules():
    path = weights.shipped_path("molwm:base")
    assert path.stat().st_size < 8 * 2**20  # a few MB, inside the package
    state = load_checkpoint(path)
    # issue 17, part 6: benchmarks/leakage.py measures the overlap these exclusions remove (docs/benchmarks.md)
    assert {"solubility", "freesolv", "b3db_classification", "moleculeace"} <= set(state["config"]["exclude"])
    assert set(state) >= {"kind", "config", "spec", "model", "encoder_prefix", "shipped"}
    encoder = load_encoder("molwm:base")
    assert encoder.config.dim == state["config"]["model"]["encoder"]["dim"]
    assert MoleculeModel.load("molwm:base").embed(["CCO", "c1ccccc1"]).shape == (2, encoder.dim)
