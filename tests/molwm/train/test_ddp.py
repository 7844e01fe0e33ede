"""Data-parallel graph pretraining: rank slices of a global batch, the loop's distributed hooks, and
``torchrun --nproc_per_node=2 -m molwm pretrain`` on CPU (gloo) against one process with the doubled batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from featurizers.molecule import featurize_arrays
from molwm.config import ConfigError, load_config
from molwm.data.batch import GraphBatch
from molwm.encoders.graph import structural_pe
from molwm.jepa.masking import MaskConfig, sample_graph_masks
from molwm.tracking import NullTracker
from molwm.train.distributed import SINGLE, init_distributed, rank_slice
from molwm.train.loop import LoopSchedule, run_steps
from molwm.train.pretrain import PretrainConfig, PretrainData, run_pretrain

HERE = os.path.dirname(__file__)  # _ddp_worker.py sits beside this file
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "C1CCNCC1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
          "O=C(O)c1ccccc1", "CCCCCCCC", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CC(=O)Nc1ccc(O)cc1", "c1ccc2ccccc2c1",
          "OCC(O)CO"]
GLOO = dist.is_available() and dist.is_gloo_available()


class _Graphs:
    """The two things PretrainData needs from CachedGraphs, over molecules held in memory."""

    def __init__(self, smiles):
        self.arrays, _ = featurize_arrays(smiles)

    def __len__(self):
        return len(self.arrays)

    def batch(self, rows):
        return GraphBatch.from_arrays(self.arrays, rows)


def _global_batch(seed: int = 0):
    arrays, _ = featurize_arrays(SMILES)
    batch = GraphBatch.from_arrays(arrays, np.arange(len(SMILES)))
    gen = torch.Generator().manual_seed(3)
    batch.pe = structural_pe(batch.edge_index, batch.batch, batch.num_graphs, 4, 4, gen)
    masks = sample_graph_masks(batch, MaskConfig(target_fraction=0.4), np.random.default_rng(seed))
    return batch, masks


@pytest.mark.unit
@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_slices_rebuild_the_global_draw(world):
    batch, masks = _global_batch()
    idx, block, mol, keep, pe = [], [], [], [], []
    n_blocks = 0
    for rank in range(world):
        part, m = rank_slice(batch, masks, rank, world)
        assert part.num_graphs == len(SMILES) // world
        a0 = int(batch.ptr[rank * part.num_graphs])
        assert torch.equal(part.x, batch.x[a0 : a0 + part.num_nodes])
        assert m.keep.shape[0] == part.num_nodes and bool((m.target_idx < part.num_nodes).all())
        assert not bool(m.keep[m.target_idx].any())  # hidden atoms are not context, as in the global draw
        idx.append(m.target_idx + a0)
        mol.append(m.target_mol + rank * part.num_graphs)
        block.append(m.target_block + n_blocks)
        n_blocks += int(m.target_block.max()) + 1 if m.target_block.numel() else 0
        keep.append(m.keep)
        pe.append(part.pe)
    assert torch.equal(torch.cat(idx), masks.target_idx)
    assert torch.equal(torch.cat(mol), masks.target_mol)
    assert torch.equal(torch.cat(block), masks.target_block)
    assert torch.equal(torch.cat(keep), masks.keep)
    assert torch.equal(torch.cat(pe), batch.pe)


@pytest.mark.unit
def test_rank_slice_needs_equal_shares():
    batch, masks = _global_batch()
    with pytest.raises(ValueError, match="equal shares"):
        rank_slice(batch, masks, 0, 5)


@pytest.mark.unit
def test_two_ranks_of_batch_b_see_one_process_with_batch_2b():
    graphs = _Graphs(SMILES * 4)  # 48 molecules
    one = PretrainData(graphs, PretrainConfig(batch_size=8, max_steps=10, seed=5))
    ranks = [PretrainData(graphs, PretrainConfig(batch_size=4, max_steps=10, seed=5), r, 2) for r in range(2)]
    assert ranks[0].steps_per_epoch == one.steps_per_epoch == 6
    for step in (0, 7):  # second epoch too
        assert np.array_equal(ranks[1].rows(step), one.rows(step))
        whole, masks = one.batch(step)
        for r, data in enumerate(ranks):
            part, m = data.batch(step)
            want, want_m = rank_slice(whole, masks, r, 2)
            assert torch.equal(part.x, want.x) and torch.equal(part.pe, want.pe)
            assert torch.equal(m.target_idx, want_m.target_idx) and torch.equal(m.keep, want_m.keep)
    with pytest.raises(ConfigError, match="global batch"):
        PretrainData(graphs, PretrainConfig(batch_size=32), 0, 2)


@pytest.mark.unit
def test_single_process_never_touches_a_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed()
    assert ctx is SINGLE and not ctx.enabled and ctx.is_main
    assert not (dist.is_available() and dist.is_initialized())


@pytest.mark.unit
def test_loop_agrees_on_the_budget_and_only_the_writer_checkpoints(tmp_path):
    calls = {"health": 0, "state": 0}

    def health(_):
        calls["health"] += 1
        return {}

    def state(_):
        calls["state"] += 1
        return {}

    schedule = LoopSchedule(10, 4, 1, 1, 1, tmp_path / "last.pt", max_seconds=50.0, writer=False)
    done, _ = run_steps(schedule, 0, NullTracker(), {}, [], batch_fn=lambda s: s,
                        step_fn=lambda s, b: {"loss": 1.0}, health_fn=health, state_fn=state, progress=False,
                        agree=lambda seconds: 100.0)  # rank 0's clock says the budget is spent
    assert done == 1 and schedule.total == 1
    assert calls == {"health": 0, "state": 0} and not (tmp_path / "last.pt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.skipif(not GLOO, reason="torch.distributed with the gloo backend is not available")
def test_torchrun_two_cpu_ranks_match_one_process_with_the_doubled_batch(tmp_path, repo_root):
    from mlflow import MlflowClient

    from molwm.checkpoints import load_checkpoint

    over = ["max_steps=4", "log_every=1", "health_every=4", "checkpoint_every=2",
            f"cache_dir={tmp_path / 'cache'}"]
    # one process, global batch 32 (also prepares the cache the ranks then read)
    config = str(repo_root / "configs/pretrain/tiny.yaml")
    one_cfg = load_config(PretrainConfig, config, over + ["batch_size=32", f"out_dir={tmp_path / 'one'}"])
    ref = run_pretrain(one_cfg, progress=False)

    out = tmp_path / "ranks"
    out.mkdir()
    env = {**os.environ, "DDP_TEST_OUT": str(out), "OMP_NUM_THREADS": "1", "MOLWM_DIST_BACKEND": "gloo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", os.path.join(HERE, "_ddp_worker.py"),
           "pretrain", "--config", config, "--no-progress", *over, "batch_size=16",
           f"out_dir={tmp_path / 'ddp'}"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run_id: ") == 1  # rank 0 alone prints

    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # weights, EMA target encoder included, are bit-identical on both ranks and in rank 0's checkpoint
    saved = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert saved["resume"]["world_size"] == 2 and saved["step"] == 4
    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name
        assert torch.equal(value, saved["model"][name]), name
    assert len(ranks[0]["saves"]) == 2 and ranks[1]["saves"] == []  # steps 2 and 4, rank 0 only

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("molwm-pretrain").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["ddp.world_size"] == "2" and run.data.params["ddp.global_batch"] == "32"
    for key, rtol in [("loss", 2e-3), ("pred_loss", 2e-3), ("graph_loss", 2e-3), ("grad_norm", 2e-3),
                      ("anti_collapse", 3e-2)]:  # VICReg statistics are per rank (16 molecules, not 32)
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        want = ref.history[key]
        assert [s for s, _ in got] == [s for s, _ in want] == [0, 1, 2, 3]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=rtol, err_msg=key)
    one = load_checkpoint(ref.checkpoint)["model"]
    for name, value in saved["model"].items():
        np.testing.assert_allclose(value.numpy(), one[name].numpy(), atol=5e-3, err_msg=name)
