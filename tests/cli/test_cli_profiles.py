"""molwm pretrain on a real well-profile set (graph + profile) through the CLI, on a temporary store."""

from __future__ import annotations

import os
import re

import pytest

from molwm.checkpoints import load_checkpoint
from molwm.cli import main

pytestmark = pytest.mark.cli


def test_pretrain_graph_and_profile_on_the_lincs_plate(capsys, tmp_path, repo_root):
    from mlflow import MlflowClient

    from molwm.query import WorldModel

    tiny = str(repo_root / "configs/pretrain/profiles_tiny.yaml")
    assert main(["pretrain", "--config", tiny, f"out_dir={tmp_path / 'p'}", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^data: 306 samples \(282 graphs, 0 with assays, 0 images, 306 well profiles\), 0 rejected$",
                     out, re.MULTILINE)
    run_id = re.search(r"^run_id: (\S+)$", out, re.MULTILINE).group(1)
    uri = re.search(r"^model_uri: (\S+)$", out, re.MULTILINE).group(1)
    run = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run.data.tags["modalities"] == "graph,profile" and "loss.profile" in run.data.metrics
    state = load_checkpoint(tmp_path / "p" / "last.pt")
    assert state["config"]["model"]["modality_settings"]["profile"]["features"] == 454
    assert state["profile_stats"]["card"] == "lincs_sq00015054_profiles_compact"
    assert WorldModel.load(uri).embed(["CCO"]).shape == (1, 32)


def test_the_molecule_image_objective_refuses_a_run_without_images(capsys, tmp_path, repo_root):
    tiny = str(repo_root / "configs/pretrain/profiles_tiny.yaml")
    assert main(["pretrain", "--config", tiny, "objective=contrastive", f"out_dir={tmp_path}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "objective contrastive needs the modalities ['image']" in err and len(err.strip().splitlines()) == 1
