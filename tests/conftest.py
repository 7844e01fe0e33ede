"""Shared fixtures: every test gets its own cache folder and MLflow store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurizers.molecule import featurize_arrays
from molwm.data.multimodal import MultimodalData
from molwm.jepa.multimodal import MultimodalJEPAConfig

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


# ---- a tiny multimodal table built in memory (graphs, a sparse assay panel, 5-channel sites) ----

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "C1CCNCC1",
          "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C(O)c1ccccc1", "CCCCCCCC", "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
          "CC(=O)Nc1ccc(O)cc1", "c1ccc2ccccc2c1", "OCC(O)CO"]


def _tiny_data(n_assays: int = 5, size: int = 24, seed: int = 0) -> MultimodalData:
    """24 samples: every modality pattern occurs (graph only, assays only, image only, pairs, all three)."""
    rng = np.random.default_rng(seed)
    smiles = SMILES * 2
    n = len(smiles)
    arrays, _ = featurize_arrays(smiles)
    graph_of = np.arange(n)
    graph_of[[3, 7]] = -1  # assays/images without a molecule
    values = rng.normal(size=(n, n_assays)).astype(np.float32)
    values[rng.random((n, n_assays)) < 0.4] = np.nan
    values[:4] = np.nan  # graph (+ image) only
    # the image depends on the molecule, so cross-modal prediction has something to learn
    base = np.stack([np.full((5, size, size), (i % len(SMILES)) / len(SMILES), np.float32) for i in range(n)])
    images = (base + 0.1 * rng.normal(size=base.shape)).astype(np.float16)
    present = np.ones((n, 5), dtype=bool)
    present[0, 3] = False  # sample 0's site lacks the AGP channel
    image_of = np.where(np.arange(n) % 2 == 0, np.arange(n), -1)
    return MultimodalData(arrays, graph_of, values, [f"A{i}" for i in range(n_assays)], images, present,
                          image_of, smiles, ["test"] * n, smiles)


def _tiny_config(dim: int = 32, size: int = 24) -> MultimodalJEPAConfig:
    """A few-thousand-parameter model for tests."""
    cfg = MultimodalJEPAConfig(dim=dim)
    cfg.graph.dim = cfg.assay.dim = cfg.image.dim = dim
    cfg.graph.layers, cfg.assay.layers, cfg.image.layers = 2, 1, 1
    cfg.image.image_size, cfg.image.patch = size, 6
    cfg.predictor.dim, cfg.predictor.layers = 32, 1
    return cfg


@pytest.fixture
def mm_data():
    """24 samples covering every modality pattern; see ``_tiny_data``."""
    return _tiny_data()


@pytest.fixture
def mm_config():
    """A tiny multimodal JEPA config (dim 32, 24-pixel sites, 6-pixel patches)."""
    return _tiny_config()
