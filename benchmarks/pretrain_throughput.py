"""Graphs/s of a full JEPA step beside plain supervised GIN steps (ours and PyG's), same graphs, same run.

The JEPA step is context encoder + EMA target encoder + predictor, forward and
backward, plus the EMA update; the plain step is the same GINE encoder with a
linear head on a regression target (forward and backward); the PyG step is the
peer doing the same work: a stock PyG GINE network of the same width and depth
(one embedding table per categorical column summed, ``GINEConv`` with the same
2-layer MLP, pre-norm residual, mean pooling, same head), fed the same batches.
Batches come from the MOSES cache (positional codes and masks built per step, as
in training, and timed separately; the PyG network does not read the positional
code). Steps alternate so that machine noise hits all alike. Usage::

    python benchmarks/pretrain_throughput.py [--batch 256] [--steps 20] [--dim 128] [--layers 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


class PygGINE(torch.nn.Module):
    """The peer: stock PyG ``GINEConv`` layers (every bond projected in every layer), same sizes as ours."""

    def __init__(self, spec, dim: int, layers: int):
        super().__init__()
        from torch_geometric.nn import GINEConv

        self.atom = torch.nn.ModuleList(torch.nn.Embedding(n, dim) for n in spec.atom_sizes)
        self.bond = torch.nn.ModuleList(torch.nn.Embedding(n, dim) for n in spec.bond_sizes)
        self.convs = torch.nn.ModuleList(
            GINEConv(torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(),
                                         torch.nn.Linear(2 * dim, dim)), train_eps=True, edge_dim=dim)
            for _ in range(layers))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(dim) for _ in range(layers))
        self.out_norm = torch.nn.LayerNorm(dim)

    def embed(self, b) -> torch.Tensor:
        from torch_geometric.nn import global_mean_pool

        h = sum(t(b.x[:, j]) for j, t in enumerate(self.atom))  # [N, D]
        e = sum(t(b.edge_attr[:, j]) for j, t in enumerate(self.bond))  # [E, D]
        for conv, norm in zip(self.convs, self.norms):
            h = h + conv(norm(h), b.edge_index, e)
        return global_mean_pool(self.out_norm(h), b.batch, size=b.num_graphs)  # [B, D]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--molecules", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from featurizers.molecule import GRAPH_SPEC
    from molwm.data.batch import CachedGraphs
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
    from molwm.jepa.masking import MaskConfig, sample_graph_masks
    from molwm.jepa.model import GraphJEPA, JEPAConfig

    prep = prepare_dataset(PrepareConfig(dataset="moses", limit=args.molecules, progress=False))
    data = CachedGraphs(prep.cache, with_labels=False)
    enc_cfg = GraphEncoderConfig(dim=args.dim, layers=args.layers)
    jepa = GraphJEPA(GRAPH_SPEC, JEPAConfig(encoder=enc_cfg))
    gin = GraphEncoder(GRAPH_SPEC, enc_cfg)
    head = torch.nn.Linear(args.dim, 1)
    pyg = PygGINE(GRAPH_SPEC, args.dim, args.layers)
    pyg_head = torch.nn.Linear(args.dim, 1)
    opt_j = torch.optim.AdamW([p for p in jepa.parameters() if p.requires_grad], lr=1e-4)
    opt_g = torch.optim.AdamW(list(gin.parameters()) + list(head.parameters()), lr=1e-4)
    opt_p = torch.optim.AdamW(list(pyg.parameters()) + list(pyg_head.parameters()), lr=1e-4)
    rng = np.random.default_rng(0)
    times = {"data (batch + PE + masks)": 0.0, "JEPA step": 0.0, "plain GIN step": 0.0,
             "PyG GINE step (peer)": 0.0}
    for step in range(args.steps + 2):
        t0 = time.perf_counter()
        b = data.batch(rng.choice(len(data), args.batch, replace=False))
        enc_cfg.prepare(b, torch.Generator().manual_seed(step))
        masks = sample_graph_masks(b, MaskConfig(), rng)
        y = b.x[:, 0].float().reshape(-1)  # any per-molecule target will do for timing
        target = torch.zeros(b.num_graphs).index_add_(0, b.batch, y).unsqueeze(1) / 100
        t1 = time.perf_counter()
        out = jepa(b, masks)
        opt_j.zero_grad()
        out.loss.backward()
        opt_j.step()
        jepa.ema_update(0.996)
        t2 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(head(gin.embed(b)), target)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        t3 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(pyg_head(pyg.embed(b)), target)
        opt_p.zero_grad()
        loss.backward()
        opt_p.step()
        t4 = time.perf_counter()
        if step >= 2:  # warm-up steps excluded
            times["data (batch + PE + masks)"] += t1 - t0
            times["JEPA step"] += t2 - t1
            times["plain GIN step"] += t3 - t2
            times["PyG GINE step (peer)"] += t4 - t3
    n = args.batch * args.steps
    n_ours = sum(p.numel() for p in gin.parameters())
    n_pyg = sum(p.numel() for p in pyg.parameters())
    print(f"batch {args.batch}, {args.steps} steps, encoder dim {args.dim} x {args.layers} layers "
          f"(parameters: ours {n_ours:,}, PyG peer {n_pyg:,}), torch threads {torch.get_num_threads()}")
    print("| what | graphs/s |")
    print("|---|---|")
    for k, v in times.items():
        print(f"| {k} | {n / v:,.0f} |")
    ratio = times["plain GIN step"] / times["JEPA step"]
    vs_pyg = times["PyG GINE step (peer)"] / times["plain GIN step"]
    print(f"JEPA / plain GIN throughput: {ratio:.2f}x  (aim >= 0.4x)")
    print(f"ours / PyG GINE throughput (same supervised step): {vs_pyg:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "graphs_per_s": {k: n / v for k, v in times.items()}, "jepa_over_plain": ratio,
            "ours_over_pyg": vs_pyg, "params": {"ours": n_ours, "pyg": n_pyg}, "batch": args.batch,
            "steps": args.steps, "threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
