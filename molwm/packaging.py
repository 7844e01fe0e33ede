"""What a molwm checkpoint logs as its MLflow pyfunc model: code file, request schema, example.

Models are logged from code (MLflow's models-from-code): the model is the file
:data:`PYFUNC_CODE`, which builds :class:`molwm.serving.MolwmPyfunc`, plus the
checkpoint as an artifact. Nothing is pickled, so loading or serving a model
from a shared registry runs molwm's code, never code stored in the registry; the
checkpoint itself is read with ``weights_only=True``.

The request contract is the model's family's (:data:`molwm.kinds.FAMILIES`): ``molecule``, a
``smiles`` column and a ``what`` parameter (``auto``, ``predict``, ``embed``); ``world``, ``smiles``,
``dose_uM``, ``time_h`` and an optional ``context``.
"""

from __future__ import annotations

from molwm import __version__
from molwm.checkpoints import PYFUNC_CODE
from molwm.kinds import family_of, kind_of, refuse_unserved
from molwm.tracking import ModelPackage

__all__ = ["PYFUNC_CODE", "package_for"]


def package_for(kind: str) -> ModelPackage:
    """The pyfunc description of a model of checkpoint kind ``kind``.

    Raises:
        CheckpointError: If the kind is not served (:attr:`molwm.kinds.ModelKind.served`).
    """
    model_kind = kind_of({"kind": kind})
    refuse_unserved(model_kind, f"kind {kind}")
    family = family_of(model_kind)
    return ModelPackage(str(PYFUNC_CODE), list(family.columns), params=list(family.params), example=family.example,
                        pip_requirements=[f"molwm=={__version__}"])
