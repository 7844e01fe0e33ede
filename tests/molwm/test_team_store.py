"""The team store on a real PostgreSQL (issue 20, part 3): ``mlflow server`` on a database these tests
start themselves; a 2-rank torchrun pretraining logs to it (rank 0 only), its model is registered, queried
and served from it; a tracking server stopped in the middle of a run loses nothing.

PostgreSQL comes from Debian's ``postgresql`` package (``.ci/run`` installs it); the tests skip, saying
so, only where its binaries are not on this machine."""

from __future__ import annotations

import contextlib
import glob
import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from molwm.cli import main
from molwm.tracking import MLflowTracker


def _pg_bin(name: str) -> str | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(folder, name), os.X_OK):
            return os.path.join(folder, name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _wait_http(port: int, path: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with code {proc.returncode}")
        try:
            if _get(port, path) == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"nothing answered on port {port} after {seconds:.0f} s")


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster of its own on a free loopback port with an empty ``mlflow`` database:
    its SQLAlchemy URI. Stopped and removed afterwards."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary (the dev extra) is not installed")
    root = Path(tempfile.mkdtemp(prefix="molwm-pg-"))
    os.chmod(root, 0o755)
    as_user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its own user owns the cluster
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run([*as_user, initdb, "-D", str(root / "data"), "-U", "molwm", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, pg_ctl, "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60",
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="molwm", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        # the driver named: SQLAlchemy's default for postgresql:// is psycopg 3 in newer releases
        yield f"postgresql+psycopg2://molwm@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


class TrackingServer:
    """``mlflow server`` on ``postgres`` with an artifact folder, on one port it keeps across restarts."""

    def __init__(self, backend: str, artifacts: Path):
        self.backend, self.artifacts, self.port = backend, artifacts, _free_port()
        self.proc: subprocess.Popen | None = None
        self.log = open(artifacts.parent / "server.log", "ab")  # a file: a pipe nobody reads would fill

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
                                      "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1",
                                      "--port", str(self.port), "--workers", "1"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     # no job runner: MLflow 3 starts ~8 worker processes for its GenAI jobs
                                     env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        try:
            _wait_http(self.port, "/health", self.proc)
        except BaseException as err:  # a timeout too: never leave the server's process group behind
            self.stop()
            self.log.flush()
            raise RuntimeError(f"{err}:\n{Path(self.log.name).read_text()[-3000:]}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # gone at once, as in a crash
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    srv = TrackingServer(postgres, tmp_path_factory.mktemp("team-artifacts"))
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.cli
@pytest.mark.timeout(600)  # starts PostgreSQL and mlflow server (module fixtures), then 2 ranks: slow when busy
def test_torchrun_logs_to_postgres_and_the_model_is_queried_and_served(server, postgres, tmp_path, repo_root,
                                                                        monkeypatch):
    import psycopg2
    from mlflow import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "OMP_NUM_THREADS": "1", "MOLWM_DIST_BACKEND": "gloo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "molwm", "pretrain", "--config",
           str(repo_root / "configs/pretrain/tiny.yaml"), "--no-progress", "max_steps=4", "log_every=1",
           f"cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'ddp'}", "register_name=team_encoder"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run_id: ") == 1  # rank 0 alone logs and prints

    client = MlflowClient(server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("molwm-pretrain").experiment_id])
    assert run.data.params["ddp.world_size"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]
    with psycopg2.connect(postgres.replace("+psycopg2", "")) as conn, conn.cursor() as cur:  # it is in the database itself
        cur.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone() == (1,)
    client.set_registered_model_alias("team_encoder", "champion", "1")

    uri = "models:/team_encoder@champion"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    out = tmp_path / "q.csv"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["query", "--model", uri, "--smiles", "CCO", "C1CC(", "--output", str(out), "--no-progress"]) == 0
    rows = pd.read_csv(out)
    assert rows["status"].tolist()[0] == "ok" and rows["status"].tolist()[1] != "ok" and "emb_0" in rows

    # served from the store: the app molwm serve runs (MLflow's scoring app behind the request guard),
    # called in this process (a server process is tested in test_rest_hardening.py)
    from starlette.testclient import TestClient

    from molwm.serving import MODEL_PATH_ENV, create_app
    from molwm.tracking import download_model

    monkeypatch.setenv(MODEL_PATH_ENV, str(download_model(uri, server.uri)))
    with TestClient(create_app()) as web:
        resp = web.post("/invocations", json={"inputs": {"smiles": ["CCO", "C1CC("]}})
    assert resp.status_code == 200 and [r["status"] == "ok" for r in resp.json()["predictions"]] == [True, False]


class _Outage(MLflowTracker):
    """A tracker that stops the server after its 3rd metrics call and starts it again after its 8th."""

    def __init__(self, srv: TrackingServer, down_at: int = 3, up_at: int | None = 8, **kw):
        super().__init__(tracking_uri=srv.uri, retry_seconds=0.5, **kw)
        self.srv, self.down_at, self.up_at, self.calls = srv, down_at, up_at, 0

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, step)
        self.calls += 1
        if self.calls == self.down_at:
            self.srv.stop()
        if self.calls == self.up_at:
            self.srv.start()


