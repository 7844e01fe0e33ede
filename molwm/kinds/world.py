"""World-model checkpoints: ``world_model`` (latent dynamics of profiles over a compound, a dose and
elapsed time) and ``image_world_model`` (the same dynamics with the lab's sites as states)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from molwm.config import from_dict
from molwm.kinds.base import ModelKind, State
from molwm.world.config import WorldConfig
from molwm.world.model import WorldNet


@dataclass
class WorldCheckpoint:
    """What a ``world_model`` checkpoint records beside its weights (written by the world task, read by
    :func:`world_network` and the forecaster): the fields that rebuild the network and its answers.

    Attributes:
        config: The run's config as a dict.
        obs_norm, comp_norm: The read-outs' and the compound features' normalisation.
        drugs, smiles, contexts: The compounds (and their SMILES, "" for none) and contexts (cell lines).
        obs_names, truth_names: Read-out and ground-truth names.
        known_drugs: Indices of the compounds trained on.
        drug_features: ``[n_drugs, F]`` compound features.
        initial: Start states per context.
        synthetic: True for the synthetic lab's courses.
        probes: Held-out probe figures recorded at the end of the run.
        window_dim: Width of a history window.
        calibration: The read-outs' interval calibration, if fitted.
    """

    config: dict
    obs_norm: dict
    comp_norm: dict
    drugs: list
    smiles: list
    contexts: list
    obs_names: list
    truth_names: list
    known_drugs: list
    drug_features: list
    initial: Any
    synthetic: bool
    probes: Any
    window_dim: int
    calibration: dict | None = None

    def to_state(self) -> State:
        """The checkpoint's metadata (the driver adds the weights and the loop's state)."""
        out = {"kind": WORLD_MODEL.name, "config": self.config, "obs_norm": self.obs_norm, "comp_norm": self.comp_norm,
               "drugs": list(self.drugs), "smiles": list(self.smiles), "contexts": list(self.contexts),
               "obs_names": list(self.obs_names), "truth_names": list(self.truth_names),
               "known_drugs": self.known_drugs, "drug_features": self.drug_features, "initial": self.initial,
               "synthetic": bool(self.synthetic), "probes": self.probes, "window_dim": int(self.window_dim)}
        return {**out, "calibration": self.calibration} if self.calibration else out

    @classmethod
    def read(cls, state: State) -> "WorldCheckpoint":
        """From a checkpoint dict."""
        return cls(**{f: state[f] for f in cls.__dataclass_fields__ if f != "calibration"},
                   calibration=state.get("calibration"))


@dataclass
class ImageWorldCheckpoint:
    """What an ``image_world_model`` checkpoint records beside its weights (written by the image world task)."""

    config: dict
    channel_stats: dict
    comp_norm: dict
    drugs: list
    smiles: list
    contexts: list
    truth_names: list
    known_drugs: list
    drug_features: list
    synthetic: bool
    probes: Any

    def to_state(self) -> State:
        """The checkpoint's metadata (the driver adds the weights and the loop's state)."""
        return {"kind": IMAGE_WORLD_MODEL.name, "config": self.config, "channel_stats": self.channel_stats,
                "comp_norm": self.comp_norm, "drugs": list(self.drugs), "smiles": list(self.smiles),
                "contexts": list(self.contexts), "truth_names": list(self.truth_names), "known_drugs": self.known_drugs,
                "drug_features": self.drug_features, "synthetic": bool(self.synthetic), "probes": self.probes}

    @classmethod
    def read(cls, state: State) -> "ImageWorldCheckpoint":
        """From a checkpoint dict."""
        return cls(**{f: state[f] for f in cls.__dataclass_fields__})


def world_network(state: State) -> WorldNet:
    """The dynamics network of a ``world_model`` checkpoint, weights loaded, in eval mode."""
    record = WorldCheckpoint.read(state)
    config = from_dict(WorldConfig, record.config)
    n_compound_features = np.asarray(record.drug_features, np.float32).shape[1]
    net = WorldNet(int(record.window_dim), len(record.obs_names), n_compound_features, len(record.drugs),
                   len(record.contexts), config.model)
    net.load_state_dict(state["model"])
    return net.eval()


WORLD_MODEL = ModelKind("world_model", "world", "world model (action-conditioned latent dynamics)", stage="world")


IMAGE_WORLD_MODEL = ModelKind("image_world_model", "world", "image-level world model (lab sites as states)",
                              stage="image_world", served=False)
"""Written by ``kind: image_world`` runs (:mod:`molwm.world.image_run`): resumed by ``molwm pretrain --resume``
and scored on held-out sites by its run; :class:`molwm.world.forecast.WorldForecaster` does not serve it
(a forecast needs a start site, not only a compound, a dose and a time)."""
