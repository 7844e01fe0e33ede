"""Fine-tuned property models (``property_model``): a deep ensemble of encoder + head, one per seed.

A member is a network (:class:`~molwm.predictors.heads.PropertyModel`, optionally reading extra molecule
features whose standardisation is stored beside it) or, for ``mode: tabular``, a forest on the frozen
embedding and the extra features (:class:`~molwm.predictors.heads.TabularMember`, its trees as tensors).
"""

from __future__ import annotations

import numpy as np

from featurizers.molecule import GRAPH_SPEC
from molwm.config import from_dict, to_dict
from molwm.encoders.graph import GraphEncoder, GraphEncoderConfig
from molwm.kinds.base import ModelKind, MoleculeParts, State, strip_prefix
from molwm.predictors.extras import ExtraInputs, FeatureScaler
from molwm.predictors.forest import ArrayForest
from molwm.predictors.heads import HeadConfig, PropertyModel, TabularMember


def member_state(model) -> dict:
    """What a checkpoint keeps of one member: a network's ``state_dict`` (its extra-feature scaler
    under ``extra_scaler``) or a tabular member's encoder, trees and fill values."""
    if isinstance(model, TabularMember):
        return model.to_state()
    state = dict(model.state_dict())
    if model.extra is not None:
        state["extra_scaler"] = model.extra_scaler.to_dict()
    return state


def property_state(*, config: dict, encoder_config: GraphEncoderConfig, head_config: HeadConfig,
                   extra: ExtraInputs | None, member_kind: str, task: str, targets: list[str], seeds: list[int],
                   members: list[dict], scalers: list[tuple], metrics: list[dict], uncertainty: dict | None,
                   train_targets: np.ndarray | None = None) -> State:
    """The one builder of a ``property_model`` checkpoint dict (the fine-tune's final ensemble and each
    seed's resumable one-member state), read back by :func:`property_parts`.

    Args:
        config: The fine-tune's config as a dict (it rebuilds the run).
        encoder_config, head_config: The member networks' sizes.
        extra: Extra molecule inputs, when enabled (None otherwise).
        member_kind: ``network`` or ``tabular``.
        task, targets, seeds: ``regression`` / ``classification``, target names, one seed per member.
        members: :func:`member_state` of each member.
        scalers: Per member ``(mean, std)`` of the training targets.
        metrics: Per-seed metrics (empty while training).
        uncertainty: Stored calibration and domain, or None.
        train_targets: The training rows' labels (drawn behind predicted-property histograms), if kept.
    """
    state = {"kind": PROPERTY_MODEL.name, "config": config, "spec": GRAPH_SPEC.to_dict(),
             "encoder_config": to_dict(encoder_config), "head_config": to_dict(head_config),
             "extra": to_dict(extra) if extra is not None and extra.enabled else None, "member_kind": member_kind,
             "task": task, "targets": list(targets), "seeds": list(seeds), "members": members,
             "scalers": [[np.asarray(m, np.float64).tolist(), np.asarray(s, np.float64).tolist()] for m, s in scalers],
             "metrics": metrics, "uncertainty": uncertainty}
    if train_targets is not None:
        state["train_targets"] = np.asarray(train_targets, np.float64).tolist()
    return state


def rebuild_member(weights: dict, state: State, enc_cfg: GraphEncoderConfig, head_cfg: HeadConfig):
    """One member from its stored weights (``state`` supplies ``extra``, ``member_kind``, ``targets``, ``task``)."""
    extra = from_dict(ExtraInputs, state["extra"]) if state.get("extra") else None
    if state.get("member_kind") == "tabular":
        encoder = GraphEncoder(GRAPH_SPEC, enc_cfg)
        encoder.load_state_dict(weights["encoder"])
        forests = [ArrayForest.from_state(f) for f in weights["forests"]]
        return TabularMember(encoder.eval(), head_cfg.pooling, extra, forests, np.asarray(weights["fill"]),
                             state["task"])
    weights = dict(weights)
    scaler = weights.pop("extra_scaler", None)
    m = PropertyModel(GraphEncoder(GRAPH_SPEC, enc_cfg), len(state["targets"]), head_cfg, extra)
    m.load_state_dict(weights)
    m.extra_scaler = FeatureScaler.from_dict(scaler) if scaler is not None else None
    return m.eval()


def property_encoder(state: State) -> GraphEncoder:
    """The first member's encoder (what a further fine-tune starts from)."""
    encoder = GraphEncoder(GRAPH_SPEC, from_dict(GraphEncoderConfig, state["encoder_config"]))
    first = state["members"][0]
    encoder.load_state_dict(first["encoder"] if state.get("member_kind") == "tabular" else
                            strip_prefix({k: v for k, v in first.items() if k != "extra_scaler"}, "encoder."))
    return encoder.eval()


def property_parts(state: State) -> MoleculeParts:
    """Every member rebuilt, with its target scaler and the training labels."""
    enc_cfg = from_dict(GraphEncoderConfig, state["encoder_config"])
    head_cfg = from_dict(HeadConfig, state["head_config"])
    members = [rebuild_member(weights, state, enc_cfg, head_cfg) for weights in state["members"]]
    scalers = [(np.asarray(a), np.asarray(b)) for a, b in state["scalers"]]
    train = state.get("train_targets")
    train = None if train is None else np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    return MoleculeParts(encoder=members[0].encoder, members=members, task=state["task"],
                         targets=list(state["targets"]), scalers=scalers, train_targets=train,
                         dataset=state.get("config", {}).get("dataset"), uncertainty=state.get("uncertainty"))


PROPERTY_MODEL = ModelKind("property_model", "molecule", "fine-tuned property predictor (deep ensemble)",
                           property_encoder, property_parts, stage="finetune")
