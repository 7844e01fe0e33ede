"""Benchmark molecules never enter pretraining: matched by InChIKey whatever the SMILES spelling,
left out of every batch, counted and reported."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem

from molwm.config import load_config
from molwm.data.overlap import cache_inchikeys, excluded_rows, inchikeys
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.data.registry import get_card
from molwm.data.sources import load_table
from molwm.tracking import NullTracker
from molwm.train.distributed import DistContext
from molwm.train.pretrain import GraphPretrainTask, PretrainConfig, run_pretrain

pytestmark = pytest.mark.integration


def test_inchikeys_match_across_spellings_and_bad_smiles_get_none():
    keys = inchikeys(["c1ccccc1O", "Oc1ccccc1", "OC1=CC=CC=C1", "C1CC(", None])
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 27
    assert keys[3] == b"" and keys[4] == b""


def test_benchmark_molecules_are_left_out_of_every_batch(tmp_path, repo_root, local_card):
    moses = load_table(get_card("moses"), limit=256).frame["smiles"].tolist()
    # ten MOSES molecules written differently (kekulé, other atom order), two that MOSES lacks
    spelled = [Chem.MolToSmiles(Chem.MolFromSmiles(s), kekuleSmiles=True, doRandom=True) for s in moses[:10]]
    bench = spelled + ["CCCCCCCCCCCCCCCCCCCCO", "C1CC("]
    name = local_card("bench", bench, [1.0] * len(bench))  # a labelled set to keep out of pretraining
    cache = prepare_dataset(PrepareConfig(dataset="moses", limit=256, cache_dir=str(tmp_path / "cache"),
                                          progress=False)).cache
    assert len(cache_inchikeys(cache, n_jobs=1, progress=False)) == len(cache)
    rows, counts = excluded_rows(cache, [name], n_jobs=1, progress=False)
    assert counts == {name: 10} and set(cache.meta()["index"].iloc[rows]) == set(range(10))
    cfg = load_config(PretrainConfig, repo_root / "configs/pretrain/tiny.yaml",
                      [f"exclude=[{name}]", f"cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'run'}",
                       "max_steps=16", "batch_size=32"])
    task = GraphPretrainTask(cfg)
    task.prepare(DistContext(), progress=False)
    seen = np.concatenate([task.data.rows(step) for step in range(16)])  # two epochs of 7 steps, and more
    assert task.data.n == 246 and not set(seen) & set(rows)
    tracker = NullTracker()
    run_pretrain(cfg, tracker, progress=False)
    assert tracker.params["data.excluded"] == 10 and tracker.params[f"data.excluded.{name}"] == 10
    assert any(a.endswith("excluded.csv") for a in tracker.artifacts)
