"""Pretraining objectives as plug-ins: the same encoders, data, optimiser and budget, a different loss.

One registry (:mod:`molwm.objectives.registry`) holds every objective under a domain
(``graph`` or ``multimodal``) and a name (the ``objective:`` key of a pretraining config),
with its settings dataclass (the config's ``objective_settings``). See docs/objectives.md.

Graph: ``jepa`` (predict the EMA target's embeddings of hidden atom blocks), ``generative``
(attribute masking: the hidden atoms' and bonds' raw categories), ``contrastive`` (GraphCL-style
InfoNCE between two views), ``descriptors`` (CheMeleon-style regression of standardised RDKit
descriptors) and ``jepa_descriptors`` (the JEPA plus that regression). Multimodal: ``jepa``, ``generative`` (MAE-style pixels, masked
values, atom attributes), ``contrastive_views`` (InfoNCE between disjoint masked views) and
``contrastive`` (CLOOME-style molecule-image matching).

Importing this package registers them all: a new objective is a module here with a class
decorated by :func:`~molwm.objectives.registry.register`, plus its import below.
"""

from __future__ import annotations

from molwm.objectives import descriptors, graph, multimodal  # noqa: F401  (registers the objectives)
from molwm.objectives.registry import (OBJECTIVES, ObjectiveInputs, build_objective, names, objective_settings,
                                       objective_spec)

__all__ = ["OBJECTIVES", "ObjectiveInputs", "build_objective", "names", "objective_settings", "objective_spec"]
