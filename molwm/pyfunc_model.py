"""MLflow models-from-code entry: the pyfunc every molwm model is logged with (see molwm.packaging).

MLflow runs this file when it loads the model; it defines the model by
constructing :class:`molwm.serving.MolwmPyfunc`, which reads the ``checkpoint``
artifact with ``weights_only=True``.
"""

from mlflow.models import set_model

from molwm.serving import MolwmPyfunc

set_model(MolwmPyfunc())
