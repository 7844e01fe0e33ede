"""Outputs appear whole or not at all, never overwrite inputs, and a full disk is one line (issue 26 items 2, 4)."""

from __future__ import annotations

import errno

import pandas as pd
import pytest

from molwm.atomic import DiskFullError, OutputError, atomic_path, refuse_overwriting_inputs, write_text_atomic
from molwm.data.splits import save_splits
from molwm.query_files import _Writer, run_query
from molwm.query import MoleculeModel

def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


@pytest.mark.unit
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = write_text_atomic(tmp_path / "out.csv", "a\n1\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("a\n1\n2\n")
            raise RuntimeError("killed half way")
    assert target.read_text() == "a\n1\n" and _leftovers(tmp_path) == []


@pytest.mark.unit
def test_a_full_disk_is_one_line_naming_the_file_and_the_size(tmp_path):
    with pytest.raises(DiskFullError) as err:
        with atomic_path(tmp_path / "report.json", needed=3 * 2**20) as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value) == f"No space left on device while writing {tmp_path / 'report.json'} (3.0 MB needed)"
    assert not (tmp_path / "report.json").exists() and _leftovers(tmp_path) == []


@pytest.mark.unit
def test_an_output_that_is_an_input_is_refused(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("smiles\nCCO\n")
    (tmp_path / "link.csv").symlink_to(src)
    for same in (src, tmp_path / "sub" / ".." / "in.csv", tmp_path / "link.csv"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputError, match="is the input file"):
            refuse_overwriting_inputs(same, src)
    refuse_overwriting_inputs(tmp_path / "out.csv", src, None)


@pytest.mark.unit
def test_split_files_are_written_atomically(tmp_path, monkeypatch):
    import numpy as np

    path = save_splits([(np.arange(3), np.arange(3, 4), np.arange(4, 5))], tmp_path / "splits.json")
    before = path.read_text()
    monkeypatch.setattr("molwm.atomic.Path.write_bytes", lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(DiskFullError, match="splits.json"):
        save_splits([(np.arange(2), np.arange(2, 4), np.arange(4, 5))], path)
    assert path.read_text() == before


@pytest.mark.unit
def test_query_refuses_its_input_as_output_before_reading_it(tmp_path):
    src = tmp_path / "in.csv"
    text = "smiles\n" + "CCO\n" * 1000
    src.write_text(text)
    # no model is loaded: the refusal comes first
    with pytest.raises(OutputError, match="is the input file"):
        run_query("no-such-model", src, input_path=src, chunk_size=100, progress=False)
    assert src.read_text() == text


@pytest.mark.integration
@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_a_query_stopped_half_way_leaves_no_output(finetune_run, tmp_path, monkeypatch, failure):
    wm = MoleculeModel.load(finetune_run.checkpoint)
    pd.DataFrame({"smiles": ["CCO", "CCCO", "c1ccccc1O", "CCN"] * 3}).to_csv(tmp_path / "in.csv", index=False)
    written = []
    write = _Writer.write

    def write_then_fail(self, frame):
        if written:
            raise failure
        written.append(len(frame))
        write(self, frame)

    monkeypatch.setattr(_Writer, "write", write_then_fail)
    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else DiskFullError):
        run_query(wm, tmp_path / "out.csv", input_path=tmp_path / "in.csv", chunk_size=4, progress=False)
    assert written == [4]  # the first chunk was written, then the run stopped
    assert not (tmp_path / "out.csv").exists() and _leftovers(tmp_path) == []
