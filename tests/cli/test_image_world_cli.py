"""pretrain (kind: image_world) on the shared time-course lab through the CLI, on a temporary SQLite store:
the held-out forecasts and their persistence baseline land in the run; the run resumes through the CLI, and
forecasting from it is refused in one line."""

from __future__ import annotations

import re

import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli


def test_image_world_pretrains_and_logs_its_heldout_report(tmp_path, capsys, repo_root, tiny_world_lab):
    from mlflow.tracking import MlflowClient

    objective = "raw"  # the pixel-space forecaster (the config's default, jepa, runs in the integration tier)
    assert main(["pretrain", "--config", str(repo_root / "configs/world/lab_images.yaml"),
                 f"data.lab={tiny_world_lab.path}", f"objective={objective}", "data.compound=morgan",
                 "image.dim=32", "image.layers=1", "image.heads=2", "image.image_size=32", "model.dim=32",
                 "model.heads=2", "model.depth=1", "max_steps=4", "batch_size=8", "warmup_steps=1",
                 "log_every=2", f"out_dir={tmp_path / 'run'}", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pretrained 4 steps" in out and re.search(r"^model_uri: None$", out, re.MULTILINE), out
    run_id = re.search(r"^run_id: (\S+)$", out, re.MULTILINE).group(1)
    run = MlflowClient().get_run(run_id)
    for key in ("test.truth_r2.k1", "test.truth_r2.k1.persistence", "test.truth_r2.k2"):
        assert key in run.data.metrics, sorted(run.data.metrics)
    assert run.data.tags["world.state"] == "images" and run.data.tags["objective"] == objective
    # the registry knows the kind, so --resume finds its run kind (image_world) and config in the checkpoint
    checkpoint = tmp_path / "run" / "last.pt"
    assert main(["pretrain", "--resume", str(checkpoint), "--no-progress", "--no-track"]) == 0
    assert "pretrained 4 steps" in capsys.readouterr().out
    code = main(["forecast", "--model", str(checkpoint), "--smiles", "CCO", "--doses", "1", "--times", "24",
                 "--output", str(tmp_path / "f.csv"), "--no-track"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "image-level world model" in err and "last.pt" in err, err

