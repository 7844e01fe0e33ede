"""Experiments built on the training driver: ``molwm ablate`` (objectives side by side at an equal budget,
probes, label-efficiency fine-tunes, baselines) and its report. Above the driver: the objectives
themselves (:mod:`molwm.objectives`) never import this package."""
