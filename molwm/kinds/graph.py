"""Graph pretraining checkpoints: the JEPA (``graph_jepa``) and the other objectives (``graph_pretrain``)."""

from __future__ import annotations

from featurizers.molecule import GRAPH_SPEC
from molwm.config import from_dict
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
from molwm.kinds.base import ModelKind, MoleculeParts, State, strip_prefix
from molwm.objectives.graph import encoder_prefix


def graph_encoder(state: State) -> GraphEncoder:
    """The encoder of a graph pretraining checkpoint, in eval mode."""
    cfg = from_dict(GraphEncoderConfig, state["config"]["model"]["encoder"])
    encoder = GraphEncoder(GRAPH_SPEC, cfg)
    # where the encoder downstream tasks read sits: recorded by the run (before that, known per objective)
    prefix = state.get("encoder_prefix") or encoder_prefix(state.get("objective", "jepa"))
    encoder.load_state_dict(strip_prefix(state["model"], prefix))
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
