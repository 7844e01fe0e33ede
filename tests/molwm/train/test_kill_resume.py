"""A pretraining process killed with SIGKILL mid-run resumes to exactly the uninterrupted result;
a damaged checkpoint gives a clear error or falls back to the previous good one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from molwm.checkpoints import CheckpointError, load_checkpoint, load_resume_checkpoint, previous_checkpoint
from molwm.cli import main
from molwm.config import load_config

pytestmark = pytest.mark.integration
# same float order; device=cpu: exact resume is a CPU guarantee (GPU scatter-adds are not bit-reproducible)
ARGS = ["max_steps=240", "checkpoint_every=10", "log_every=1", "health_every=60", "threads=1", "device=cpu"]


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, repo_root):
    from mlflow import MlflowClient

    from molwm.train.pretrain import PretrainConfig, run_pretrain

    tiny = str(repo_root / "configs/pretrain/tiny.yaml")
    # the uninterrupted reference (no tracker), also preparing the cache the child will reuse
    ref = run_pretrain(load_config(PretrainConfig, tiny, [*ARGS, f"out_dir={tmp_path / 'ref'}"]), progress=False)
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "molwm", "pretrain", "--config", tiny, *ARGS,
                              f"out_dir={out}", "--no-progress"], cwd=tmp_path, env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if previous_checkpoint(ckpt).is_file():  # at least two checkpoints written: well into the run
            break
        time.sleep(0.01)
    assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read().decode()[-500:]}"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    step = load_checkpoint(ckpt)["step"]
    assert 0 < step < 240
    assert main(["pretrain", "--resume", str(ckpt), "--no-progress"]) == 0
    final, reference = _weights(ckpt), _weights(ref.checkpoint)
    assert final.keys() == reference.keys()
    for k in final:
        assert torch.equal(final[k], reference[k]), k
    # the MLflow run has every step exactly once
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run_id = load_checkpoint(ckpt)["resume"]["run_id"]
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(240))


def test_damaged_checkpoint_falls_back_to_the_previous_or_fails_clearly(tmp_path, capsys, repo_root):
    from molwm.train.pretrain import PretrainConfig, run_pretrain

    out = tmp_path / "run"
    tiny = repo_root / "configs/pretrain/tiny.yaml"
    run_pretrain(load_config(PretrainConfig, tiny, [*ARGS, "max_steps=30", f"out_dir={out}"]), progress=False,
                 stop_after=20)
    ckpt, prev = out / "last.pt", previous_checkpoint(out / "last.pt")
    assert load_checkpoint(ckpt)["step"] == 20 and load_checkpoint(prev)["step"] == 10
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="previous good checkpoint"):
        state = load_resume_checkpoint(ckpt)
    assert state["step"] == 10
    assert main(["pretrain", "--resume", str(ckpt), "--no-progress", "--no-track"]) == 0
    assert load_checkpoint(ckpt)["step"] == 30
    # both damaged: one clear error naming the files, exit status 2, no traceback
    for p in (ckpt, prev):
        p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unusable too"):
        load_resume_checkpoint(ckpt)
    assert main(["pretrain", "--resume", str(ckpt), "--no-progress", "--no-track"]) == 2
    err = capsys.readouterr().err
    assert "unreadable" in err and "Traceback" not in err
