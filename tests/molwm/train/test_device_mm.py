"""Devices for multimodal and world training: the CPU-checkable half of running on a GPU (no tensor made
without naming its device inside the objectives' forward, backward, EMA and health), the device key, and
(where CUDA is available) a short run on the GPU whose checkpoint loads on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from featurizers.molecule import GRAPH_SPEC
from molwm.checkpoints import load_checkpoint
from molwm.config import ConfigError, load_config
from molwm.jepa.health import embedding_health
from molwm.jepa.mm_masking import MultimodalMaskConfig, add_pe, sample_multimodal_masks
from molwm.objectives import ObjectiveInputs, build_objective, names
from molwm.train.pretrain_mm import MultimodalPretrainConfig
from molwm.world.config import WorldConfig
from molwm.world.run import WorldTask, run_world
from molwm.world.train import world_health, world_losses

CUDA = torch.cuda.is_available()


@pytest.mark.unit
@pytest.mark.parametrize("name", names("multimodal"))
def test_multimodal_objectives_make_every_tensor_on_a_named_device(name, mm_data, mm_config, factory_audit):
    b = add_pe(mm_data.batch(np.arange(len(mm_data))), mm_config, torch.Generator().manual_seed(0))
    masks = sample_multimodal_masks(b, MultimodalMaskConfig(), mm_config.image.grid, np.random.default_rng(0))
    torch.manual_seed(0)
    model = build_objective("multimodal", name, ObjectiveInputs(GRAPH_SPEC, mm_config, mm_data.n_assays))
    with factory_audit() as audit:
        out = model(b, masks)
        out.loss.backward()
        model.ema_update(0.9)
        embedding_health(out.joint, out.pred, out.target)
    assert not audit.hits, sorted(set(audit.hits))


@pytest.mark.unit
@pytest.mark.parametrize("objective", ["jepa", "raw"])
def test_world_training_makes_every_tensor_on_a_named_device(objective, make_courses, make_config, tmp_path,
                                                             factory_audit):
    task = WorldTask(make_config(str(tmp_path), max_steps=2, objective=objective), make_courses())
    task.prepare(None, progress=False)
    torch.manual_seed(0)
    net = task.build_model()
    batch = task.batch(0, None)
    with factory_audit() as audit:
        loss, _ = world_losses(net, batch, task.config)
        loss.backward()
        net.ema_update(net.momentum_at(0, 2))
        world_health(net, batch)
    assert not audit.hits, sorted(set(audit.hits))


@pytest.mark.unit
def test_multimodal_and_world_runs_take_the_device_key(make_courses, make_config, tmp_path, monkeypatch,
                                                       repo_root):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run_world(make_config(str(tmp_path / "w"), max_steps=2, device="cuda"), courses=make_courses(),
                  progress=False)
    assert not (tmp_path / "w").exists()  # refused before anything was written
    for schema, path in [(WorldConfig, "configs/world/lab_tiny.yaml"),
                         (MultimodalPretrainConfig, "configs/pretrain/multimodal_tiny.yaml")]:
        assert load_config(schema, repo_root / path, ["device=cuda:1"]).device == "cuda:1"  # loads anywhere
        with pytest.raises(ConfigError, match="device must be"):
            load_config(schema, repo_root / path, ["device=gpu"])


@pytest.mark.integration
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it on one)")
def test_a_world_model_trains_on_cuda_and_its_checkpoint_loads_on_cpu(make_courses, make_config, tmp_path):
    gpu = run_world(make_config(str(tmp_path / "gpu"), max_steps=6, device="cuda"), courses=make_courses(),
                    progress=False)
    assert all(math.isfinite(v) for _, v in gpu.history["loss"])
    raw = torch.load(gpu.checkpoint, weights_only=True)  # no map_location: devices as saved
    assert all(t.device.type == "cpu" for t in raw["model"].values())
    cpu = run_world(make_config(str(tmp_path / "cpu"), max_steps=6, device="cpu"), courses=make_courses(),
                    progress=False)
    assert gpu.history["loss"][0][1] == pytest.approx(cpu.history["loss"][0][1], rel=1e-3)
    assert load_checkpoint(gpu.checkpoint)["kind"] == "world_model"
