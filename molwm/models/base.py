"""What every model kind declares: its name, what serves it, and how its graph encoder is rebuilt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from molwm.encoders.graph import GraphEncoder
from molwm.tasks.heads import PropertyModel

State = dict[str, Any]


@dataclass(frozen=True)
class ModelKind:
    """One kind of molwm checkpoint.

    Attributes:
        name: The ``kind`` string written into its checkpoints.
        family: What answers queries about it: ``molecule`` (embeddings, properties, assay values
            for SMILES: :class:`molwm.query.MoleculeModel`) or ``world`` (forecasts and plans for
            compound, dose and time: :class:`molwm.world.forecast.WorldForecaster`).
        description: One line for messages and docs.
        encoder: ``state -> GraphEncoder``: the graph encoder inside (the one downstream tasks read),
            or None when the kind has none.
        stage: The run kind that writes it (``graph``, ``multimodal``, ``world``: the ``kind:`` of a
            pretraining config; ``finetune``).
        served: Whether :func:`molwm.api.load_model`, MLflow pyfunc and REST answer it; a kind that is
            not (the image-level world model) is still resumed and read by its own code.
    """

    name: str
    family: Literal["molecule", "world"]
    description: str
    encoder: Callable[[State], GraphEncoder] | None = field(default=None, compare=False)
    parts: Callable[[State], "MoleculeParts"] | None = field(default=None, compare=False)
    stage: str = "graph"
    served: bool = True


@dataclass
class MoleculeParts:
    """What a molecule-family checkpoint rebuilds into, for :class:`molwm.query.MoleculeModel`.

    Attributes:
        encoder: The graph encoder embeddings come from.
        members: Fine-tuned models (one per seed, a deep ensemble), possibly empty.
        task: ``regression``, ``classification`` or None.
        targets: Property (or assay) names.
        scalers: Per member ``(mean, std)`` to undo target scaling.
        train_targets: ``[n, T]`` training labels (for plots), if the checkpoint has them.
        dataset: The dataset it was fine-tuned on, if any.
        joint: A multimodal JEPA seen from the graph side
            (:class:`molwm.models.multimodal.JointGraphModel`), if that is what it is.
        uncertainty: The stored calibration and applicability domain (:mod:`molwm.tasks.uncertainty`),
            or None for checkpoints without them.
    """

    encoder: GraphEncoder
    members: list[PropertyModel] = field(default_factory=list)
    task: str | None = None
    targets: list[str] = field(default_factory=list)
    scalers: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    train_targets: np.ndarray | None = None
    dataset: str | None = None
    joint: Any = None
    uncertainty: dict | None = None


def strip_prefix(weights: State, prefix: str) -> State:
    """The entries of a ``state_dict`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
