"""Descriptor targets beside a graph cache: keyed by content, built once (resuming an interrupted build),
read in any row order; statistics fitted on the rows given only, standardised, clipped and NaN-preserving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featurizers.descriptors import compute_descriptors, descriptor_spec
from molwm.data.descriptors import DescriptorStats, DescriptorTable, descriptor_key, prepare_descriptors
from molwm.data.prepare import PrepareConfig, prepare_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("desc")
    return prepare_dataset(PrepareConfig(dataset="moses", limit=120, shard_size=50, cache_dir=str(folder),
                                         progress=False)).cache


def test_the_table_is_aligned_with_the_cache_and_keyed_by_content(cache):
    table = prepare_descriptors(cache, n_jobs=2, progress=False)
    assert len(table) == len(cache) and len(table.manifest["shards"]) == 3
    smiles = cache.meta()["smiles"].tolist()
    rows = np.array([117, 3, 64, 3])  # any order, repeats: the rows of those molecules
    np.testing.assert_array_equal(table.rows(rows), compute_descriptors([smiles[i] for i in rows]))
    assert table.path.name == descriptor_key(cache, descriptor_spec())
    assert table.path.parent.parent == cache.path  # beside the graph shards


def test_an_interrupted_build_resumes_and_a_finished_one_is_reused(cache):
    table = prepare_descriptors(cache, n_jobs=1, progress=False)
    first = (table.path / "shard_00001.npy").read_bytes()
    (table.path / "manifest.json").unlink()
    (table.path / "shard_00002.npy").unlink()
    kept = (table.path / "shard_00000.npy").stat().st_mtime_ns
    again = prepare_descriptors(cache, n_jobs=1, progress=False)
    assert (again.path / "shard_00000.npy").stat().st_mtime_ns == kept  # not recomputed
    assert (again.path / "shard_00001.npy").read_bytes() == first and len(again) == len(cache)
    seconds = json.loads((again.path / "manifest.json").read_text())["seconds"]
    assert prepare_descriptors(cache, progress=False).manifest["seconds"] == seconds  # reused, not rebuilt
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        DescriptorTable.open(again.path.parent / "nope")


def test_statistics_come_from_the_rows_given_and_standardise_clip_and_keep_nan(cache):
    table = prepare_descriptors(cache, progress=False)
    train, other = np.arange(0, 60), np.arange(60, 120)
    stats = DescriptorStats.fit(table, train)
    x = table.rows(train)
    j = stats.columns[stats.names.index("tpsa")]
    assert stats.median[stats.names.index("tpsa")] == pytest.approx(np.nanmedian(x[:, j]))
    on_other = DescriptorStats.fit(table, other)
    shared = [n for n in stats.names if n in on_other.names]
    assert not np.allclose([on_other.median[on_other.names.index(n)] for n in shared],
                           [stats.median[stats.names.index(n)] for n in shared])  # the rows given, only
    constant = [n for n in table.names if np.nanstd(x[:, table.names.index(n)]) == 0]
    assert constant and not set(constant) & set(stats.names)  # no information: dropped
    z = stats.transform(table.rows(other))
    assert z.shape == (60, stats.size) and np.nanmax(np.abs(z)) <= stats.clip
    holes = table.rows(other[:2]).copy()
    holes[0, stats.columns[0]] = np.nan
    assert np.isnan(stats.transform(holes)[0, 0]) and not np.isnan(stats.transform(holes)[1, 0])
    back = DescriptorStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_array_equal(back.transform(table.rows(other)), z)
    small = DescriptorStats.fit(table, train, max_rows=10, seed=1)
    assert small.n_rows == 10
