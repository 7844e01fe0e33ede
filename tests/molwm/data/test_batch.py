"""GraphBatch built from cached arrays equals one built from PyG graphs; order is kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurizers import featurize_arrays, featurize_smiles
from molwm.data.batch import CachedGraphs, GraphBatch, concat_batches
from molwm.data.prepare import PrepareConfig, prepare_dataset

pytestmark = pytest.mark.unit

SMILES = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "[Na+].[Cl-]", "C", "C1CC1N"]


def _same(a: GraphBatch, b: GraphBatch):
    for name in ("x", "edge_index", "edge_attr", "batch", "ptr", "index"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_from_arrays_matches_from_graphs():
    arrays, _ = featurize_arrays(SMILES)
    graphs, _ = featurize_smiles(SMILES)
    rows = [4, 0, 2, 5]
    _same(GraphBatch.from_arrays(arrays, rows), GraphBatch.from_graphs([graphs[i] for i in rows]))


def test_select_and_concat():
    arrays, _ = featurize_arrays(SMILES)
    full = GraphBatch.from_arrays(arrays, range(len(SMILES)))
    _same(full.select([3, 1, 5]), GraphBatch.from_arrays(arrays, [3, 1, 5]))
    joined = concat_batches([GraphBatch.from_arrays(arrays, [0, 1]), GraphBatch.from_arrays(arrays, [2, 3, 4, 5])])
    _same(joined, full)


def test_cached_graphs_keep_row_order_across_shards(tmp_path):
    res = prepare_dataset(PrepareConfig(dataset="freesolv", cache_dir=str(tmp_path), shard_size=100, progress=False,
                                        n_jobs=1))
    data = CachedGraphs(res.cache)
    assert len(data) == 642 and len(data.shards) == 7
    rows = np.array([640, 3, 250, 99, 100, 5])
    b = data.batch(rows)
    assert b.index.tolist() == data.source_index[rows].tolist()
    expected = np.concatenate(data.labels)[rows]
    assert np.allclose(b.y.numpy(), expected)
    single = [data.batch([r]) for r in rows]
    _same(b, concat_batches(single))


def test_cached_graphs_limit_reads_the_first_rows_of_the_same_shards(tmp_path):
    res = prepare_dataset(PrepareConfig(dataset="freesolv", cache_dir=str(tmp_path), shard_size=100, progress=False,
                                        n_jobs=1))
    full = CachedGraphs(res.cache)
    head = CachedGraphs(res.cache, limit=250)
    assert len(head) == 250 and len(head.shards) == 3  # the 4th to 7th shards are never opened
    assert head.source_index.tolist() == full.source_index[:250].tolist()
    assert np.allclose(np.concatenate(head.labels), np.concatenate(full.labels)[:250])
    rows = np.array([249, 0, 120, 99, 100])
    _same(head.batch(rows), full.batch(rows))
    assert np.allclose(head.batch(rows).y.numpy(), full.batch(rows).y.numpy())
    with pytest.raises(IndexError):
        head.batch([250])  # past the limit, although the shard holds it
    assert len(CachedGraphs(res.cache, limit=10_000)) == 642
    with pytest.raises(ValueError):
        CachedGraphs(res.cache, limit=0)


def test_releasing_mapped_pages_keeps_batches_identical(tmp_path):
    res = prepare_dataset(PrepareConfig(dataset="freesolv", cache_dir=str(tmp_path), shard_size=100, progress=False,
                                        n_jobs=1))
    kept = CachedGraphs(res.cache, release_every=0)
    released = CachedGraphs(res.cache, release_every=1)
    rng = np.random.default_rng(0)
    for _ in range(5):  # pages unmapped before every batch are read again from the file
        rows = rng.choice(len(kept), 32, replace=False)
        a, b = kept.batch(rows), released.batch(rows)
        _same(a, b)
        assert torch.equal(a.y, b.y)
    assert isinstance(released.shards[0].atom_x, np.memmap)  # still memory-mapped, nothing loaded whole
