"""Descriptor objectives end to end: targets prepared beside the cache, statistics in the checkpoint,
the right encoder read downstream, and exact resume (the scored entries are a function of the step)."""

from __future__ import annotations

import pytest
import torch

from molwm.checkpoints import load_checkpoint
from molwm.config import load_config
from molwm.data.descriptors import DescriptorStats
from molwm.kinds import load_encoder
from molwm.train.pretrain import PretrainConfig, run_pretrain

pytestmark = pytest.mark.integration


def _cfg(repo_root, tmp_path, objective: str, name: str, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml", [
        f"objective={objective}", "max_steps=4", "checkpoint_every=2", "health_every=2",
        "objective_settings.head_hidden=16", f"out_dir={tmp_path / name}", f"cache_dir={tmp_path / 'cache'}",
        *extra])


@pytest.mark.parametrize(("objective", "prefix"), [("descriptors", "encoder."),
                                                   ("jepa_descriptors", "target_encoder.")])
def test_descriptor_objectives_pretrain_and_record_their_targets(repo_root, tmp_path, objective, prefix):
    result = run_pretrain(_cfg(repo_root, tmp_path, objective, "run"), progress=False)
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(v)) for _, v in result.history["loss"])
    assert result.history["descriptor_loss"][-1][1] > 0
    state = load_checkpoint(result.checkpoint)
    stats = DescriptorStats.from_dict(state["descriptor_stats"])
    assert stats.n_rows == 256 and 90 < stats.size <= 125  # fitted on the 256 pretraining molecules
    assert state["encoder_prefix"] == prefix and state["kind"] == "graph_pretrain"
    encoder = load_encoder(result.checkpoint)
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in weights.items())
    assert list((tmp_path / "cache").rglob("descriptors/*/manifest.json"))  # beside the graph shards


def test_a_resumed_descriptor_run_equals_an_uninterrupted_one(repo_root, tmp_path):
    whole = run_pretrain(_cfg(repo_root, tmp_path, "descriptors", "whole"), progress=False)
    part = run_pretrain(_cfg(repo_root, tmp_path, "descriptors", "part"), progress=False, stop_after=2)
    resumed = run_pretrain(_cfg(repo_root, tmp_path, "descriptors", "part"), resume=part.checkpoint,
                           progress=False)
    a, b = load_checkpoint(whole.checkpoint)["model"], load_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.history["loss"] == resumed.history["loss"]
