"""Pretraining objectives as plug-ins: the same encoder, data, optimiser and budget, a different loss.

``OBJECTIVES`` maps a name (the ``objective:`` key of a pretraining config) to a
builder ``(spec, model_config, objective_config) -> nn.Module``. Every module
has the same surface as :class:`molwm.jepa.model.GraphJEPA`: ``forward(batch,
masks, generator) -> JEPAOutput``, ``ema_update``, ``momentum_at``, ``embed``,
and ``encoder_prefix`` (where the encoder that downstream tasks read sits in
its ``state_dict``). See docs/objectives.md.

* ``jepa``: predict the target encoder's embeddings of hidden atom blocks (the project's own).
* ``generative``: predict the raw attributes (atom and bond categories) of the same
  hidden atoms, seen as mask tokens (attribute masking).
* ``contrastive``: two views of each molecule (hidden blocks dropped; random atoms'
  attributes masked), InfoNCE between them (GraphCL-style).
"""

from __future__ import annotations

from molwm.objectives.graph import OBJECTIVES, ObjectiveConfig, build_objective

__all__ = ["OBJECTIVES", "ObjectiveConfig", "build_objective"]
