"""The registry of model kinds: what each checkpoint ``kind`` is, and how its parts are rebuilt.

Every molwm checkpoint names its kind; this is the one place a kind string is
looked up. A new kind is a :class:`~molwm.kinds.base.ModelKind` in its own
module plus one line in :data:`KINDS`.

>>> from molwm.kinds import load_encoder
>>> encoder = load_encoder("models:/molwm-solubility@champion")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from molwm import checkpoints
from molwm.checkpoints import CheckpointError
from molwm.encoders.graph import GraphEncoder
from molwm.kinds.base import FAMILIES, Family, ModelKind, MoleculeParts, State, answers, loader_for
from molwm.kinds.graph import GRAPH_JEPA, GRAPH_PRETRAIN
from molwm.kinds.multimodal import MULTIMODAL_JEPA, MULTIMODAL_OTHERS
from molwm.kinds.property import PROPERTY_MODEL
from molwm.kinds.stack import STACK_MODEL
from molwm.kinds.world import IMAGE_WORLD_MODEL, WORLD_MODEL

__all__ = ["FAMILIES", "KINDS", "Family", "ModelKind", "MoleculeParts", "answers", "encoder_from_state", "family_of",
           "kind_of", "load_encoder", "loader_for", "parts_from_state", "rebuild", "refuse_unserved", "register"]

T = TypeVar("T")

KINDS: dict[str, ModelKind] = {}
"""Kind name -> :class:`ModelKind`, for every kind molwm can load."""


def register(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to :data:`KINDS` (its name must be new); returns it."""
    if kind.name in KINDS:
        raise ValueError(f"model kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


for _kind in (GRAPH_JEPA, GRAPH_PRETRAIN, MULTIMODAL_JEPA, *MULTIMODAL_OTHERS, PROPERTY_MODEL, STACK_MODEL,
              WORLD_MODEL, IMAGE_WORLD_MODEL):
    register(_kind)


def kind_of(state: State, source: str | Path = "") -> ModelKind:
    """The registered kind of a checkpoint dict.

    Raises:
        CheckpointError: Naming ``source`` and the kinds molwm knows, if the kind is missing or unknown.
    """
    name = state.get("kind")
    if name not in KINDS:
        where = f"{source}: " if source else ""
        raise CheckpointError(f"{where}not a molwm model (checkpoint kind {name!r}; molwm knows "
                              f"{', '.join(sorted(KINDS))})")
    return KINDS[name]


def family_of(kind: ModelKind) -> Family:
    """The :class:`Family` that answers queries about ``kind``: its loader, request columns and example."""
    return FAMILIES[kind.family]


def refuse_unserved(kind: ModelKind, source: str | Path = "") -> None:
    """Raise one :class:`CheckpointError` naming ``source`` when ``kind`` is not served (queries, pyfunc, REST)."""
    if not kind.served:
        raise CheckpointError(f"{source or 'checkpoint'}: this {kind.description} is not served (no queries, "
                              f"MLflow model or REST); `molwm pretrain --resume` continues its run") from None


def rebuild(kind: ModelKind, fn: Callable[[State], T], state: State, source: str | Path = "") -> T:
    """``fn(state)``, with a checkpoint that lacks a key or whose weights do not fit its config reported
    as one :class:`CheckpointError` naming ``source`` and the kind."""
    try:
        return fn(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{source or 'checkpoint'}: an incomplete or damaged {kind.description} checkpoint "
                              f"({type(err).__name__}: {first})") from None


def parts_from_state(state: State, source: str | Path = "") -> MoleculeParts:
    """What a molecule-family checkpoint rebuilds into (for :class:`molwm.query.MoleculeModel`).

    Raises:
        CheckpointError: If it is a world model, or incomplete or damaged.
    """
    kind = kind_of(state, source)
    if kind.parts is None:
        raise CheckpointError(f"{source or 'checkpoint'}: a {kind.description} answers forecasts, not molecule "
                              "queries (molwm forecast / molwm.api.load_model)")
    return rebuild(kind, kind.parts, state, source)


def encoder_from_state(state: State, source: str | Path = "") -> GraphEncoder:
    """The graph encoder inside a checkpoint dict (eval mode): the one fine-tuning and queries read.

    Raises:
        CheckpointError: If the kind has no graph encoder (a world model).
    """
    kind = kind_of(state, source)
    if kind.encoder is None:
        raise CheckpointError(f"{source or 'checkpoint'}: a {kind.description} has no graph encoder to load")
    return rebuild(kind, kind.encoder, state, source)


def load_encoder(uri: str | Path, tracking_uri: str | None = None) -> GraphEncoder:
    """The graph encoder of the model at ``uri`` (a path, ``runs:/...`` or ``models:/...``), in eval mode.

    The JEPA's EMA target encoder for JEPA checkpoints, the trained encoder for the other
    objectives, the first member's encoder for a fine-tuned ensemble.
    """
    _, state = checkpoints.read(uri, tracking_uri)
    return encoder_from_state(state, uri)
