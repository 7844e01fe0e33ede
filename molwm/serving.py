"""The MLflow pyfunc wrapper, so ``mlflow models serve`` answers SMILES queries over REST.

A request is a frame with a ``smiles`` column (``{"dataframe_split": ...}`` or
``{"inputs": {"smiles": [...]}}``); the answer has one row per input, in order,
with a ``status`` column. Bad SMILES are answered row by row (``status`` names
the reason); requests over the limits are refused with HTTP 400 and a message:

* ``MOLWM_MAX_MOLECULES`` molecules per request (default 1000),
* ``MOLWM_MAX_SMILES_LENGTH`` characters per SMILES (default 1000),

read from the environment when the server starts (``molwm serve`` sets them).
An optional request parameter ``what`` (``auto``, ``predict``, ``embed``) picks
properties or embeddings.

A world model (``molwm pretrain`` with ``kind: world``) answers forecasts
instead: a frame with ``smiles``, ``dose_uM`` and ``time_h`` (and optionally
``context``), one row per (compound, dose, time), answered with the decoded
read-outs, their ensemble spread and a ``status`` per row.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from molwm.api import load_model
from molwm.tracking import default_tracking_uri
from molwm.world.forecast import WorldForecaster

DEFAULT_MAX_MOLECULES = 1000
DEFAULT_MAX_SMILES_LENGTH = 1000


def _refuse(message: str) -> MlflowException:
    """An error the scoring server turns into HTTP 400 with this message (no traceback)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _limit(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


class MolwmPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the molwm checkpoint stored as the ``checkpoint`` artifact (logged from code by
    :mod:`molwm.packaging`; models logged before that, as a pickle of this class, still load)."""

    def load_context(self, context) -> None:
        loaded = load_model(context.artifacts["checkpoint"])
        if isinstance(loaded, WorldForecaster):
            self.world, self.model = loaded, None
        else:
            self.world, self.model = None, loaded
        self.max_molecules = _limit("MOLWM_MAX_MOLECULES", DEFAULT_MAX_MOLECULES)
        self.max_smiles_length = _limit("MOLWM_MAX_SMILES_LENGTH", DEFAULT_MAX_SMILES_LENGTH)
        if self.model is not None:
            self.model.max_smiles_length = self.max_smiles_length

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Check the request against the limits, then answer one row per molecule."""
        frame = _as_frame(model_input)
        if len(frame) > self.max_molecules:
            raise _refuse(f"request has {len(frame)} molecules, over the limit of {self.max_molecules} per "
                          f"request: split it (or start the server with a higher --max-molecules)")
        for i, s in enumerate(frame["smiles"].tolist()):
            if isinstance(s, str) and len(s) > self.max_smiles_length:
                raise _refuse(f"row {i}: SMILES has {len(s)} characters, over the limit of "
                              f"{self.max_smiles_length} (--max-smiles-length)")
        if self.world is not None:
            return _forecast_rows(self.world, frame)
        what = (params or {}).get("what", "auto")
        if what not in ("auto", "predict", "embed"):
            raise _refuse(f"parameter 'what' must be auto, predict or embed, got {what!r}")
        if what == "predict" and not self.model.can_predict:
            raise _refuse("this model is a pretrained encoder without property heads: ask for what=embed")
        try:
            out = self.model.predict_frame(frame, what)
        except Exception as err:  # never a traceback to the client
            raise MlflowException(f"molwm could not answer this request: {type(err).__name__}: {err}") from None
        # missing values as None, so the server writes JSON null (NaN is not JSON)
        return out.astype(object).where(out.notna(), None)


def _forecast_rows(world, frame: pd.DataFrame) -> pd.DataFrame:
    """A world model's answer: one forecast per request row (``smiles``, ``dose_uM``, ``time_h``)."""
    missing = [c for c in ("dose_uM", "time_h") if c not in frame.columns]
    if missing:
        raise _refuse(f"a world model needs columns smiles, dose_uM, time_h (missing: {', '.join(missing)})")
    try:
        out = world.forecast_rows(frame["smiles"].tolist(), frame["dose_uM"].tolist(), frame["time_h"].tolist(),
                                  frame["context"].tolist() if "context" in frame.columns else None)
    except ValueError as err:
        raise _refuse(str(err)) from None
    except Exception as err:  # never a traceback to the client
        raise MlflowException(f"molwm could not answer this request: {type(err).__name__}: {err}") from None
    return out.astype(object).where(out.notna(), None)


def _as_frame(model_input) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        if "smiles" not in model_input.columns:
            raise _refuse(f"input needs a 'smiles' column (got {', '.join(map(str, model_input.columns))})")
        cells = model_input["smiles"].tolist()
        if len(cells) == 1 and isinstance(cells[0], (list, tuple, np.ndarray)):
            # {"smiles": [...]} given to pyfunc.predict arrives as one row holding the list
            return pd.DataFrame({"smiles": list(cells[0])})
        return model_input
    if isinstance(model_input, dict) and "smiles" in model_input:
        return pd.DataFrame({"smiles": list(model_input["smiles"])})
    if isinstance(model_input, (list, tuple)):
        return pd.DataFrame({"smiles": list(model_input)})
    raise _refuse("input must be a table with a 'smiles' column")


def serve_command(model_uri: str, host: str = "127.0.0.1", port: int = 5000, workers: int | None = None
                  ) -> list[str]:
    """The ``mlflow models serve`` command line ``molwm serve`` runs."""
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--host", host, "--port", str(port),
           "--env-manager", "local"]
    if workers:
        cmd += ["--workers", str(workers)]
    return cmd


def serve_env(max_molecules: int, max_smiles_length: int, tracking_uri: str) -> dict:
    """Environment for the server: molwm's limits, the tracking store, and this Python's scripts on PATH
    (MLflow starts ``uvicorn`` by name, which is not on PATH when a virtual environment is not activated)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return dict(os.environ, MOLWM_MAX_MOLECULES=str(max_molecules), MOLWM_MAX_SMILES_LENGTH=str(max_smiles_length),
                MLFLOW_TRACKING_URI=tracking_uri, PATH=bin_dir + (os.pathsep + path if path else ""))


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5000, max_molecules: int = DEFAULT_MAX_MOLECULES,
          max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH, workers: int | None = None,
          tracking_uri: str | None = None) -> int:
    """Run ``mlflow models serve`` for ``model_uri`` in the foreground with molwm's limits; its exit code."""
    # its own process group, so stopping molwm (Ctrl-C or SIGTERM to its PID) stops the uvicorn workers too
    proc = subprocess.Popen(serve_command(model_uri, host, port, workers), start_new_session=True,
                            env=serve_env(max_molecules, max_smiles_length, tracking_uri or default_tracking_uri()))

    stopped = []

    def stop(*_):
        stopped.append(True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                code = proc.wait()
                return 0 if stopped else code
            except KeyboardInterrupt:
                stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
