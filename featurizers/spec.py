"""Declared outputs of featurizers.

Encoders are built from a spec (feature names, categorical sizes, version),
never from a magic ``in_dim``. The spec's :meth:`GraphSpec.digest` is part of
every cache key, so a changed featurizer never reads stale shards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CategoricalFeature:
    """One categorical column of a feature matrix.

    Attributes:
        name: Column name, e.g. ``"atomic_num"``.
        size: Number of categories; every value lies in ``[0, size)``.
        description: How raw values map to categories.
    """

    name: str
    size: int
    description: str = ""


@dataclass(frozen=True)
class GraphSpec:
    """What a molecular-graph featurizer produces.

    ``Data.x`` is a ``torch.long`` matrix ``[num_atoms, len(atom)]`` whose
    column ``j`` holds a category index in ``[0, atom[j].size)``; likewise
    ``Data.edge_attr`` ``[num_edges, len(bond)]`` for bonds. Feed them to
    embedding tables (one per column), not to float layers.

    Attributes:
        atom: Atom feature columns, in order.
        bond: Bond feature columns, in order.
        version: Bumped whenever the featurization logic changes in a way the
            columns do not show.
    """

    atom: tuple[CategoricalFeature, ...]
    bond: tuple[CategoricalFeature, ...]
    version: str

    @property
    def atom_sizes(self) -> list[int]:
        """Category counts of the atom columns."""
        return [f.size for f in self.atom]

    @property
    def bond_sizes(self) -> list[int]:
        """Category counts of the bond columns."""
        return [f.size for f in self.bond]

    def to_dict(self) -> dict:
        """Plain-dict form, suitable for JSON and MLflow params."""
        return asdict(self)

    def digest(self) -> str:
        """SHA-256 (hex, first 16 chars) of the spec's canonical JSON."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
