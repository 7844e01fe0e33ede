"""What every model kind declares: its name, what serves it, and how its graph encoder is rebuilt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from molwm.encoders.graph import GraphEncoder
from molwm.predictors.heads import PropertyModel

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


@dataclass(frozen=True)
class Family:
    """What answers queries about a family of kinds, and what its requests look like.

    Attributes:
        name: ``molecule`` or ``world`` (:attr:`ModelKind.family`).
        columns: Request columns as ``(name, mlflow type, required)``: the logged MLflow signature.
        params: Request parameters as ``(name, mlflow type, default)``.
        example: A request example logged with the model.
        answered_by: The class whose ``answer(frame, params)`` serves it (for messages and docs).
    """

    name: str
    columns: tuple[tuple[str, str, bool], ...]
    params: tuple[tuple[str, str, Any], ...] = ()
    example: dict = field(default_factory=dict, compare=False)
    answered_by: str = ""


FAMILIES = {f.name: f for f in (
    Family("molecule", (("smiles", "string", True),), (("what", "string", "auto"),),
           {"smiles": ["CCO", "c1ccccc1O"]}, "molwm.query.MoleculeModel"),
    Family("world", (("smiles", "string", True), ("dose_uM", "double", True), ("time_h", "double", True),
                     ("context", "string", False)), (),
           {"smiles": ["CCO", "CCO"], "dose_uM": [1.0, 10.0], "time_h": [24.0, 24.0]},
           "molwm.world.forecast.WorldForecaster"))}
"""Family name -> :class:`Family`."""

Loader = Callable[[State, str, str], Any]
"""``(checkpoint dict, source, checkpoint file) -> the object that answers queries``."""

_LOADERS: dict[str, Loader] = {}


def answers(family: str) -> Callable[[Loader], Loader]:
    """Register the loader of ``family`` (its answering class does it, where it is defined)."""
    def put(fn: Loader) -> Loader:
        _LOADERS[FAMILIES[family].name] = fn
        return fn

    return put


def loader_for(family: str) -> Loader:
    """The registered loader of ``family`` (importing :mod:`molwm.api` registers both)."""
    if family not in _LOADERS:
        raise LookupError(f"no loader registered for the {family} family: import {FAMILIES[family].answered_by}")
    return _LOADERS[family]


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
            (:class:`molwm.kinds.multimodal.JointGraphModel`), if that is what it is.
        uncertainty: The stored calibration and applicability domain (:mod:`molwm.uncertainty.fit`),
            or None for checkpoints without them.
        predictor: A predictor that answers on its own (a stacked ensemble,
            :class:`molwm.predictors.stack.StackPredictor`), or None.
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
    predictor: Any = None


def strip_prefix(weights: State, prefix: str) -> State:
    """The entries of a ``state_dict`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
