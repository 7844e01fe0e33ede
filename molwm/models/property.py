"""Fine-tuned property models (``property_model``): a deep ensemble of encoder + head, one per seed."""

from __future__ import annotations

import numpy as np

from featurizers.molecule import GRAPH_SPEC
from molwm.config import from_dict
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
from molwm.models.base import ModelKind, MoleculeParts, State, strip_prefix
from molwm.tasks.heads import HeadConfig, PropertyModel


def property_encoder(state: State) -> GraphEncoder:
    """The first member's encoder (what a further fine-tune starts from)."""
    encoder = GraphEncoder(GRAPH_SPEC, from_dict(GraphEncoderConfig, state["encoder_config"]))
    encoder.load_state_dict(strip_prefix(state["members"][0], "encoder."))
    return encoder.eval()


def property_parts(state: State) -> MoleculeParts:
    """Every member rebuilt, with its target scaler and the training labels."""
    enc_cfg = from_dict(GraphEncoderConfig, state["encoder_config"])
    head_cfg = from_dict(HeadConfig, state["head_config"])
    members = []
    for weights in state["members"]:
        m = PropertyModel(GraphEncoder(GRAPH_SPEC, enc_cfg), len(state["targets"]), head_cfg)
        m.load_state_dict(weights)
        members.append(m.eval())
    scalers = [(np.asarray(a), np.asarray(b)) for a, b in state["scalers"]]
    train = state.get("train_targets")
    train = None if train is None else np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    return MoleculeParts(encoder=members[0].encoder, members=members, task=state["task"],
                         targets=list(state["targets"]), scalers=scalers, train_targets=train,
                         dataset=state.get("config", {}).get("dataset"), uncertainty=state.get("uncertainty"))


PROPERTY_MODEL = ModelKind("property_model", "molecule", "fine-tuned property predictor (deep ensemble)",
                           property_encoder, property_parts, stage="finetune")
