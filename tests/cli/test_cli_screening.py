"""molwm query --engine ray on a local Ray cluster of 2 workers, resuming, and molwm index build."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from molwm.cli import main
from molwm.screening.shards import read_shards

pytestmark = pytest.mark.cli

SMILES = ["CCO", "c1ccccc1O", "not_a_smiles", "CC(=O)Oc1ccccc1C(=O)O", "", "C1CCNCC1", "CCN(CC)CC", "OCC(O)CO",
          "CCCCCCCC", "c1ccc2ccccc2c1", "O=C(O)c1ccccc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"]


@pytest.fixture
def candidates(tmp_path):
    path = tmp_path / "cands.csv"
    pd.DataFrame({"smiles": SMILES, "name": [f"m{i}" for i in range(len(SMILES))]}).to_csv(path, index=False)
    return path


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_ray_engine_without_the_extra_is_one_line(capsys, candidates, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    rc, _, err = _run(capsys, "query", "--model", "molwm:base", "--input", str(candidates), "--output",
                      str(tmp_path / "out"), "--engine", "ray", "--no-progress")
    assert rc == 2
    assert err == "molwm: error: --engine ray needs Ray, which comes with the 'scale' extra: " \
                  "pip install 'molwm[scale]'\n"


def test_ray_query_with_two_workers_matches_the_local_query_and_resumes(capsys, candidates, tmp_path):
    pytest.importorskip("ray", reason="--engine ray needs the 'scale' extra (pip install 'molwm[scale]')")
    pytest.importorskip("faiss", reason="the index needs the 'scale' extra (pip install 'molwm[scale]')")
    index = tmp_path / "idx"
    rc, out, err = _run(capsys, "index", "build", "--model", "molwm:base", "--reference", str(candidates),
                        "--output", str(index), "--no-progress")
    assert rc == 0, err
    assert "indexed 11 reference molecules" in out and "exact" in out and "index_uri: runs:/" in out
    local = tmp_path / "local.parquet"
    rc, _, err = _run(capsys, "query", "--model", "molwm:base", "--input", str(candidates), "--output", str(local),
                      "--what", "embed,neighbours", "--index", str(index), "-k", "2", "--no-progress")
    assert rc == 0, err
    out_dir = tmp_path / "ray"
    argv = ["query", "--model", "molwm:base", "--input", str(candidates), "--output", str(out_dir), "--what",
            "embed,neighbours", "--index", str(index), "-k", "2", "--engine", "ray", "--workers", "2",
            "--chunk-size", "3", "--no-progress"]
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    assert "queried 13 molecules on 2 Ray workers: 11 ok, 2 rejected" in out and "5 shards" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 5
    assert len({rec["worker"] for rec in manifest["shards"].values()}) == 2  # both workers answered
    assert manifest["totals"]["reasons"] == {"empty SMILES": 1,
                                             "could not parse SMILES: syntax error or unknown element symbol": 1}
    got, want = read_shards(out_dir), pd.read_parquet(local)
    assert got["row"].tolist() == list(range(len(SMILES)))  # every row once, in input order
    assert got.columns.tolist() == want.columns.tolist()
    for col in ("id", "smiles", "status", "neighbour_1_id", "neighbour_2_id"):
        assert got[col].tolist() == want[col].tolist(), col
    emb = [c for c in got.columns if c.startswith("emb_")]
    np.testing.assert_allclose(got[emb].to_numpy(), want[emb].to_numpy(), atol=1e-5)
    assert got.loc[got["id"] == "m0", "neighbour_1_id"].item() == "m0"  # CCO's nearest is itself

    # a killed job: two shards never written, one of them recorded; the rerun redoes exactly those two
    names = sorted(manifest["shards"])
    before = {n: (out_dir / n).stat().st_mtime_ns for n in names}
    content = {n: pd.read_parquet(out_dir / n) for n in names}
    manifest["complete"] = False
    del manifest["shards"][names[3]]
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    (out_dir / names[1]).unlink()
    (out_dir / names[3]).unlink()
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    assert "3 resumed from an earlier run" in out
    for n in names:
        assert ((out_dir / n).stat().st_mtime_ns == before[n]) == (n not in (names[1], names[3])), n
        pd.testing.assert_frame_equal(pd.read_parquet(out_dir / n), content[n])

    # the same folder for another question is refused; an index of another model too
    rc, _, err = _run(capsys, "query", "--model", "molwm:base", "--input", str(candidates), "--output", str(out_dir),
                      "--what", "embed", "--engine", "ray", "--workers", "2", "--chunk-size", "3", "--no-progress")
    assert rc == 2 and err.startswith("molwm: error: --output") and "holds another job" in err
    meta = json.loads((index / "index.json").read_text())
    (index / "index.json").write_text(json.dumps({**meta, "model_digest": "0" * 64}))
    rc, _, err = _run(capsys, "query", "--model", "molwm:base", "--smiles", "CCO", "--output",
                      str(tmp_path / "x.csv"), "--what", "neighbours", "--index", str(index))
    assert rc == 2 and "was built with model" in err and err.count("\n") == 1