@pytest.mark.integration
@pytest.mark.timeout(600)  # restarts mlflow server once
def test_pretraining_goes_on_when_the_tracking_server_stops(server, tmp_path, repo_root, monkeypatch):
    from mlflow import MlflowClient

    from molwm.checkpoints import load_checkpoint
    from molwm.config import load_config
    from molwm.train.pretrain import PretrainConfig, run_pretrain

    monkeypatch.setenv("MOLWM_TRACKING_OUTBOX", str(tmp_path / "outbox"))
    cfg = load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml",
                      ["max_steps=12", "log_every=1", "checkpoint_every=4", f"cache_dir={tmp_path / 'cache'}",
                       f"out_dir={tmp_path / 'run'}", "experiment=outage"])
    tracker = _Outage(server, experiment="outage")
    t0 = time.time()
    with pytest.warns(UserWarning, match=r"unreachable 1 time\(s\).*sent late") as caught:
        result = run_pretrain(cfg, tracker, progress=False)
    assert result.steps == 12 and load_checkpoint(result.checkpoint)["step"] == 12  # checkpoints unaffected
    report = str(caught[-1].message)
    assert "NOT logged" not in report and time.time() - t0 < 600
    history = MlflowClient(server.uri).get_metric_history(result.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(12))  # every step, the outage's included
    assert MlflowClient(server.uri).get_run(result.run_id).info.status == "FINISHED"


@pytest.mark.integration
@pytest.mark.timeout(600)  # restarts mlflow server once
def test_what_a_run_could_not_log_is_kept_and_replayed(server, finetune_run, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.setenv("MOLWM_TRACKING_OUTBOX", str(tmp_path / "outbox"))
    tracker = _Outage(server, down_at=2, up_at=None, experiment="outage-kept")
    plot = tmp_path / "curve.txt"
    plot.write_text("a plot")
    with pytest.warns(UserWarning, match=r"NOT logged: 1 artifacts, 1 run endings, 3 metric values, 1 models"):
        run_id = _log_through_an_outage(tracker, plot, finetune_run.checkpoint)
    plot.unlink()  # a temporary file: the outbox kept its own copy
    (box,) = (tmp_path / "outbox").glob("*/outbox.jsonl")
    server.start()
    capsys.readouterr()
    assert main(["tracking", "replay", str(box), "--tracking-uri", server.uri]) == 0 and not box.exists()
    out = capsys.readouterr().out
    assert "sent: 1 artifacts, 1 run endings, 3 metric values, 1 models" in out and "model: models:/m-" in out
    client = MlflowClient(server.uri)
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2, 3, 4]
    assert [f.path for f in client.list_artifacts(run_id, "plots")] == ["plots/curve.txt"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_model_version_by_alias("team_kept", "champion").run_id == run_id  # logged into its run


def _log_through_an_outage(tracker: _Outage, plot: Path, checkpoint: Path) -> str:
    from molwm.packaging import package_for

    with tracker.run("kept") as run_id:
        for step in range(5):
            tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        tracker.log_artifact(plot, "plots")
        assert tracker.log_model(checkpoint, package_for("property_model"), registered_name="team_kept",
                                 alias="champion") is None  # the store is down: kept
    return run_id
