"""Masks: connected blocks, the configured fraction, determinism, disjoint context."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from featurizers import featurize_arrays
from molwm.data.batch import GraphBatch
from molwm.data.registry import get_card
from molwm.data.sources import load_table
from molwm.jepa.masking import MaskConfig, sample_graph_masks

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def batch():
    smiles = load_table(get_card("moses"), limit=64).frame["smiles"].tolist() + ["CCO", "C", "c1ccccc1"]
    arrays, _ = featurize_arrays(smiles)
    return GraphBatch.from_arrays(arrays, range(len(arrays)))


def _connected(nodes: set[int], edge_index) -> bool:
    adj: dict[int, set[int]] = {n: set() for n in nodes}
    for u, v in edge_index.T.tolist():
        if u in nodes and v in nodes:
            adj[u].add(v)
    start = next(iter(nodes))
    seen, queue = {start}, deque([start])
    while queue:
        for v in adj[queue.popleft()] - seen:
            seen.add(v)
            queue.append(v)
    return seen == nodes


@pytest.mark.parametrize("strategy", ["khop", "ring", "mixed"])
def test_blocks_are_connected_and_within_fraction(batch, strategy):
    cfg = MaskConfig(target_fraction=0.3, n_blocks=2, strategy=strategy, min_context=2)
    m = sample_graph_masks(batch, cfg, np.random.default_rng(0))
    ptr = batch.ptr.tolist()
    for block in m.target_block.unique().tolist():
        nodes = set(m.target_idx[m.target_block == block].tolist())
        assert _connected(nodes, batch.edge_index)
    for mol in range(batch.num_graphs):
        n = ptr[mol + 1] - ptr[mol]
        hidden = int((m.target_mol == mol).sum())
        assert hidden <= max(0, min(round(0.3 * n), n - 2))
        assert int(m.keep[ptr[mol] : ptr[mol + 1]].sum()) == n - hidden
        if n >= 10:
            assert hidden >= 1
    assert not m.keep[m.target_idx].any()  # targets never visible to the context
    assert m.target_idx.unique().numel() == m.target_idx.numel()
    assert (m.target_mol.diff() >= 0).all()  # grouped by molecule, as the predictor expects
    frac = (~m.keep).float().mean().item()
    assert 0.2 < frac <= 0.31


def test_masks_are_deterministic_by_seed(batch):
    a = sample_graph_masks(batch, MaskConfig(), np.random.default_rng(5))
    b = sample_graph_masks(batch, MaskConfig(), np.random.default_rng(5))
    c = sample_graph_masks(batch, MaskConfig(), np.random.default_rng(6))
    assert a.target_idx.tolist() == b.target_idx.tolist()
    assert a.target_idx.tolist() != c.target_idx.tolist()


def test_tiny_molecules_keep_their_context(batch):
    m = sample_graph_masks(batch, MaskConfig(target_fraction=0.9, min_context=2), np.random.default_rng(0))
    ptr = batch.ptr.tolist()
    for mol in range(batch.num_graphs):
        assert int(m.keep[ptr[mol] : ptr[mol + 1]].sum()) >= min(2, ptr[mol + 1] - ptr[mol])
