"""A full disk while saving a checkpoint is one line and keeps the checkpoint there before (issue 26 item 4)."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import pytest
import torch

from molwm.atomic import DiskFullError
from molwm.checkpoints import load_checkpoint, save_checkpoint


@pytest.mark.unit
def test_no_space_while_saving_a_checkpoint_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = save_checkpoint({"kind": "x", "w": torch.ones(3)}, tmp_path / "model.pt")

    def full(self, data):
        with open(self, "wb") as fh:
            fh.write(bytes(data)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("molwm.atomic.Path.write_bytes", full)
    with pytest.raises(DiskFullError) as err:
        save_checkpoint({"kind": "x", "w": torch.zeros(100_000)}, path)
    assert str(err.value).startswith(f"No space left on device while writing {path} (39")  # ~391 KB needed
    assert str(err.value).endswith(" KB needed)")
    assert load_checkpoint(path)["w"].tolist() == [1.0, 1.0, 1.0]  # the previous checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file, no prev.pt


@pytest.mark.integration
def test_a_file_size_limit_while_saving_is_one_line_not_torchs_enforce_fail(tmp_path):
    # a real failed write (ulimit -f) in a child process: torch alone says "enforce fail at inline_container.cc"
    code = textwrap.dedent(f"""
        import resource, signal, torch
        from molwm.checkpoints import save_checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            save_checkpoint({{"kind": "x", "w": torch.zeros(100_000)}}, r"{tmp_path / 'model.pt'}")
        except Exception as err:
            print(type(err).__name__, err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith(f"DiskFullError File too large while writing {tmp_path / 'model.pt'} (")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_random_bytes_as_a_checkpoint_give_no_hint_to_load_unsafely(tmp_path):
    # issue 26, smaller ones: PyTorch's message suggested retrying with weights_only=False
    path = tmp_path / "model.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(Exception) as err:
        load_checkpoint(path)
    assert "unreadable" in str(err.value) and "weights_only" not in str(err.value)
