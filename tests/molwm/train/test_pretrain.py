"""Pretraining loop: exact resume, MLflow history without duplicates, NaN guard, bad checkpoints."""

from __future__ import annotations

import pytest
import torch

from molwm.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from molwm.config import load_config
from molwm.train.common import TrainingDiverged, lr_at
from molwm.train.pretrain import PretrainConfig, run_pretrain

pytestmark = pytest.mark.integration


@pytest.fixture
def tiny_cfg(repo_root, tmp_path):
    """``tiny_cfg(name, **overrides)``: configs/pretrain/tiny.yaml on the CPU, writing to this test's ``name``
    folder. The same settings as ``graph_pretrain_run`` (tests/conftest.py), which is that run done once."""
    def make(name, **over):
        # device=cpu: exact resume is a CPU guarantee (GPU scatter-adds are not bit-reproducible)
        items = [f"out_dir={tmp_path / name}", f"cache_dir={tmp_path / 'cache'}", "device=cpu"]
        items += [f"{k}={v}" for k, v in over.items()]
        return load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml", items)

    return make


def test_resume_gives_the_same_weights_and_no_duplicate_metrics(graph_pretrain_run, tiny_cfg):
    from mlflow.tracking import MlflowClient

    from molwm.tracking import MLflowTracker

    full = graph_pretrain_run  # the uninterrupted run
    tracker = MLflowTracker("resume-test")
    # interrupted after step 4: the last checkpoint is at step 3, steps 3 is redone on resume
    first = run_pretrain(tiny_cfg("part"), tracker, progress=False, stop_after=4)
    assert load_checkpoint(first.checkpoint)["step"] == 3
    resumed = run_pretrain(tiny_cfg("ignored"), tracker, resume=first.checkpoint, progress=False)
    assert resumed.run_id == first.run_id
    a = load_checkpoint(full.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    history = MlflowClient(tracker.tracking_uri).get_metric_history(first.run_id, "loss")
    steps = [m.step for m in history]
    assert steps == sorted(set(steps)) == [1, 3, 5]


def test_a_checkpoint_in_the_layout_before_the_resume_block_resumes_the_same(graph_pretrain_run, tiny_cfg):
    from molwm.checkpoints import RESUME_KEYS, resume_block, without_resume

    first = run_pretrain(tiny_cfg("flat"), progress=False, stop_after=4)
    state = load_checkpoint(first.checkpoint)
    block = resume_block(state)
    assert set(block) >= {"step", "optimizer", "run_id", "history", "pending", "elapsed"}
    assert "optimizer" not in state  # resuming keys live in the block only
    shipped = without_resume(state)
    assert "resume" not in shipped and shipped["model"] is state["model"] and shipped["step"] == 3
    flat = {k: v for k, v in state.items() if k != "resume"} | {k: block[k] for k in RESUME_KEYS if k in block}
    save_checkpoint(flat, first.checkpoint)  # what molwm wrote before the block existed
    resumed = run_pretrain(tiny_cfg("ignored"), resume=first.checkpoint, progress=False)
    a = load_checkpoint(graph_pretrain_run.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(CheckpointError, match="no run to resume"):
        resume_block(shipped | {"resume": None})


def test_first_step_checks_every_gradient_and_logs_health(graph_pretrain_run):
    result = graph_pretrain_run  # the run's first step checked every gradient (or it would have raised)
    assert "health.rankme" in result.history and "health.std_min" in result.history
    assert result.history["loss"][-1][1] == pytest.approx(result.final_loss, rel=1e-5)


def test_nan_guard_stops_with_the_last_good_checkpoint(tiny_cfg, monkeypatch):
    import molwm.train.driver as driver

    real = driver.train_step

    def poisoned(model, opt, task, batch, step, total, check_grads=False):
        if step == 4:
            raise TrainingDiverged("loss nan / gradient norm nan at step 4")
        return real(model, opt, task, batch, step, total, check_grads)

    monkeypatch.setattr(driver, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"Last good checkpoint: .*last\.pt"):
        run_pretrain(tiny_cfg("nan"), progress=False)


def test_real_nan_loss_is_caught(tmp_path, tiny_cfg):
    from molwm.data.batch import CachedGraphs
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.train.pretrain import PretrainData, build, train_step

    cfg = tiny_cfg("n2")
    prep = prepare_dataset(PrepareConfig(dataset="moses", limit=256, cache_dir=str(tmp_path / "cache"),
                                         progress=False))
    data = PretrainData(CachedGraphs(prep.cache, with_labels=False), cfg)
    model, opt = build(cfg)
    with torch.no_grad():
        next(model.context_encoder.parameters()).fill_(float("nan"))
    batch, masks = data.batch(0)
    with pytest.raises(TrainingDiverged, match="at step 0"):
        train_step(model, opt, batch, masks, cfg, 0, 6)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint({"x": torch.zeros(3)}, tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a molwm checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_lr_schedule():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.01)
    assert lr_at(0, 1.0, 10, 100, shape="constant") == pytest.approx(0.1)
    assert lr_at(100, 1.0, 10, 100, shape="constant") == lr_at(11, 1.0, 0, 100, shape="constant") == 1.0


def test_each_task_keeps_its_mlflow_run_name(repo_root, tmp_path):
    from molwm.pretraining import load_pretrain_config
    from molwm.train.pretrain import GraphPretrainTask
    from molwm.train.pretrain_mm import MultimodalTask
    from molwm.world.run import WorldTask

    graph = load_pretrain_config(repo_root / "configs/pretrain/tiny.yaml")
    mm = load_pretrain_config(repo_root / "configs/pretrain/multimodal_tiny.yaml", ["objective=generative"])
    world = load_pretrain_config(repo_root / "configs/world/lab_tiny.yaml", ["objective=raw"])
    assert GraphPretrainTask(graph).run_name == "pretrain-moses"
    assert MultimodalTask(mm).run_name == "pretrain-multimodal-generative"
    assert WorldTask(world).run_name == "world-lab-raw"
