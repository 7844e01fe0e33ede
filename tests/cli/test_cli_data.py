"""``molwm data ...`` end to end, through the real entry points, on a temporary MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli


def test_data_list_shows_every_builtin_card(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("moses", "b3db_classification", "solubility", "freesolv", "chembl_drugs", "esol_molnet"):
        assert name in out
    assert "classification (roc_auc)" in out


def test_data_show(capsys):
    assert main(["data", "show", "b3db_classification"]) == 0
    out = capsys.readouterr().out
    assert "rows:      7,807 (checksums verified)" in out
    assert "sha256=47a160ae" in out and "CC0-1.0" in out and "Meng" in out
    assert "prepared caches: none" in out


def test_data_prepare_tracks_in_mlflow(capsys, tmp_path):
    from mlflow.tracking import MlflowClient

    assert main(["data", "prepare", "freesolv", "--no-progress", "--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "freesolv: 642 read, 642 featurized, 0 rejected (none)" in out
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("molwm-data")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["n_ok"] == 642 and run.data.metrics["n_rejected"] == 0
    assert run.data.tags["dataset"] == "freesolv"
    assert run.data.params["dataset"] == "freesolv"
    # second time: cache hit, and `data show` lists the cache
    assert main(["data", "prepare", "freesolv", "--no-progress", "--no-track"]) == 0
    assert "cache hit" in capsys.readouterr().out
    assert main(["data", "show", "freesolv"]) == 0
    assert "limit all: 642 graphs, 0 rejected" in capsys.readouterr().out


def test_user_card_prepare_with_overrides(local_csv_card, capsys):
    code = main(["data", "prepare", "mini", "--cards", str(local_csv_card.parent), "--no-track", "--no-progress",
                 "shard_size=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mini: 6 read, 4 featurized, 2 rejected (not_string: 1, parse_error: 1)" in out


def test_errors_are_messages_not_tracebacks(capsys):
    assert main(["data", "show", "no_such_set"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("molwm: error: unknown dataset 'no_such_set'") and "Traceback" not in err
    assert main(["data", "prepare", "freesolv", "--no-track", "chunk_sise=5"]) == 2
    assert "unknown config key 'chunk_sise' (did you mean 'chunk_size'?)" in capsys.readouterr().err
    assert main(["data", "prepare", "freesolv", "--no-track", "--limit", "0"]) == 2
    assert "limit must be positive" in capsys.readouterr().err


def test_data_show_of_a_file_that_fails_its_checksum_exits_2_in_one_line(local_csv_card, capsys):
    """Issue 26: the card was shown and the exit code was 0, the mismatch spread over five lines."""
    (local_csv_card.parent.parent / "mini.csv").write_text("smiles,activity,name\nCCO,9.9,changed\n")
    assert main(["data", "show", "mini", "--cards", str(local_csv_card.parent)]) == 2
    captured = capsys.readouterr()
    assert "mini.yaml" in captured.out and "checksum mismatch" not in captured.out  # the card, then the error
    (line,) = captured.err.splitlines()
    assert line.startswith("molwm: error: dataset 'mini': checksum mismatch for ") and "expected sha256" in line


def test_one_broken_card_does_not_hide_the_others(local_csv_card, tmp_path, monkeypatch, capsys):
    """Issue 26: one unreadable card in MOLWM_DATASETS ended `data list` (and lookups by name) for every card."""
    broken = tmp_path / "more"
    broken.mkdir()
    (broken / "zz_broken.yaml").write_text("name: zz_broken\nsource: [1\n")  # not valid YAML
    (broken / "renamed.yaml").write_text(local_csv_card.read_text().replace("../mini.csv", str(tmp_path / "mini.csv")))
    monkeypatch.setenv("MOLWM_DATASETS", str(broken))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "freesolv" in out and "mini" in out  # 'mini' is in renamed.yaml: found by reading every card
    row = next(line for line in out.splitlines() if line.startswith("zz_broken "))
    assert row.split()[1:5] == ["?", "?", "?", "broken"]
    (reason,) = [line for line in out.splitlines() if line.strip().startswith("zz_broken: broken card:")]
    assert "zz_broken.yaml: not valid YAML" in reason
    assert main(["data", "show", "mini"]) == 0  # looked up by name past the broken file
    assert main(["data", "show", "zz_broken"]) == 2  # the broken card itself is still an error
    assert "not valid YAML" in capsys.readouterr().err


def test_console_script_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "molwm", "data", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "moses" in proc.stdout
