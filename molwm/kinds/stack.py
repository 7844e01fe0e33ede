"""Stacked property models (``stacked_property_model``): per seed, diverse members and their weights.

The checkpoint holds, per seed, every member's state (graph members as the property model keeps
them, :func:`molwm.kinds.property.member_state`; feature members as tensors, numbers and model
text, :mod:`molwm.predictors.classical`), the target scalers of the graph members, the stacking
weights, and the calibration and domain fitted on validation rows. Nothing in it is pickled.
"""

from __future__ import annotations

import numpy as np

from featurizers.molecule import GRAPH_SPEC
from molwm.config import from_dict, to_dict
from molwm.encoders.graph import GraphEncoderConfig
from molwm.kinds.base import ModelKind, MoleculeParts, State
from molwm.kinds.property import member_state, rebuild_member
from molwm.predictors.classical import member_from_state
from molwm.predictors.extras import ExtraInputs
from molwm.predictors.heads import HeadConfig
from molwm.predictors.stack import GRAPH_MEMBERS, StackPredictor
from molwm.uncertainty.calibration import Calibrator
from molwm.uncertainty.domain import Domain


def stack_state(*, config: dict, encoder_config: GraphEncoderConfig, head_config: HeadConfig, task: str,
                targets: list[str], seeds: list[int], names: list[str], extras: dict[str, ExtraInputs | None],
                members: list[list], scalers: list[list], weights: np.ndarray, metrics: list[dict],
                uncertainty: dict | None, train_targets: np.ndarray | None = None) -> State:
    """The checkpoint dict of a stacked model (read back by :func:`stack_parts`).

    Args:
        names: Member names (the order of every seed's ``members``).
        extras: Per graph member, the extra inputs its head reads (None: none).
        members: Per seed, the fitted members.
        scalers: Per seed, per member, ``(mean, std)`` of the training targets (graph members) or None.
        weights: ``[S, K, T]`` stacking weights.
    """
    stored = []
    for seed_members in members:
        stored.append([member_state(m) if n in GRAPH_MEMBERS else m.to_state() for n, m in zip(names, seed_members)])
    state = {"kind": STACK_MODEL.name, "config": config, "spec": GRAPH_SPEC.to_dict(),
             "encoder_config": to_dict(encoder_config), "head_config": to_dict(head_config), "task": task,
             "targets": list(targets), "seeds": list(seeds), "member_names": list(names),
             "member_extra": {n: (to_dict(e) if e is not None and e.enabled else None) for n, e in extras.items()},
             "members": stored,
             "scalers": [[None if sc is None else [np.asarray(sc[0], np.float64).tolist(),
                                                   np.asarray(sc[1], np.float64).tolist()] for sc in per]
                         for per in scalers],
             "weights": np.asarray(weights, np.float64).tolist(), "metrics": metrics, "uncertainty": uncertainty}
    if train_targets is not None:
        state["train_targets"] = np.asarray(train_targets, np.float64).tolist()
    return state


def stack_predictor(state: State) -> StackPredictor:
    """Every member of every seed rebuilt, with the weights, calibrator and domain."""
    enc_cfg = from_dict(GraphEncoderConfig, state["encoder_config"])
    head_cfg = from_dict(HeadConfig, state["head_config"])
    names = state["member_names"]
    members, scalers = [], []
    for seed_members, seed_scalers in zip(state["members"], state["scalers"]):
        built = []
        for name, weights in zip(names, seed_members):
            if name in GRAPH_MEMBERS:
                extra = state["member_extra"].get(name)
                view = {"extra": extra, "member_kind": "tabular" if name == "molwm_tabular" else "network",
                        "targets": state["targets"], "task": state["task"]}
                built.append(rebuild_member(weights, view, enc_cfg, head_cfg))
            else:
                built.append(member_from_state(weights))
        members.append(built)
        scalers.append([None if sc is None else (np.asarray(sc[0]), np.asarray(sc[1])) for sc in seed_scalers])
    stored = state.get("uncertainty") or {}
    return StackPredictor(names, members, scalers, np.asarray(state["weights"], np.float64), state["task"],
                          list(state["targets"]),
                          Calibrator.from_dict(stored.get("calibration"), state["task"], len(state["targets"])),
                          Domain.from_state(stored.get("domain")))


def stack_parts(state: State) -> MoleculeParts:
    """The stack's predictor, and the first graph member's encoder for embeddings."""
    predictor = stack_predictor(state)
    first = predictor.members[0][predictor._embedder]
    train = state.get("train_targets")
    train = None if train is None else np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    return MoleculeParts(encoder=first.encoder, task=state["task"], targets=list(state["targets"]),
                         train_targets=train, dataset=state.get("config", {}).get("dataset"),
                         uncertainty=state.get("uncertainty"), predictor=predictor)


def stack_encoder(state: State):
    """The first graph member's encoder (what a further fine-tune starts from)."""
    return stack_parts(state).encoder


STACK_MODEL = ModelKind("stacked_property_model", "molecule",
                        "stacked property predictor (networks, forests, boosted trees, SVM; weights on validation)",
                        stack_encoder, stack_parts, stage="finetune")
