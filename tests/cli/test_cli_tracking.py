"""``molwm tracking replay`` (issue 20): a run's kept calls sent to the store afterwards, against a temporary
SQLite store seen from the run as unreachable; what is still not sent, and bad files, in one line each."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from molwm import tracking
from molwm.cli import main
from molwm.outbox import StoreUnreachable
from molwm.packaging import package_for

pytestmark = pytest.mark.cli


def _kept_run(finetune_run, tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """A run whose store went away after it started and never came back: its id and its outbox file."""
    down, real = [False], tracking.store_call

    def store_call(uri, kind, payload):
        if down[0]:
            raise StoreUnreachable("connection refused")
        return real(uri, kind, payload)

    monkeypatch.setattr(tracking, "store_call", store_call)
    monkeypatch.setenv("MOLWM_TRACKING_OUTBOX", str(tmp_path / "outbox"))
    plot = tmp_path / "curve.txt"
    plot.write_text("a plot")
    tracker = tracking.MLflowTracker(experiment="replay", retry_seconds=0.0)
    with pytest.warns(UserWarning, match=r"NOT logged: 1 artifacts, 2 metric values, 1 models, kept in .*"
                                         r"\(`molwm tracking replay .*outbox.jsonl` sends them\)"):
        run_id = _log_while_down(tracker, finetune_run.checkpoint, plot, down)
    monkeypatch.setattr(tracking, "store_call", real)
    return run_id, tmp_path / "outbox" / run_id / "outbox.jsonl"


def _log_while_down(tracker, checkpoint: Path, plot: Path, down: list) -> str:
    with tracker.run("kept") as run_id:
        down[0] = True
        tracker.log_metrics({"loss": 1.0}, step=0)
        tracker.log_metrics({"loss": 0.5}, step=1)
        tracker.log_artifact(plot, "plots")
        assert tracker.log_model(checkpoint, package_for("property_model"), registered_name="replayed",
                                 alias="champion") is None
    return run_id


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_replay_sends_what_a_run_kept_and_says_what_it_could_not(finetune_run, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    run_id, box = _kept_run(finetune_run, tmp_path, monkeypatch)
    capsys.readouterr()
    gone = f"http://127.0.0.1:{_closed_port()}"  # nothing listens there: the store is still down
    assert main(["tracking", "replay", str(box), "--tracking-uri", gone]) == 1
    out = capsys.readouterr().out
    assert "sent: nothing" in out and f"NOT sent: 1 artifacts, 2 metric values, 1 models, still in {box}" in out
    assert f"{gone} is unreachable" in out and box.exists()

    store = tracking.default_tracking_uri()
    assert main(["tracking", "replay", str(box.parent), "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert "sent: 1 artifacts, 2 metric values, 1 models" in out and "NOT sent" not in out
    assert "model: models:/m-" in out and not box.exists()
    client = MlflowClient(store)
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1]
    assert [f.path for f in client.list_artifacts(run_id, "plots")] == ["plots/curve.txt"]
    assert client.get_model_version_by_alias("replayed", "champion").run_id == run_id


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read outbox file"),
    ("not json\n", "line 1 is not JSON"),
    ('{"kind": "metrics", "payload": {}}\n{"kind": "dance", "payload": {}}\n', "line 2 is not a kept tracker call"),
    ('[1, 2]\n', "line 1 is not a kept tracker call"),
])
def test_replay_of_a_missing_or_bad_file_is_one_line_and_exit_code_2(tmp_path, capsys, content, expected):
    path = tmp_path / "outbox.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["tracking", "replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("molwm: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err and str(path) in err
