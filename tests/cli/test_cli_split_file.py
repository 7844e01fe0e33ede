"""molwm finetune refuses a split file written for another dataset, in one line (issue 26 item 9)."""

from __future__ import annotations

import pytest

from molwm.cli import main

pytestmark = pytest.mark.cli


def test_finetune_refuses_a_split_file_of_another_dataset(finetune_run, repo_root, capsys, tmp_path):
    # finetune_run's split.json records FreeSolv's first 120 rows; the same card's first 60 is another dataset
    code = main(["finetune", "--config", str(repo_root / "configs/finetune/tiny.yaml"), "--no-track",
                 "--no-progress", "limit=60", f"split.file={finetune_run.split_file}", f"out_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "was written for a dataset of 120 rows" in err and "not dataset 'freesolv' (60 rows" in err
