"""Config values and split files are checked in one line before a run starts (issue 26 items 5, 8, 9)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from molwm.config import ConfigError, load_config, read_yaml
from molwm.data.splits import SplitError, dataset_record, load_splits, save_splits
from molwm.train.finetune import FinetuneConfig
from molwm.train.pretrain import PretrainConfig

TINY = "configs/finetune/tiny.yaml"


@pytest.mark.unit
@pytest.mark.parametrize("override, message", [
    ("lr=-0.001", "lr must be positive, got -0.001"),
    ("lr=.nan", "config key 'lr': must be a finite number, got nan"),
    ("lr=0", "lr must be positive, got 0.0"),
    ("grad_clip=.inf", "config key 'grad_clip': must be a finite number, got inf"),
    ("encoder.dim=0", "encoder: dim must be at least 1, got 0"),
    ("head.dropout=1.5", "head: dropout must be in [0, 1), got 1.5"),
    ("weight_decay=-1", "weight_decay must be 0 or more, got -1.0"),
    ("split.fractions=[1.0,0.0,0.0]", "split: fractions must be (train, val, test), each above 0"),
    ("seeds=[0,0]", "seeds must be distinct, got [0, 0]"),
])
def test_bad_numbers_are_one_line_naming_the_key(repo_root, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(FinetuneConfig, repo_root / TINY, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.unit
def test_nested_encoder_sizes_are_checked_in_pretraining_too(repo_root):
    with pytest.raises(ConfigError, match=r"model.encoder: dim must be at least 1, got -4"):
        load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml", ["model.encoder.dim=-4"])


@pytest.mark.unit
def test_yaml_12_numbers_are_floats(repo_root, tmp_path):
    assert load_config(FinetuneConfig, repo_root / TINY, ["lr=1e-3"]).lr == 0.001
    path = tmp_path / "c.yaml"
    path.write_text("dataset: freesolv\nmode: scratch\nlr: 3e-4\nweight_decay: 1E-5\n")
    cfg = load_config(FinetuneConfig, path)
    assert (cfg.lr, cfg.weight_decay) == (3e-4, 1e-5)


@pytest.mark.unit
def test_an_alias_bomb_is_refused_before_it_grows(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")  # ~850 bytes, 430 million values expanded
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml: YAML aliases \(\*name\) expand to over 100,000 values"):
        load_config(FinetuneConfig, path)
    assert time.perf_counter() - t0 < 1.0
    path.write_text("dataset: &d freesolv\nrun_name: *d\nmode: scratch\n")  # a small alias is fine
    assert load_config(FinetuneConfig, path).run_name == "freesolv"
    path.write_text("a: &a [*a]\n")
    with pytest.raises(ConfigError, match="refers to a section that contains it"):
        read_yaml(path)


def _split(n):
    rows = np.arange(n)
    return [(rows[: n - 2], rows[n - 2: n - 1], rows[n - 1:])]


@pytest.mark.unit
def test_a_split_file_of_another_dataset_is_refused_naming_both(tmp_path):
    ours = dataset_record(range(120), ["C"] * 120, 120)
    save_splits(_split(642), tmp_path / "big.json", dataset_record(range(642), ["CC"] * 642, 642))
    with pytest.raises(SplitError, match=r"big.json was written for a dataset of 642 rows \(SMILES sha256 "
                                         r"[0-9a-f]{12}\), not dataset 'x' \(120 rows, SMILES sha256 [0-9a-f]{12}\)"):
        load_splits(tmp_path / "big.json", 120, ours, "dataset 'x'")
    save_splits(_split(120), tmp_path / "edited.json", dataset_record(range(120), ["O"] * 120, 120))
    with pytest.raises(SplitError, match="edited.json was written for a dataset of 120 rows"):
        load_splits(tmp_path / "edited.json", 120, ours, "dataset 'x'")
    save_splits(_split(120), tmp_path / "same.json", ours)
    assert len(load_splits(tmp_path / "same.json", 120, ours)[0][0]) == 118
    assert json.loads((tmp_path / "same.json").read_text())[0]["n_rows"] == 120


@pytest.mark.unit
def test_an_older_split_file_is_checked_by_its_row_numbers(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{"train": list(range(600)), "val": [600], "test": [641]}]))  # no record
    with pytest.raises(SplitError, match=r"entry 0: row index 641 is out of range for dataset 'x' \(120 rows\)"):
        load_splits(path, 120, dataset_record(range(120), ["C"] * 120, 120), "dataset 'x'")
    path.write_text(json.dumps([{"train": [0, 1], "val": [2], "test": [3]}]))
    assert len(load_splits(path, 120, dataset_record(range(120), ["C"] * 120, 120))) == 1
    path.write_text(json.dumps([{"train": [[0, "a"]], "val": [2], "test": [3]}]))
    with pytest.raises(SplitError, match="must be lists of row numbers"):
        load_splits(path, 120)
