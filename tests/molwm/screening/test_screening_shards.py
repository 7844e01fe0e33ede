"""Inputs, blocks and the manifest of a sharded query (no Ray needed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from molwm.data.candidates import CandidateError
from molwm.screening.shards import Manifest, ScreeningError, fingerprint, iter_blocks, resolve_inputs, shard_name

pytestmark = pytest.mark.unit


def _smi(path, n, start=0):
    path.write_text("".join(f"{'C' * (1 + (i % 5))}O mol{i}\n" for i in range(start, start + n)))
    return path


def test_inputs_are_a_file_a_folder_or_a_glob(tmp_path):
    a = _smi(tmp_path / "a.smi", 3)
    b = _smi(tmp_path / "b.smi", 2)
    (tmp_path / "notes.txt").write_text("not candidates")
    assert resolve_inputs(a) == [a.resolve()]
    assert resolve_inputs(tmp_path) == [a.resolve(), b.resolve()]  # sorted, the .txt left out
    assert resolve_inputs(str(tmp_path / "*.smi")) == [a.resolve(), b.resolve()]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        resolve_inputs(str(tmp_path / "*.csv"))
    with pytest.raises(CandidateError, match="unknown candidates format"):
        resolve_inputs(str(tmp_path / "*.txt"))
    with pytest.raises(FileNotFoundError, match="no candidate files"):
        resolve_inputs((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_blocks_cover_every_row_once_in_order(tmp_path):
    files = [_smi(tmp_path / "a.smi", 7), _smi(tmp_path / "b.smi", 4, start=7)]
    blocks = list(iter_blocks(files, 3))
    assert [b.name for b in blocks] == [shard_name(0, 0), shard_name(0, 1), shard_name(0, 2), shard_name(1, 0),
                                        shard_name(1, 1)]
    ids = [i for b in blocks for i in b.frame["id"]]
    assert ids == [f"mol{i}" for i in range(11)]
    assert [b.frame["row"].tolist() for b in blocks][:3] == [[0, 1, 2], [3, 4, 5], [6]]
    assert sorted(b.name for b in blocks) == [b.name for b in blocks]  # name order is row order


def test_manifest_resumes_the_same_job_and_refuses_another(tmp_path):
    src = _smi(tmp_path / "a.smi", 5)
    job = {"model_digest": "abc", "what": ["embed"], "block_rows": 2, "inputs": [fingerprint(src)]}
    out = tmp_path / "out"
    m = Manifest.open(out, job)
    assert m.shards == {} and not m.complete
    out.mkdir()
    for name in ("part-00000-000000.parquet", "part-00000-000001.parquet"):
        pd.DataFrame({"row": [0]}).to_parquet(out / name)
        m.add(name, {"n": 2, "n_ok": 1, "reasons": {"empty SMILES": 1}})
    m.save()
    (out / "part-00000-000001.parquet").unlink()  # its record stays, the file is gone: it is redone
    again = Manifest.open(out, job)
    assert again.done("part-00000-000000.parquet") and not again.done("part-00000-000001.parquet")
    assert again.counts() == (2, 1, {"empty SMILES": 1})
    with pytest.raises(ScreeningError, match="holds another job .*what"):
        Manifest.open(out, {**job, "what": ["predict"]})
    _smi(src, 6)  # the input changed: its size and head differ
    with pytest.raises(ScreeningError, match="differs in inputs"):
        Manifest.open(out, {**job, "inputs": [fingerprint(src)]})
    assert json.loads((out / "manifest.json").read_text())["job"] == job


def test_a_folder_of_shards_without_a_manifest_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pd.DataFrame({"row": [0]}).to_parquet(out / "part-00000-000000.parquet")
    with pytest.raises(ScreeningError, match="no manifest.json"):
        Manifest.open(out, {"what": ["embed"]})
    with pytest.raises(ScreeningError, match="is a file"):
        Manifest.open(out / "part-00000-000000.parquet", {})
