"""Graph pretraining checkpoints: the JEPA (``graph_jepa``) and the other objectives (``graph_pretrain``)."""

from __future__ import annotations

from dataclasses import dataclass

from featurizers.molecule import GRAPH_SPEC
from molwm.config import from_dict
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
from molwm.kinds.base import ModelKind, MoleculeParts, State, strip_prefix
from molwm.objectives.graph import encoder_prefix


@dataclass
class GraphCheckpoint:
    """What a graph pretraining checkpoint records beside its weights (written by the graph pretraining
    task, read here): the fields that rebuild its model.

    Attributes:
        objective: The pretraining objective (it picks the kind).
        encoder_prefix: Where, in the weights, the encoder downstream tasks read sits.
        config: The run's config as a dict.
        descriptor_stats: The descriptor targets' standardisation (descriptor objectives), or None.
    """

    objective: str
    encoder_prefix: str
    config: dict
    descriptor_stats: dict | None = None

    def to_state(self) -> State:
        """The checkpoint's metadata (the driver adds the weights and the loop's state)."""
        extra = {"descriptor_stats": self.descriptor_stats} if self.descriptor_stats is not None else {}
        return {"kind": kind_for(self.objective), "objective": self.objective, "encoder_prefix": self.encoder_prefix,
                "config": self.config, "spec": GRAPH_SPEC.to_dict(), **extra}

    @classmethod
    def read(cls, state: State) -> "GraphCheckpoint":
        """From a checkpoint dict; checkpoints written before the prefix was recorded get their objective's."""
        objective = state.get("objective", "jepa")
        return cls(objective, state.get("encoder_prefix") or encoder_prefix(objective), state["config"],
                   state.get("descriptor_stats"))


def graph_encoder(state: State) -> GraphEncoder:
    """The encoder of a graph pretraining checkpoint, in eval mode."""
    record = GraphCheckpoint.read(state)
    encoder = GraphEncoder(GRAPH_SPEC, from_dict(GraphEncoderConfig, record.config["model"]["encoder"]))
    encoder.load_state_dict(strip_prefix(state["model"], record.encoder_prefix))
    return encoder.eval()


def graph_parts(state: State) -> MoleculeParts:
    """A pretrained encoder alone (no default reference: the pretraining set is too large to embed)."""
    return MoleculeParts(encoder=graph_encoder(state))


def kind_for(objective: str) -> str:
    """The kind a graph pretraining run with ``objective`` writes."""
    return GRAPH_JEPA.name if objective == "jepa" else GRAPH_PRETRAIN.name


GRAPH_JEPA = ModelKind("graph_jepa", "molecule", "graph JEPA encoder (EMA target)", graph_encoder, graph_parts,
                       stage="graph")
GRAPH_PRETRAIN = ModelKind("graph_pretrain", "molecule", "graph encoder pretrained with a non-JEPA objective",
                           graph_encoder, graph_parts, stage="graph")
