"""prepare_dataset + GraphCache: shards, rejects report, cache hits, invalidation."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

import featurizers.molecule as molecule
import molwm.data.prepare as prepare_mod
from featurizers import read_rejects
from molwm.data.cache import GraphCache, GraphDataset, cache_key
from molwm.data.prepare import PrepareConfig, prepare_dataset
from molwm.tracking import NullTracker

pytestmark = pytest.mark.integration


def _config(card, tmp_path, **kw):
    return PrepareConfig(dataset=str(card), cache_dir=str(tmp_path / "c"), progress=False, n_jobs=1, **kw)


def test_prepare_writes_shards_rejects_and_tracks(local_csv_card, tmp_path):
    tracker = NullTracker()
    result = prepare_dataset(_config(local_csv_card, tmp_path, shard_size=2), tracker)
    assert (result.n_input, result.n_ok, len(result.rejects)) == (6, 4, 2)
    assert {r.code for r in result.rejects} == {"parse_error", "not_string"}
    assert [r.index for r in read_rejects(result.rejects_path)] == [2, 4]
    assert len(result.cache.shard_names) == 2
    graphs = result.cache.graphs()
    assert [g.index for g in graphs] == [0, 1, 3, 5]
    assert graphs[1].smiles == "c1ccccc1O" and graphs[1].y.tolist() == [[2.0]]
    assert np.isnan(graphs[3].y.item())
    metrics = {k: v for k, v, _ in tracker.metrics}
    assert metrics["n_ok"] == 4 and metrics["n_rejected"] == 2
    assert metrics["rejected.parse_error"] == 1 and metrics["rejected.not_string"] == 1
    assert any(a.endswith("rejects.csv") for a in tracker.artifacts)
    assert tracker.datasets[0]["name"] == "mini" and len(tracker.datasets[0]["digest"]) == 64
    assert tracker.params["dataset"] == str(local_csv_card)


def test_second_prepare_is_a_cache_hit(local_csv_card, tmp_path, monkeypatch):
    first = prepare_dataset(_config(local_csv_card, tmp_path))

    def no_read(*args, **kwargs):
        raise AssertionError("a cache hit read the source table")

    with monkeypatch.context() as m:  # the key comes from the files' checksums: the table is never read
        m.setattr(prepare_mod, "load_table", no_read)
        second = prepare_dataset(_config(local_csv_card, tmp_path))
    assert not first.cache_hit and second.cache_hit
    assert second.cache.path == first.cache.path and second.n_input == first.n_input == 6
    assert [r.index for r in second.rejects] == [2, 4]
    forced = prepare_dataset(_config(local_csv_card, tmp_path, force=True))
    assert not forced.cache_hit


def test_changed_featurizer_spec_never_reads_stale_shards(local_csv_card, tmp_path, monkeypatch):
    first = prepare_dataset(_config(local_csv_card, tmp_path))
    new_spec = replace(molecule.GRAPH_SPEC, version="999")
    monkeypatch.setattr(prepare_mod, "GRAPH_SPEC", new_spec)
    second = prepare_dataset(_config(local_csv_card, tmp_path))
    assert not second.cache_hit and second.cache.path != first.cache.path
    assert second.cache.manifest["spec"]["version"] == "999"
    assert cache_key("abc", None, new_spec) != cache_key("abc", None, molecule.GRAPH_SPEC)
    assert cache_key("abc", 10) != cache_key("abc", None) != cache_key("abd", None)
    assert cache_key("abc", None, max_smiles_length=5) != cache_key("abc", None, max_smiles_length=6)


def test_changed_source_file_changes_the_key(local_csv_card, tmp_path):
    first = prepare_dataset(_config(local_csv_card, tmp_path))
    csv = local_csv_card.parent.parent / "mini.csv"
    csv.write_text(csv.read_text() + "CCCC,1.0,butane\n")
    second = prepare_dataset(_config(local_csv_card, tmp_path, verify_checksums=False))
    assert second.cache.path != first.cache.path and second.n_ok == 5


def test_interrupted_build_is_rebuilt(local_csv_card, tmp_path):
    first = prepare_dataset(_config(local_csv_card, tmp_path))
    (first.cache.path / "manifest.json").unlink()
    shutil.rmtree(first.cache.path / first.cache.shard_names[0])
    again = prepare_dataset(_config(local_csv_card, tmp_path))
    assert not again.cache_hit and again.n_ok == 4
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        GraphCache.open(tmp_path / "nowhere")


def test_graph_dataset_matches_iter_graphs(tmp_path):
    cfg = PrepareConfig(dataset="freesolv", cache_dir=str(tmp_path / "c"), progress=False, n_jobs=2,
                        shard_size=100, chunk_size=64)
    result = prepare_dataset(cfg)
    assert result.n_ok == 642 and len(result.cache.shard_names) == 7
    ds = GraphDataset(result.cache)
    assert len(ds) == 642
    graphs = result.cache.graphs()
    for i in (0, 99, 100, 641, -1):
        a, b = ds[i], graphs[i]
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and a.index == b.index
        assert torch.equal(a.y, b.y)
    with pytest.raises(IndexError):
        ds[642]
    manifest = json.loads((result.cache.path / "manifest.json").read_text())
    assert manifest["targets"] == ["hydration_free_energy"] and manifest["n_ok"] == 642


def test_moses_subset_from_the_package(tmp_path):
    cfg = PrepareConfig(dataset="moses", limit=3000, cache_dir=str(tmp_path / "c"), progress=False, n_jobs=2)
    result = prepare_dataset(cfg)
    assert result.n_input == 3000 and result.n_ok + len(result.rejects) == 3000
    assert result.n_ok >= 2990
    meta = result.cache.meta()
    assert meta["index"].is_monotonic_increasing and len(meta) == result.n_ok


def test_largest_fragment_is_part_of_the_cache_key(tmp_path):
    base = dict(dataset="chembl_drugs", limit=50, cache_dir=str(tmp_path / "c"), progress=False, n_jobs=1)
    whole = prepare_dataset(PrepareConfig(**base))
    parent = prepare_dataset(PrepareConfig(**base, largest_fragment=True))
    assert whole.cache.path != parent.cache.path
    g_whole, g_parent = whole.cache.graphs()[0], parent.cache.graphs()[0]
    assert g_whole.smiles == g_parent.smiles == "Br.CC(N)Cc1ccc(O)cc1"
    assert g_whole.num_nodes == g_parent.num_nodes + 1
