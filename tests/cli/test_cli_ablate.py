"""`molwm ablate` end to end on a temporary SQLite store: nested runs, table, plots, baselines."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re

import pandas as pd
import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli


def test_ablate_tiny_runs_every_objective_probe_finetune_and_baseline(capsys, tmp_path, repo_root):
    from mlflow import MlflowClient

    out = tmp_path / "abl"
    assert main(["ablate", "--config", str(repo_root / "configs/ablate/graph_tiny.yaml"), "--no-progress",
                 f"out_dir={out}"]) == 0
    text = capsys.readouterr().out
    parent = re.search(r"^run_id: (\S+)$", text, re.M).group(1)
    table = pd.read_csv(out / "ablation.csv")
    encoders = set(table["encoder"])
    assert {"jepa-s0", "generative-s0", "contrastive-s0", "scratch", "rf_morgan", "rf_rdkit2d"} == encoders
    assert set(table["fraction"]) == {0.2, 1.0} and table["mean"].notna().all()
    # every fine-tune and forest of one label fraction used the same rows (identical split files)
    for _, g in table.groupby("fraction"):
        assert len({open(f).read() for f in g["split_file"]}) == 1
    splits = json.loads(open(table.loc[table["fraction"] == 0.2, "split_file"].iloc[0]).read())
    full = json.loads(open(table.loc[table["fraction"] == 1.0, "split_file"].iloc[0]).read())
    assert len(splits) == 2 and len(splits[0]["train"]) < len(full[0]["train"])
    assert splits[0]["test"] == full[0]["test"]
    for name in ("probes_vs_wall_time.png", "probes_vs_samples.png", "label_efficiency.png", "ablation.md"):
        assert (out / name).is_file()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(parent)
    exp = run.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    names = {c.info.run_name for c in children}
    assert {"pretrain-jepa-s0", "pretrain-generative-s0", "pretrain-contrastive-s0"} <= names
    pre = next(c for c in children if c.info.run_name == "pretrain-generative-s0")
    probes = client.get_metric_history(pre.info.run_id, "probe.freesolv.rmse")
    assert len(probes) >= 2  # every 3 steps and at the end
    samples = {c.info.run_name: c.data.metrics.get("samples_seen") for c in children
               if c.info.run_name.startswith("pretrain-")}
    assert set(samples.values()) == {192.0}  # equal data budget
    assert {a.path for a in client.list_artifacts(parent, "report")} >= {
        "report/ablation.csv", "report/label_efficiency.png", "report/probes_vs_wall_time.png"}


def test_ablate_refuses_an_unbounded_budget_and_unknown_objectives(capsys, tmp_path, repo_root):
    cfg = str(repo_root / "configs/ablate/graph_tiny.yaml")
    assert main(["ablate", "--config", cfg, "objectives=[jepa,mae]", "--no-track", "--no-progress"]) == 2
    assert "mae" in capsys.readouterr().err
    assert main(["ablate", "--config", cfg, "pretrain.max_steps=null", "pretrain.budget_samples=null",
                 "--no-track", "--no-progress"]) == 2
    assert "budget" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lab(tmp_path_factory, build_env):
    """``molwm sim generate --molecules 60 --image-size 48 --nuisance low --replicates 2``, once for both
    modalities (read only): replicates on two plates give the phenotypic-activity mAP its positives."""
    folder = tmp_path_factory.mktemp("ablate-lab")
    with build_env(folder), contextlib.redirect_stdout(io.StringIO()):
        assert main(["sim", "generate", "--molecules", "60", "--out", str(folder / "lab"), "--image-size",
                     "48", "--nuisance", "low", "--replicates", "2", "--no-progress"]) == 0
    return folder / "lab"


@pytest.mark.parametrize("modality", ["image", "assay"])
def test_ablate_image_and_assay_objectives_on_a_lab_with_probes_and_floors(capsys, tmp_path, repo_root, lab,
                                                                          modality):
    from mlflow import MlflowClient

    out = tmp_path / "abl"
    extra = [] if modality == "image" else [
        "modality=assay", "multimodal.modalities=[assay]", "multimodal.probes.modality=assay",
        "multimodal.probes.targets=[mechanism]"]
    assert main(["ablate", "--config", str(repo_root / "configs/ablate/image_tiny.yaml"), "--no-progress",
                 f"out_dir={out}", f"multimodal.data.lab={lab}", *extra]) == 0
    text = capsys.readouterr().out
    parent = re.search(r"^run_id: (\S+)$", text, re.M).group(1)
    table = pd.read_csv(out / "ablation.csv")
    floors = {"untrained", "raw_features"} | ({"pixel_stats"} if modality == "image" else set())
    assert set(table["encoder"]) == {"jepa", "generative", "contrastive_views"} | floors
    # R² of the truth, mAP of phenotypic consistency; activity mAP for images (the DMSO sites are images)
    targets = ({"mechanism", "state", "consistency", "activity"} if modality == "image"
               else {"mechanism", "consistency"})
    assert set(table["dataset"]) == {f"lab {modality} -> {t}" for t in targets} and table["mean"].notna().all()
    if modality == "image":
        maps = table[table["metric"] == "map"]
        assert set(maps["encoder"]) == set(table["encoder"]) and maps["mean"].between(0, 1).all()
    for name in ("probes_vs_wall_time.png", "probes_vs_samples.png", "ablation.md"):
        assert (out / name).is_file()
    assert not (out / "label_efficiency.png").exists()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    pretrains = {c.info.run_name: c for c in children}
    assert set(pretrains) == {"pretrain-jepa-s0", "pretrain-generative-s0", "pretrain-contrastive_views-s0"}
    assert {c.data.tags["modalities"] for c in children} == {modality}
    assert {c.data.metrics["samples_seen"] for c in children} == {96.0}  # equal data budget
    history = client.get_metric_history(pretrains["pretrain-generative-s0"].info.run_id, "probe.mechanism.r2")
    assert len(history) >= 2  # every 3 steps and at the end
    assert "floor.untrained.probe.mechanism.r2" in client.get_run(parent).data.metrics


def test_ablate_image_needs_a_multimodal_run_and_lab_probes(capsys, repo_root):
    cfg = str(repo_root / "configs/ablate/image_tiny.yaml")
    assert main(["ablate", "--config", cfg, "multimodal=null", "--no-track", "--no-progress"]) == 2
    assert "multimodal" in capsys.readouterr().err
    assert main(["ablate", "--config", cfg, "multimodal.probes=null", "--no-track", "--no-progress"]) == 2
    assert "probes" in capsys.readouterr().err
    assert main(["ablate", "--config", cfg, "objectives=[jepa,contrastive]", "--no-track", "--no-progress"]) == 2
    assert "contrastive" in capsys.readouterr().err
