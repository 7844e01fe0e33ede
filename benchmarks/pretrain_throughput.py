"""Graphs/s of a full JEPA step beside a plain supervised GIN step, same graphs, same run.

The JEPA step is context encoder + EMA target encoder + predictor, forward and
backward, plus the EMA update; the plain step is the same GINE encoder with a
linear head on a regression target (forward and backward). Batches come from
the MOSES cache (positional codes and masks built per step, as in training,
and timed separately). Steps alternate so that machine noise hits both alike.
Usage::

    python benchmarks/pretrain_throughput.py [--batch 256] [--steps 20] [--dim 128] [--layers 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--molecules", type=int, default=20000)
    args = parser.parse_args()

    from featurizers.molecule import GRAPH_SPEC
    from molwm.data.batch import CachedGraphs
    from molwm.data.prepare import PrepareConfig, prepare_dataset
    from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig, structural_pe
    from molwm.jepa.masking import MaskConfig, sample_graph_masks
    from molwm.jepa.model import GraphJEPA, JEPAConfig

    prep = prepare_dataset(PrepareConfig(dataset="moses", limit=args.molecules, progress=False))
    data = CachedGraphs(prep.cache, with_labels=False)
    enc_cfg = GraphEncoderConfig(dim=args.dim, layers=args.layers)
    jepa = GraphJEPA(GRAPH_SPEC, JEPAConfig(encoder=enc_cfg))
    gin = GraphEncoder(GRAPH_SPEC, enc_cfg)
    head = torch.nn.Linear(args.dim, 1)
    opt_j = torch.optim.AdamW([p for p in jepa.parameters() if p.requires_grad], lr=1e-4)
    opt_g = torch.optim.AdamW(list(gin.parameters()) + list(head.parameters()), lr=1e-4)
    rng = np.random.default_rng(0)
    times = {"data (batch + PE + masks)": 0.0, "JEPA step": 0.0, "plain GIN step": 0.0}
    for step in range(args.steps + 2):
        t0 = time.perf_counter()
        b = data.batch(rng.choice(len(data), args.batch, replace=False))
        b.pe = structural_pe(b.edge_index, b.batch, b.num_graphs, enc_cfg.rw_steps, enc_cfg.lap_k,
                             torch.Generator().manual_seed(step))
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
        if step >= 2:  # warm-up steps excluded
            times["data (batch + PE + masks)"] += t1 - t0
            times["JEPA step"] += t2 - t1
            times["plain GIN step"] += t3 - t2
    n = args.batch * args.steps
    print(f"batch {args.batch}, {args.steps} steps, encoder dim {args.dim} x {args.layers} layers, "
          f"torch threads {torch.get_num_threads()}")
    print("| what | graphs/s |")
    print("|---|---|")
    for k, v in times.items():
        print(f"| {k} | {n / v:,.0f} |")
    ratio = times["plain GIN step"] / times["JEPA step"]
    print(f"JEPA / plain GIN throughput: {ratio:.2f}x  (aim >= 0.4x)")


if __name__ == "__main__":
    main()
