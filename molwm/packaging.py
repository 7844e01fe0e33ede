"""What a molwm checkpoint logs as its MLflow pyfunc model: code file, request schema, example.

Models are logged from code (MLflow's models-from-code): the model is the file
:data:`PYFUNC_CODE`, which builds :class:`molwm.serving.MolwmPyfunc`, plus the
checkpoint as an artifact. Nothing is pickled, so loading or serving a model
from a shared registry runs molwm's code, never code stored in the registry; the
checkpoint itself is read with ``weights_only=True``.

The request contract follows the model's family (:class:`molwm.models.ModelKind`):

* ``molecule``: a ``smiles`` column and a ``what`` parameter (``auto``, ``predict``, ``embed``);
* ``world``: ``smiles``, ``dose_uM``, ``time_h`` and an optional ``context``.
"""

from __future__ import annotations

from molwm import __version__
from molwm.checkpoints import PYFUNC_CODE
from molwm.models import kind_of, refuse_unserved
from molwm.tracking import ModelPackage

__all__ = ["PYFUNC_CODE", "package_for"]

MOLECULE_EXAMPLE = {"smiles": ["CCO", "c1ccccc1O"]}
"""Logged with every molecule model: what a request looks like."""
WORLD_EXAMPLE = {"smiles": ["CCO", "CCO"], "dose_uM": [1.0, 10.0], "time_h": [24.0, 24.0]}
"""Logged with every world model."""


def package_for(kind: str) -> ModelPackage:
    """The pyfunc description of a model of checkpoint kind ``kind``.

    Raises:
        CheckpointError: If the kind is not served (:attr:`molwm.models.ModelKind.served`).
    """
    model_kind = kind_of({"kind": kind})
    refuse_unserved(model_kind, f"kind {kind}")
    family = model_kind.family
    requirements = [f"molwm=={__version__}"]
    if family == "world":
        return ModelPackage(str(PYFUNC_CODE), [("smiles", "string", True), ("dose_uM", "double", True),
                                               ("time_h", "double", True), ("context", "string", False)],
                            example=WORLD_EXAMPLE, pip_requirements=requirements)
    return ModelPackage(str(PYFUNC_CODE), [("smiles", "string", True)], params=[("what", "string", "auto")],
                        example=MOLECULE_EXAMPLE, pip_requirements=requirements)

