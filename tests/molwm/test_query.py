"""WorldModel queries, candidate readers, streamed file queries and the pyfunc round trip."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molwm.data.candidates import CandidateError, count_candidates, iter_candidates
from molwm.query import WorldModel
from molwm.query_files import run_query

pytestmark = pytest.mark.integration

GOOD = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "C1CCNCC1", "CCN(CC)CC", "O=C(O)c1ccccc1", "CCCCCCCC"]
MIXED = ["CCO", "C1CC(", "c1ccccc1O", "", "CC(=O)Oc1ccccc1C(=O)O", None, "C1CCNCC1", "[Xx]", "CCN(CC)CC",
         "O=C(O)c1ccccc1", "c1ccccc", "CCCCCCCC"]


@pytest.fixture
def checkpoint(finetune_run):
    """The shared tiny fine-tuned 2-seed ensemble (FreeSolv subset; ``finetune_run`` in tests/conftest.py)."""
    return finetune_run.checkpoint


def test_order_and_count_are_kept_with_bad_smiles_across_batches(checkpoint):
    wm = WorldModel.load(checkpoint)
    wm.batch_size = 3  # several batches, rejects falling inside them
    emb, status = wm.embed(MIXED, with_status=True)
    assert emb.shape == (len(MIXED), wm.embedding_dim) and len(status) == len(MIXED)
    bad = [i for i, s in enumerate(MIXED) if s in ("C1CC(", "", None, "[Xx]", "c1ccccc")]
    assert [i for i, s in enumerate(status) if s != "ok"] == bad
    assert np.isnan(emb[bad]).all() and not np.isnan(np.delete(emb, bad, axis=0)).any()
    # each row equals the molecule queried alone: nothing shuffled
    for i, s in enumerate(MIXED):
        if i not in bad:
            np.testing.assert_allclose(emb[i], wm.embed([s])[0], atol=1e-5)
    wm.workers = 1  # a featurizer process running ahead gives the same rows in the same order
    emb_bg, status_bg = wm.embed(MIXED, with_status=True)
    assert status_bg == status and np.allclose(emb_bg, emb, equal_nan=True, atol=1e-6)
    wm.workers = 0
    frame = wm.predict(MIXED)
    assert len(frame) == len(MIXED)
    assert frame["smiles"].tolist()[:5] == MIXED[:5] and frame["smiles"].tolist()[6:] == MIXED[6:]
    assert frame["hydration_free_energy"].isna().tolist() == [i in bad for i in range(len(MIXED))]
    assert (frame.loc[frame.status == "ok", "hydration_free_energy_std"] > 0).all()  # 2 seeds differ
    # calibrated by default: one conformal width from the shared validation rows
    assert frame["uncertainty"].iloc[0] == "conformal_fixed (12 validation rows; 90% intervals); deep ensemble of 2 seeds"
    assert frame.loc[~frame.status.eq("ok"), "hydration_free_energy_std"].isna().all()
    assert wm.predict([]).empty and wm.embed([]).shape == (0, wm.embedding_dim)


def test_neighbours_find_the_molecule_itself_first(checkpoint):
    wm = WorldModel.load(checkpoint)
    out = wm.neighbours(["c1ccccc1O", "not smiles", "CCCCCCCC"], reference=GOOD, k=3)
    assert out["neighbour_1"].tolist() == ["c1ccccc1O", "", "CCCCCCCC"]
    assert out["similarity_1"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert (out[[c for c in out if c.startswith("similarity_")]].fillna(0) <= 1.0).all().all()  # clipped
    assert (out["similarity_1"].iloc[[0, 2]] >= out["similarity_2"].iloc[[0, 2]]).all()
    assert out["status"].tolist()[1] != "ok" and np.isnan(out["similarity_1"].iloc[1])
    # a dataset reference is embedded once and cached on disk
    ref = wm.reference("freesolv")
    assert len(ref) > 600 and ref.unit.shape[1] == wm.embedding_dim
    assert len(os.listdir(os.path.join(os.environ["MOLWM_CACHE"], "embeddings"))) == 1
    assert np.array_equal(wm.reference("freesolv").unit, ref.unit)


def test_candidate_readers_agree(tmp_path):
    from rdkit import Chem

    frame = pd.DataFrame({"SMILES": GOOD, "compound_id": [f"m{i}" for i in range(len(GOOD))]})
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_parquet(tmp_path / "c.parquet")
    (tmp_path / "c.smi").write_text("smiles name\n" + "".join(f"{s} m{i}\n" for i, s in enumerate(GOOD)))
    with gzip.open(tmp_path / "c.smi.gz", "wt") as fh:
        fh.write("".join(f"{s}\tm{i}\n" for i, s in enumerate(GOOD)))
    blocks = []
    for i, s in enumerate(GOOD):
        mol = Chem.MolFromSmiles(s)
        mol.SetProp("_Name", f"m{i}")
        blocks.append(Chem.MolToMolBlock(mol) + "$$$$\n")
    blocks.insert(2, "broken\n  junk\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n")
    (tmp_path / "c.sdf").write_text("".join(blocks))
    for name in ("c.csv", "c.parquet", "c.smi", "c.smi.gz"):
        chunks = list(iter_candidates(tmp_path / name, chunk_size=3))
        assert [len(c) for c in chunks] == [3, 3, 1], name
        got = pd.concat(chunks, ignore_index=True)
        assert got["id"].tolist() == frame["compound_id"].tolist(), name
        assert got["smiles"].tolist() == GOOD and got["row"].tolist() == list(range(len(GOOD)))
    sdf = pd.concat(iter_candidates(tmp_path / "c.sdf", chunk_size=3), ignore_index=True)
    assert len(sdf) == len(GOOD) + 1 and pd.isna(sdf["smiles"].iloc[2])
    assert "SDF record 2" in sdf["status"].iloc[2]
    assert sdf["id"].drop(index=2).tolist() == frame["compound_id"].tolist()
    assert count_candidates(tmp_path / "c.csv") == len(GOOD) and count_candidates(tmp_path / "c.sdf") == len(GOOD) + 1
    with pytest.raises(CandidateError, match="no SMILES column"):
        next(iter_candidates(_write(tmp_path / "x.csv", "a,b\n1,2\n")))
    with pytest.raises(CandidateError, match="no column 'smi'"):
        next(iter_candidates(tmp_path / "c.csv", smiles_column="smi"))
    with pytest.raises(CandidateError, match="unknown candidates format"):
        next(iter_candidates(_write(tmp_path / "c.txt", "CCO\n")))


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_query_equals_one_chunk_and_plots(checkpoint, tmp_path, suffix):
    wm = WorldModel.load(checkpoint)
    pd.DataFrame({"smiles": MIXED[:5] + MIXED[6:]}).to_csv(tmp_path / "in.csv", index=False)
    small = run_query(wm, tmp_path / f"a{suffix}", input_path=tmp_path / "in.csv", chunk_size=2,
                      what=["predict", "neighbours", "embed"], reference=GOOD, k=2, plot=True, progress=False)
    run_query(wm, tmp_path / f"b{suffix}", input_path=tmp_path / "in.csv", chunk_size=1000,
                      what=["predict", "neighbours", "embed"], reference=GOOD, k=2, progress=False)
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    a, b = read(tmp_path / f"a{suffix}"), read(tmp_path / f"b{suffix}")
    pd.testing.assert_frame_equal(a, b, check_dtype=False, atol=1e-5)  # batch composition moves the last ulp
    assert len(a) == 11 and a["row"].tolist() == list(range(11))
    assert small.n == 11 and small.n_ok == 7 and sum(small.reasons.values()) == 4
    assert {"hydration_free_energy", "hydration_free_energy_std", "neighbour_2", "similarity_1", "emb_0"} <= set(a)
    assert "11 molecules: 7 ok, 4 rejected" in small.summary()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(7)  # a value run_query never picks on its own, to see it restored
    try:
        run_query(wm, tmp_path / f"c{suffix}", input_path=tmp_path / "in.csv", workers=1, progress=False)
        assert torch.get_num_threads() == 7 and wm.workers == 0  # settings restored after the query
    finally:
        torch.set_num_threads(threads)
    names = sorted(p.name for p in small.plots)
    assert names == ["a.embedding_map.png", "a.hydration_free_energy.hist.png"]
    assert all(p.stat().st_size > 5000 for p in small.plots)


def test_pyfunc_round_trip_equals_the_direct_api_and_enforces_limits(checkpoint, monkeypatch):
    import mlflow.artifacts
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from molwm.packaging import package_for
    from molwm.tracking import make_tracker

    tracker = make_tracker(True, experiment="query-test")
    with tracker.run("log"):
        uri = tracker.log_model(checkpoint, package_for("property_model"), name="model", registered_name="tiny_q",
                                alias="champion")
    # logged from code: no pickle in the model, so loading it runs no code stored in the registry
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/tiny_q@champion"))
    assert not list(local.rglob("*.pkl")) and (local / "pyfunc_model.py").is_file()
    monkeypatch.setenv("MOLWM_MAX_MOLECULES", "20")
    monkeypatch.setenv("MOLWM_MAX_SMILES_LENGTH", "60")
    model = mlflow.pyfunc.load_model("models:/tiny_q@champion")
    assert model.metadata.get_input_schema().input_names() == ["smiles"]
    smiles = [s for s in MIXED if s is not None]
    served = model.predict(pd.DataFrame({"smiles": smiles}))
    direct = WorldModel.load(uri).predict(smiles)
    assert served["hydration_free_energy"].tolist()[1] is None  # JSON null over REST, not NaN
    pd.testing.assert_frame_equal(served.reset_index(drop=True).astype(direct.dtypes.to_dict()), direct)
    emb = model.predict(pd.DataFrame({"smiles": ["CCO"]}), params={"what": "embed"})
    assert emb.shape[1] == WorldModel.load(uri).embedding_dim + 2
    with pytest.raises(MlflowException, match="over the limit of 20 per request") as err:
        model.predict(pd.DataFrame({"smiles": ["C"] * 21}))
    assert err.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="row 1: SMILES has 61 characters"):
        model.predict(pd.DataFrame({"smiles": ["C", "C" * 61]}))


def test_count_candidates_skips_headers_and_comments(tmp_path):
    assert count_candidates(_write(tmp_path / "a.smi", "smiles name\nCCO a\n# note\nCCN b\n\n")) == 2
    assert count_candidates(_write(tmp_path / "b.smi", "CCO\nCCN\n")) == 2
    assert count_candidates(_write(tmp_path / "c.csv", "smiles\nCCO\nCCN\nCCC\n")) == 3
    assert count_candidates(_write(tmp_path / "d.csv", "")) == 0
