"""One call to load any molwm model for use: ``load_model(uri)``.

>>> from molwm.api import load_model
>>> model = load_model("models:/molwm-solubility@champion")   # doctest: +SKIP
>>> model.predict(["CCO"])                                     # doctest: +SKIP

Molecule models (pretrained encoders, multimodal JEPAs, fine-tuned property
ensembles) come back as :class:`molwm.query.MoleculeModel`; world models as
:class:`molwm.world.forecast.WorldForecaster`. Which one is decided by the
checkpoint's kind in the registry (:mod:`molwm.kinds`).
"""

from __future__ import annotations

from pathlib import Path

from molwm import checkpoints
from molwm.kinds import kind_of, loader_for, refuse_unserved
from molwm.query import MoleculeModel  # importing each family's answering class registers its loader
from molwm.world.forecast import WorldForecaster


def load_model(uri: str | Path, tracking_uri: str | None = None) -> MoleculeModel | WorldForecaster:
    """The model at ``uri`` (a checkpoint path, ``runs:/...``, ``models:/name@alias``, ``models:/name/version``).

    Args:
        uri: Where the model is.
        tracking_uri: The MLflow store for URIs; default ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``.

    Raises:
        CheckpointError: If nothing loadable is there, or its kind is unknown.
    """
    path, state = checkpoints.read(uri, tracking_uri)
    kind = kind_of(state, uri)
    refuse_unserved(kind, uri)
    return loader_for(kind.family)(state, str(uri), str(path))  # the family's answering class, registered where it lives
