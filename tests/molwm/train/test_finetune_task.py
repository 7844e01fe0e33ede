"""Fine-tuning as a task of the training driver: a member resumes exactly from its rolling checkpoint,
that checkpoint is a one-member model, and the driver's budgets and guards apply to fine-tuning."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from molwm.checkpoints import load_checkpoint, load_resume_checkpoint
from molwm.config import ConfigError, load_config
from molwm.data.batch import CachedGraphs
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.data.splits import make_split
from molwm.kinds import load_encoder
from molwm.query import MoleculeModel
from molwm.train.driver import drive
from molwm.train.finetune import FinetuneConfig
from molwm.train.finetune_steps import LabelledGraphs
from molwm.train.finetune_task import FinetuneMemberTask

pytestmark = pytest.mark.integration


@pytest.fixture
def member(repo_root, tmp_path, graph_pretrain_run):
    """``member(name, **overrides)``: a fresh seed-0 member task of the tiny fine-tune (staged, extra inputs)."""
    base = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                       [f"cache_dir={tmp_path / 'c'}", f"from_model={graph_pretrain_run.checkpoint}", "mode=full",
                        "freeze_epochs=1", "epochs=4", "patience=5", "checkpoint_every=3", "extra.descriptors=true",
                        "device=cpu"])
    prep = prepare_dataset(PrepareConfig(dataset=base.dataset, limit=base.limit, cache_dir=base.cache_dir,
                                         progress=False))
    graphs = CachedGraphs(prep.cache, with_labels=True)
    pretrained = load_encoder(base.from_model)
    smiles = prep.cache.meta()["smiles"].tolist()
    data = LabelledGraphs(graphs, pretrained.config, smiles, base.extra_used())
    split = make_split("scaffold", smiles, (0.8, 0.1, 0.1), 0, None)

    def make(name, **overrides):
        cfg = dataclasses.replace(base, out_dir=str(tmp_path / name), **overrides)
        return FinetuneMemberTask(cfg, data, split, "regression", data.y.shape[1], 0, pretrained,
                                  prep.card.columns.target_names)

    return make


def test_a_member_resumes_exactly_and_its_checkpoint_is_a_model(member):
    full = member("full")
    drive(full, progress=False)
    assert full.per_epoch * 4 > 6  # the interruption below falls inside the run
    part = member("part")
    drive(part, progress=False, stop_after=7)  # interrupted after step 7; the checkpoint is at step 6
    state = load_resume_checkpoint(part.config.out_dir + "/last.pt")
    assert state["step"] == 6 and {"torch_rng", "task"} <= set(state["resume"])
    again = member("part")
    drive(again, state=state, progress=False)
    model_a, metrics_a, _ = full.result
    model_b, metrics_b, _ = again.result
    assert metrics_a == metrics_b
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    # the rolling checkpoint is a one-member property model at the last step's weights
    ckpt = load_checkpoint(full.config.out_dir + "/last.pt")
    assert ckpt["kind"] == "property_model" and len(ckpt["members"]) == 1
    frame = MoleculeModel.load(full.config.out_dir + "/last.pt").predict(["CCO", "c1ccccc1O"])
    assert np.isfinite(frame[frame.columns[1]]).all()


def test_driver_budgets_and_early_stopping_apply_to_a_member(member):
    capped = member("capped", max_steps=2)
    run = drive(capped, progress=False)
    assert run.steps == 2 and capped.result[1]["best_epoch"] == -1  # stopped before any epoch ended
    patient = member("stop", patience=1, freeze_epochs=0, epochs=30, lr=0.05)
    run = drive(patient, progress=False)
    epochs = [v for _, v in run.history["epoch"]]
    assert run.steps < 30 * patient.per_epoch and run.steps % patient.per_epoch == 0  # stopped at an epoch's end
    assert epochs == list(range(len(epochs))) and "val_rmse" in run.history and "health.std_mean" in run.history


def test_seed_is_not_a_fine_tuning_key(repo_root):
    with pytest.raises(ConfigError, match=r"seeds=\[3\]"):
        load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml", ["seed=3"]).validate()


def test_a_fine_tune_resumes_its_members(repo_root, tmp_path, capsys):
    """...and continues its MLflow run (issue 26: the killed run stayed RUNNING beside a new one)."""
    import os
    import shutil

    from mlflow.tracking import MlflowClient

    from molwm.tracking import make_tracker
    from molwm.train.finetune import run_finetune

    cfg = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml",
                      [f"cache_dir={tmp_path / 'c'}", f"out_dir={tmp_path / 'ft'}", "checkpoint_every=2", "device=cpu"])
    tracker = make_tracker(True, experiment="resume")  # the test's own SQLite store
    first = run_finetune(cfg, tracker, progress=False, log_model=False)
    a = load_checkpoint(first.checkpoint)["members"]  # before the resumed run rewrites model.pt
    members = tmp_path / "ft" / "members"
    assert load_resume_checkpoint(members / "seed-0" / "last.pt")["resume"]["task"]["done"]
    # seed 1 as if killed after its last training step, before its outputs (and its runs left RUNNING)
    shutil.copy(members / "seed-1" / "prev.pt", members / "seed-1" / "last.pt")
    assert not load_resume_checkpoint(members / "seed-1" / "last.pt")["resume"]["task"]["done"]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    seed_1 = load_resume_checkpoint(members / "seed-1" / "last.pt")["resume"]["run_id"]
    for run_id in (first.run_id, seed_1):
        client.update_run(run_id, "RUNNING")
    again = run_finetune(cfg, tracker, progress=False, resume=True, log_model=False)
    assert capsys.readouterr().out.count("resuming from") == 2
    assert again.per_seed == first.per_seed
    assert again.run_id == first.run_id
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert sorted((r.info.run_name, r.info.status, r.data.tags.get("mlflow.parentRunId")) for r in runs) == [
        (f"finetune-{cfg.dataset}-{cfg.mode}", "FINISHED", None), ("seed-0", "FINISHED", first.run_id),
        ("seed-1", "FINISHED", first.run_id)]
    b = load_checkpoint(again.checkpoint)["members"]
    for ma, mb in zip(a, b):
        assert all(torch.equal(ma[k], mb[k]) for k in ma if isinstance(ma[k], torch.Tensor))


def test_the_cached_positional_code_is_the_per_batch_code_and_draws_the_same_signs(repo_root, tmp_path):
    from molwm.encoders.graph import GraphEncoderConfig

    cfg = load_config(FinetuneConfig, repo_root / "configs/finetune/tiny.yaml", [f"cache_dir={tmp_path / 'c'}"])
    prep = prepare_dataset(PrepareConfig(dataset=cfg.dataset, limit=cfg.limit, cache_dir=cfg.cache_dir, progress=False))
    graphs = CachedGraphs(prep.cache, with_labels=True)
    enc = GraphEncoderConfig(rw_steps=8, lap_k=4)
    data = LabelledGraphs(graphs, enc, prep.cache.meta()["smiles"].tolist())
    # the size order reads the shards' offsets: the same counts as building every molecule's graph
    assert graphs.atom_counts().tolist() == graphs.batch(np.arange(len(graphs))).ptr.diff().tolist()
    rows = np.random.default_rng(0).permutation(len(graphs))[:40]
    cached = data.batch(rows, torch.Generator().manual_seed(7))
    direct = enc.prepare(graphs.batch(rows), torch.Generator().manual_seed(7))
    assert cached.pe.shape == direct.pe.shape == (cached.num_nodes, 12)
    # the random-walk code does not depend on the eigenbasis
    assert cached.pe[:, :8] == pytest.approx(direct.pe[:, :8], abs=1e-5)
    # the Laplacian code can differ by the eigenbasis LAPACK returns (a repeated eigenvalue, or a sign); on
    # every molecule whose canonical code is the same both ways, the signed codes must agree: the same draws
    plain_c, plain_d = data.batch(rows).pe, enc.prepare(graphs.batch(rows)).pe
    same = [k for k in range(len(rows)) if torch.allclose(plain_c[cached.batch == k], plain_d[direct.batch == k],
                                                           atol=1e-4)]
    assert len(same) >= len(rows) // 2
    flipped = 0
    for k in same:
        a, b = cached.pe[cached.batch == k, 8:], direct.pe[direct.batch == k, 8:]
        assert torch.allclose(a, b, atol=1e-4)
        flipped += int(not torch.allclose(a, plain_c[cached.batch == k, 8:], atol=1e-4))
    assert flipped > 0  # the generator did flip some signs
