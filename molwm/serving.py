"""The MLflow pyfunc wrapper, so ``mlflow models serve`` answers SMILES queries."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class MolwmPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the molwm checkpoint stored as the ``checkpoint`` artifact."""

    def load_context(self, context) -> None:
        from molwm.query import WorldModel

        self.model = WorldModel.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame) and "smiles" not in model_input.columns:
            raise ValueError("input needs a 'smiles' column")
        return self.model.predict_frame(pd.DataFrame(model_input))
