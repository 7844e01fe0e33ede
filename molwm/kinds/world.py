"""World-model checkpoints: ``world_model`` (latent dynamics of profiles over a compound, a dose and
elapsed time) and ``image_world_model`` (the same dynamics with the lab's sites as states)."""

from __future__ import annotations

import numpy as np

from molwm.config import from_dict
from molwm.kinds.base import ModelKind, State
from molwm.world.config import WorldConfig
from molwm.world.model import WorldNet


def world_network(state: State) -> WorldNet:
    """The dynamics network of a ``world_model`` checkpoint, weights loaded, in eval mode."""
    config = from_dict(WorldConfig, state["config"])
    n_compound_features = np.asarray(state["drug_features"], np.float32).shape[1]
    net = WorldNet(int(state["window_dim"]), len(state["obs_names"]), n_compound_features, len(state["drugs"]),
                   len(state["contexts"]), config.model)
    net.load_state_dict(state["model"])
    return net.eval()


WORLD_MODEL = ModelKind("world_model", "world", "world model (action-conditioned latent dynamics)", stage="world")


IMAGE_WORLD_MODEL = ModelKind("image_world_model", "world", "image-level world model (lab sites as states)",
                              stage="image_world", served=False)
"""Written by ``kind: image_world`` runs (:mod:`molwm.world.image_run`): resumed by ``molwm pretrain --resume``
and scored on held-out sites by its run; :class:`molwm.world.forecast.WorldForecaster` does not serve it
(a forecast needs a start site, not only a compound, a dose and a time)."""
