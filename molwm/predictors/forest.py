"""A random forest stored as arrays, so a fine-tuned model with a tabular head loads without pickle.

scikit-learn fits the forest; its trees are then copied into flat arrays (children,
split feature, threshold, leaf value) that a checkpoint holds as tensors and
:meth:`ArrayForest.predict` walks with NumPy. Predictions equal scikit-learn's own
(tested), and loading stays ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ArrayForest:
    """Trees concatenated: node ``i`` of tree ``t`` is row ``offsets[t] + i``.

    Attributes:
        left: ``[Nn]`` int32 left child (tree-local), -1 at leaves.
        right: ``[Nn]`` int32 right child (tree-local), -1 at leaves.
        feature: ``[Nn]`` int32 split feature.
        threshold: ``[Nn]`` float64 split threshold (go left when ``x <= threshold``).
        value: ``[Nn]`` float64 leaf prediction (regression: mean; classification: P(class 1)).
        offsets: ``[n_trees]`` int64 first node of each tree.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_sklearn(cls, forest) -> "ArrayForest":
        """Copy a fitted ``RandomForestRegressor`` / binary ``RandomForestClassifier``."""
        parts, offsets, start = [], [], 0
        for est in forest.estimators_:
            t = est.tree_
            value = t.value[:, 0, :]  # [n, classes] (regression: [n, 1])
            leaf = value[:, 0] if value.shape[1] == 1 else value[:, -1] / value.sum(1).clip(min=1e-12)
            parts.append((t.children_left, t.children_right, t.feature, t.threshold, leaf))
            offsets.append(start)
            start += t.node_count
        cat = [np.concatenate([p[i] for p in parts]) for i in range(5)]
        return cls(cat[0].astype(np.int32), cat[1].astype(np.int32), cat[2].astype(np.int32),
                   cat[3].astype(np.float64), cat[4].astype(np.float64), np.asarray(offsets, np.int64))

    @property
    def n_trees(self) -> int:
        return len(self.offsets)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[n]`` mean of the trees' leaf values for rows ``x [n, F]``."""
        x = np.asarray(x, np.float32).astype(np.float64)  # scikit-learn compares float32 inputs
        rows = np.arange(len(x))
        total = np.zeros(len(x))
        for start in self.offsets:
            node = np.full(len(x), start, dtype=np.int64)
            while True:
                inner = self.left[node] >= 0
                if not inner.any():
                    break
                n = node[inner]
                go_left = x[rows[inner], self.feature[n]] <= self.threshold[n]
                node[inner] = start + np.where(go_left, self.left[n], self.right[n])
            total += self.value[node]
        return total / max(1, self.n_trees)

    def to_state(self) -> dict[str, torch.Tensor]:
        """Tensors for a checkpoint (loads under ``weights_only=True``)."""
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k)))
                for k in ("left", "right", "feature", "threshold", "value", "offsets")}

    @classmethod
    def from_state(cls, state: dict) -> "ArrayForest":
        return cls(**{k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in state.items()})
