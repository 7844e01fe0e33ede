"""The vector index: exact and approximate backends, recall against exact search, the model's digest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from molwm.query import MoleculeModel, ReferenceSet, neighbour_frame
from molwm.screening.index import SEARCHERS, ExactSearch, choose_backend, load_index, recall_at, write_index
from molwm.screening.shards import ScreeningError

pytestmark = pytest.mark.integration

pytest.importorskip("faiss", reason="the index backends come with the 'scale' extra (pip install 'molwm[scale]')")


@pytest.fixture(scope="module")
def base():
    return MoleculeModel.load("molwm:base")


def _clustered(n=3000, dim=16, seed=0):
    """Unit vectors around 30 centres: neighbours are meaningful, as in an embedding space."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, dim))
    x = centres[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ref(unit):
    n = len(unit)
    return ReferenceSet("toy", np.array([f"C{i}" for i in range(n)], dtype=object),
                        np.array([f"id{i}" for i in range(n)], dtype=object), unit)


@pytest.mark.parametrize("backend", ["faiss-hnsw", "usearch"])
def test_approximate_backends_find_the_exact_neighbours(backend):
    pytest.importorskip(backend.split("-")[0])
    unit = _clustered()
    searcher = SEARCHERS[backend].build(unit, {}, threads=1)
    assert recall_at(searcher, unit) >= 0.95
    idx, sim = searcher.search(unit[:5], 3)
    assert idx.shape == (5, 3) and (idx[:, 0] == np.arange(5)).all()  # each finds itself first
    np.testing.assert_allclose(sim[:, 0], 1.0, atol=1e-4)
    assert (np.diff(sim, axis=1) <= 1e-6).all()  # best first


def test_recall_is_low_for_a_searcher_that_returns_noise():
    unit = _clustered()

    class Random:
        def search(self, q, k):
            rng = np.random.default_rng(0)
            return rng.integers(0, len(unit), (len(q), k)), np.zeros((len(q), k), np.float32)

    assert recall_at(Random(), unit) < 0.2
    assert recall_at(ExactSearch(unit), unit) == 1.0


def test_auto_is_exact_for_small_sets_and_unknown_backends_are_refused():
    assert choose_backend("auto", 1000) == "exact"
    assert choose_backend("auto", 10_000_000) == "faiss-hnsw"
    with pytest.raises(ScreeningError, match="unknown index backend 'annoy'"):
        choose_backend("annoy", 10)


@pytest.mark.parametrize("backend", ["exact", "faiss-hnsw"])
def test_an_index_answers_neighbour_queries_like_exact_search(tmp_path, base, backend):
    unit = _clustered(n=2000, dim=base.embedding_dim)
    ref = _ref(unit)
    meta = write_index(tmp_path / "idx", ref, base, backend)
    assert meta["backend"] == backend and meta["n"] == 2000 and meta["model_digest"] == base.digest
    assert meta["recall_at_10"] >= 0.95
    loaded = load_index(tmp_path / "idx", base)
    queries = unit[[3, 500, 1999]] + 0.01
    status = ["ok"] * 3
    got = neighbour_frame(["a", "b", "c"], queries, status, loaded, 5)
    want = neighbour_frame(["a", "b", "c"], queries, status, ref, 5)
    assert got["neighbour_1_id"].tolist() == want["neighbour_1_id"].tolist() == ["id3", "id500", "id1999"]
    np.testing.assert_allclose(got["similarity_5"], want["similarity_5"], atol=1e-4)
    assert len(loaded.unit) == 2000  # the sample behind embedding maps


def test_an_index_of_another_model_is_refused_in_one_line(tmp_path, base):
    write_index(tmp_path / "idx", _ref(_clustered(n=100, dim=base.embedding_dim)), base, "exact")
    other = MoleculeModel.load("molwm:base")
    other.digest = "f" * 64
    with pytest.raises(ScreeningError, match=r"built with model molwm:base \(digest 760715ffb573\), not molwm:base "
                                             r"\(digest ffffffffffff\); rebuild it") as err:
        load_index(tmp_path / "idx", other)
    assert "\n" not in str(err.value)
    (tmp_path / "idx" / "index.json").unlink()
    with pytest.raises(ScreeningError, match="not a molwm index"):
        load_index(tmp_path / "idx", base)
    with pytest.raises(FileNotFoundError, match="no index at"):
        load_index(tmp_path / "nowhere", base)


def test_index_json_records_what_it_was_built_from(tmp_path, base):
    write_index(tmp_path / "idx", _ref(_clustered(n=200, dim=base.embedding_dim)), base, "usearch")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert {"model", "model_digest", "reference", "backend", "settings", "recall_at_10", "build_seconds",
            "query_1000_seconds", "digest"} <= set(meta)
    assert meta["settings"]["connectivity"] == 32


def test_building_a_faiss_index_leaves_torch_threads_as_they_were():
    """FAISS and torch share one OpenMP runtime: a build with 2 threads must not leave torch on 2 (it made
    later bit-exact resume tests in the same process fail)."""
    pytest.importorskip("faiss")
    import torch

    before = torch.get_num_threads()
    SEARCHERS["faiss-hnsw"].build(_clustered(), {}, threads=before + 1)
    assert torch.get_num_threads() == before
