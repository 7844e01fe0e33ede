"""Devices: the ``device`` key, CPU-tensor checkpoints, no tensor made off the input's device inside the
graph objectives, and (only where CUDA is available) every objective trained on the GPU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from featurizers import GRAPH_SPEC, featurize_arrays
from molwm.checkpoints import load_checkpoint, save_checkpoint, to_cpu
from molwm.config import ConfigError, load_config
from molwm.data.batch import GraphBatch
from molwm.encoders.graph import GraphEncoderConfig, structural_pe
from molwm.jepa.health import embedding_health
from molwm.jepa.masking import MaskConfig, sample_graph_masks
from molwm.jepa.model import JEPAConfig, PredictorConfig
from molwm.kinds import load_encoder
from molwm.objectives import ObjectiveInputs, build_objective, names
from molwm.train.distributed import resolve_device
from molwm.train.pretrain import PretrainConfig, run_pretrain

CUDA = torch.cuda.is_available()

# 48 small, valid, distinct molecules: a pretraining set and a probe task in seconds
SMILES = [p + "C" * k + s for k in range(1, 17) for p, s in [("", "O"), ("", "N"), ("c1ccccc1", "")]]


def _card(local_card) -> str:
    """Card ``mols``: ``SMILES`` with a made-up regression target (so it also serves as a probe task)."""
    return local_card("mols", SMILES, [f"{0.1 * len(s):.2f}" for s in SMILES])


@pytest.mark.unit
def test_asking_for_cuda_without_it_is_a_clear_config_error(monkeypatch, tmp_path, repo_root):
    tiny = repo_root / "configs/pretrain/tiny.yaml"
    with pytest.raises(ConfigError, match="device must be"):
        load_config(PretrainConfig, tiny, ["device=gpu"])
    # a config naming a GPU still loads anywhere (its checkpoints are read on CPU machines)
    cfg = load_config(PretrainConfig, tiny, ["device=cuda:0", f"out_dir={tmp_path / 'o'}"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device(name)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run_pretrain(cfg, progress=False)  # before featurizing anything
    assert not (tmp_path / "o").exists()


@pytest.mark.unit
def test_checkpoints_keep_cpu_tensors_as_they_are(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "pair": (1, torch.ones(2))}
    assert to_cpu(state) is state  # nothing on a GPU: the very objects (a CPU run's checkpoint is unchanged)
    back = load_checkpoint(save_checkpoint(state, tmp_path / "c.pt"))
    assert all(torch.equal(back["model"][k], v) for k, v in state["model"].items())


@pytest.mark.unit
@pytest.mark.parametrize("name", names("graph"))
@pytest.mark.parametrize("anti_collapse", ["vicreg", "sigreg"])
def test_objectives_make_every_tensor_on_a_named_device(name, anti_collapse, factory_audit, descriptor_targets):
    """The CPU-checkable half of running on a GPU: forward, backward, EMA, embed and health create
    no tensor without saying where (the GPU half is the CUDA test below)."""
    arrays, _ = featurize_arrays(SMILES[:8])
    b = GraphBatch.from_arrays(arrays, range(len(arrays)))
    b.pe = structural_pe(b.edge_index, b.batch, b.num_graphs, 4, 4)
    masks = sample_graph_masks(b, MaskConfig(), np.random.default_rng(0))
    config = JEPAConfig(encoder=GraphEncoderConfig(dim=16, layers=2, rw_steps=4, lap_k=4),
                        predictor=PredictorConfig(dim=16, layers=1, heads=2), anti_collapse=anti_collapse,
                        graph_target_weight=1.0)
    b.targets = descriptor_targets(SMILES[:8])
    model = build_objective("graph", name, ObjectiveInputs(GRAPH_SPEC, config, n_targets=b.targets.shape[1]))
    with factory_audit() as audit:
        out = model(b, masks, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        model.ema_update(0.9)
        embedding_health(model.embed(b), out.pred, out.target)
    assert not audit.hits, sorted(set(audit.hits))


def _short_run(repo_root: Path, tmp_path: Path, objective: str, device: str, card: str):
    cfg = load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml", [
        f"dataset={card}", "limit=null", f"objective={objective}", f"device={device}", "batch_size=16",
        "max_steps=3", "log_every=1", "health_every=3", "checkpoint_every=3", "warmup_steps=1",
        f"probes={{datasets: ['{card}'], every: 0, max_rows: 48}}",
        f"out_dir={tmp_path / f'{objective}-{device}'}", f"cache_dir={tmp_path / 'cache'}"])
    return run_pretrain(cfg, progress=False)


def _check_cpu_checkpoint(result) -> None:
    """Every tensor of the checkpoint was saved on the CPU, and its encoder embeds on the CPU."""
    raw = torch.load(result.checkpoint, weights_only=True)  # no map_location: devices as saved
    tensors = [t for part in (raw["model"], raw["resume"]["optimizer"]["state"]) for t in _leaves(part)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    encoder = load_encoder(str(result.checkpoint))
    arrays, _ = featurize_arrays(SMILES[:4])
    b = GraphBatch.from_arrays(arrays, range(4))
    b.pe = structural_pe(b.edge_index, b.batch, b.num_graphs, encoder.config.rw_steps, encoder.config.lap_k)
    assert torch.isfinite(encoder.embed(b)).all()


def _leaves(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)


@pytest.mark.integration
def test_a_short_cpu_run_with_probes_leaves_a_cpu_checkpoint(tmp_path, repo_root, local_card):
    """The same harness as the CUDA test, on the CPU (so CI runs it)."""
    result = _short_run(repo_root, tmp_path, "contrastive", "cpu", _card(local_card))
    assert all(math.isfinite(v) for _, v in result.history["loss"])
    assert math.isfinite(result.history["probe.mols.rmse"][-1][1])
    _check_cpu_checkpoint(result)


@pytest.mark.integration
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it on one)")
@pytest.mark.parametrize("name", names("graph"))
def test_each_objective_trains_on_cuda_and_its_checkpoint_loads_on_cpu(tmp_path, local_card, repo_root,
                                                                        name):
    card = _card(local_card)
    gpu = _short_run(repo_root, tmp_path, name, "cuda", card)
    assert len(gpu.history["loss"]) == 3 and all(math.isfinite(v) for _, v in gpu.history["loss"])
    assert math.isfinite(gpu.history["probe.mols.rmse"][-1][1])  # probes encoded on the GPU
    assert "health.rankme" in gpu.history
    _check_cpu_checkpoint(gpu)
    # same initial weights, batches, codes, masks and view draws as on the CPU: the first loss agrees
    cpu = _short_run(repo_root, tmp_path, name, "cpu", card)
    assert gpu.history["loss"][0][1] == pytest.approx(cpu.history["loss"][0][1], rel=1e-3)
