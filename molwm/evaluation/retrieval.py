"""Cross-modal retrieval: find a molecule's own cell image among candidates.

For every held-out sample with both a graph and an image, the model turns
the molecule alone into a query vector and each candidate image into a key;
the true image is ranked against ``pool - 1`` images of other samples drawn
at random (seeded). Top-k accuracy is the share of queries whose own image
ranks within the first k; chance is ``k / pool``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from molwm.data.multimodal import MultimodalData
from molwm.jepa.mm_masking import add_pe


def retrieval_accuracy(queries: np.ndarray, keys: np.ndarray, pool: int = 100, ks=(1, 5),
                       seed: int = 0) -> dict[str, float]:
    """Top-k accuracy of ranking ``keys[i]`` for ``queries[i]`` among ``pool`` candidates (cosine).

    Shapes:
        queries, keys: ``[N, D]`` (row ``i`` of each is a true pair).

    Returns:
        ``{"top1": ..., "top5": ..., "pool": pool used, "n": N, "chance_top1": 1/pool}``;
        the pool shrinks to ``N`` when fewer samples exist.
    """
    q = F.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=1)
    k = F.normalize(torch.as_tensor(keys, dtype=torch.float32), dim=1)
    n = len(q)
    pool = min(pool, n)
    rng = np.random.default_rng(seed)
    hits = {kk: 0 for kk in ks}
    for i in range(n):
        others = rng.choice(np.delete(np.arange(n), i), size=pool - 1, replace=False)
        cand = np.concatenate([[i], others])
        sims = (k[cand] @ q[i]).numpy()  # [pool]
        rank = int((sims > sims[0]).sum())  # ties count in the query's favour
        for kk in ks:
            hits[kk] += rank < kk
    out = {f"top{kk}": hits[kk] / max(1, n) for kk in ks}
    out.update({"pool": pool, "n": n, "chance_top1": 1.0 / max(1, pool)})
    return out


@torch.no_grad()
def molecule_image_pairs(model, data: MultimodalData, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Query (molecule alone) and key (image alone) vectors for samples with both.

    JEPA: the query is the predicted pooled image embedding from the graph
    alone, the key the target encoder's pooled image embedding. Contrastive:
    the projected molecule and image embeddings.
    """
    rows = np.flatnonzero((data.graph_of >= 0) & (data.image_of >= 0))
    qs, ks = [], []
    model.eval()
    for i in range(0, len(rows), batch_size):
        part = rows[i:i + batch_size]
        g = add_pe(data.batch(part, drop=("assay", "image")), model.config)
        im = data.batch(part, drop=("graph", "assay"))
        q, k = model.retrieval_pair(g, im)
        qs.append(q.numpy())
        ks.append(k.numpy())
    if not qs:
        return np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(qs), np.concatenate(ks)
