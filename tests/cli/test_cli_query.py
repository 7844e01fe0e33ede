"""molwm query and molwm serve against a temporary SQLite MLflow store."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli



@pytest.fixture(scope="module")
def store(tmp_path_factory, build_env, repo_root):
    """One MLflow store for the module, holding ``molwm finetune --register tiny_sol alias=champion`` of
    configs/finetune/tiny.yaml (seed 0), fine-tuned once: (store URI, model URI, checkpoint file)."""
    folder = tmp_path_factory.mktemp("cli-query")
    with build_env(folder), contextlib.redirect_stdout(io.StringIO()):
        assert main(["finetune", "--config", str(repo_root / "configs/finetune/tiny.yaml"), "--register",
                     "tiny_sol", "alias=champion", "--no-progress", "seeds=[0]",
                     f"out_dir={folder / 'ft'}"]) == 0
    return f"sqlite:///{folder / 'mlflow.db'}", "models:/tiny_sol@champion", folder / "ft" / "model.pt"


@pytest.fixture
def registered(store, monkeypatch):
    """The module's registered model, with this test pointed at its store: (model URI, checkpoint file)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    return store[1:]


def test_query_cli_on_a_registered_model(capsys, tmp_path, registered):
    uri, checkpoint = registered
    (tmp_path / "c.csv").write_text("name,smiles\nethanol,CCO\nbroken,C1CC(\nphenol,c1ccccc1O\nblank,\n")
    assert main(["query", "--model", uri, "--input", "c.csv", "--output", "out.parquet", "--what",
                 "predict,neighbours,embed", "-k", "2", "--plot", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "queried 4 molecules: 2 ok, 2 rejected" in out and "molecules/s" in out
    assert "plot: out.embedding_map.png" in out and "plot: out.hydration_free_energy.hist.png" in out
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert frame["id"].tolist() == ["ethanol", "broken", "phenol", "blank"]
    assert frame["status"].tolist()[0] == "ok" and "parentheses" in frame["status"].tolist()[1]
    assert frame["neighbour_1"].iloc[2] != "" and frame["similarity_1"].iloc[2] > 0.5  # reference: freesolv
    assert main(["query", "--model", uri, "--smiles", "CCO", "CCCC", "--output", "s.csv", "--no-progress"]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == 2
    # errors are one line, not a traceback
    assert main(["query", "--model", "models:/missing@champion", "--smiles", "CCO", "--output", "x.csv"]) == 2
    assert "Registered Model with name=missing not found" in capsys.readouterr().err
    assert main(["query", "--model", uri, "--smiles", "CCO", "--output", "x.json", "--no-progress"]) == 2
    assert "must end in .csv or .parquet" in capsys.readouterr().err
    assert main(["serve", "--model", str(checkpoint)]) == 2
    assert "is a checkpoint file; serve an MLflow model" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _not_json(name):
    raise AssertionError(f"the server wrote {name}, which is not JSON")


def _post(port: int, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read().decode(), parse_constant=_not_json)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode())


def test_serve_answers_good_bad_and_over_limit_requests(registered):
    uri, _ = registered
    port = _free_port()
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "molwm", "serve", "--model", uri, "--port", str(port),
                             "--max-molecules", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"server did not start:\n{proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(0.5)
        code, body = _post(port, {"dataframe_split": {"columns": ["smiles"], "data": [["CCO"], ["C1CC("], ["CCN"]]}})
        assert code == 200
        rows = body["predictions"]
        assert [r["smiles"] for r in rows] == ["CCO", "C1CC(", "CCN"]
        assert [r["status"] == "ok" for r in rows] == [True, False, True]
        assert "parentheses" in rows[1]["status"] and rows[1]["hydration_free_energy"] is None
        code, body = _post(port, {"inputs": {"smiles": ["CCO"]}, "params": {"what": "embed"}})
        assert code == 200 and "emb_0" in body["predictions"][0]
        code, body = _post(port, {"inputs": {"smiles": ["C"] * 4}})
        assert code == 400 and "4 molecules, over the limit of 3 per request" in body["message"]
        assert "Traceback" not in json.dumps(body)
        code, body = _post(port, {"inputs": {"mol": ["C"]}})
        assert code == 400 and "missing inputs ['smiles']" in body["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    with pytest.raises(OSError):  # the uvicorn workers went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
