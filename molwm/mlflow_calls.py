"""The MLflow client calls the tracker sends, kept or replayed by :mod:`molwm.outbox`: how one call is
sent, how a store that did not answer is told from one that refused, and MLflow's HTTP client made to
fail fast. A leaf: mlflow only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from molwm.errors import MolwmError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI

HTTP_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""MLflow's HTTP client retries for minutes by default; a tracker call fails within seconds instead (and
is kept for later) unless these are set in the environment."""


@contextlib.contextmanager
def fail_fast():
    """Within the block, MLflow's HTTP client fails within seconds (unless the environment says otherwise)."""
    missing = {k: v for k, v in HTTP_FAIL_FAST.items() if k not in os.environ}
    os.environ.update(missing)
    try:
        yield
    finally:
        for k in missing:
            os.environ.pop(k, None)


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` means the store did not answer (kept for later) rather than refused the call."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.get_http_status_code() >= 500
    return isinstance(err, OSError) or type(err).__name__ in ("OperationalError", "InterfaceError",
                                                               "MaxRetryError", "Timeout")


def send_one(client, kind: str, payload: dict) -> str | None:
    """Send one kept tracker call (``kind``: metrics, params, tags, artifact, dict, model, end) through
    ``client``; a model's URI, else ``None``."""
    from mlflow.entities import Metric, Param, RunTag

    run_id = payload["run_id"]
    if kind == "metrics":
        step = payload["step"] if payload["step"] is not None else 0
        client.log_batch(run_id, metrics=[Metric(k, v, payload["timestamp"], step)
                                          for k, v in payload["metrics"].items()])
    elif kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in payload["params"].items()])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in payload["tags"].items()])
    elif kind == "artifact":
        client.log_artifact(run_id, payload["path"], artifact_path=payload["artifact_path"])
    elif kind == "dict":
        client.log_dict(run_id, payload["data"], payload["name"])
    elif kind == "model":
        return log_pyfunc(client, payload)
    elif kind == "end":
        client.set_terminated(run_id, payload["status"])
    else:
        raise ValueError(f"unknown tracker call {kind!r}")
    return None


def log_pyfunc(client, payload: dict) -> str:
    """Log a checkpoint as an MLflow pyfunc model from code into run ``payload["run_id"]``; its model URI.

    The payload: ``path`` (the checkpoint), ``package`` (:class:`molwm.tracking.ModelPackage` as plain
    data), ``name``, ``registered_name`` and ``alias`` (either may be ``None``). The run is named, not taken
    from MLflow's active run, so a model kept while the store was down is logged into its own run later,
    from this process or another one.
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    package, run_id = payload["package"], payload["run_id"]
    inputs = Schema([ColSpec(kind, col, required=required) for col, kind, required in package["inputs"]])
    params = ParamSchema([ParamSpec(p, kind, default) for p, kind, default in package["params"]]) \
        if package["params"] else None
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=payload["name"], source_run_id=run_id,
                                        params=dict(run.data.params))
    with _store_for_registry(client.tracking_uri):  # Model.log resolves its store from MLflow's globals
        info = Model.log(None, name=payload["name"], flavor=mlflow.pyfunc, run_id=run_id,
                         model_id=logged.model_id, python_model=package["code"],
                         artifacts={"checkpoint": payload["path"]},
                         pip_requirements=list(package["pip_requirements"]),
                         registered_model_name=payload["registered_name"],
                         signature=ModelSignature(inputs=inputs, params=params),
                         input_example=pd.DataFrame(package["example"]) if package["example"] else None)
    if payload["registered_name"] and payload["alias"]:
        client.set_registered_model_alias(payload["registered_name"], payload["alias"],
                                          str(info.registered_model_version))
    return info.model_uri


class StoreError(MolwmError, LookupError):
    """The MLflow store could not give what was asked (the message is MLflow's first line)."""


def download_model(uri: str, tracking_uri: str | None = None) -> Path:
    """Download the MLflow model (or artifact) at ``uri`` from the store; its local path.

    The store is ``tracking_uri`` (default :func:`default_tracking_uri`), also used as the
    registry for ``models:/`` URIs; MLflow's global tracking URI is left as it was.

    Raises:
        StoreError: If the store cannot resolve ``uri``.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    store = tracking_uri or default_tracking_uri()
    try:
        with _store_for_registry(store):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri), tracking_uri=store,
                                                            registry_uri=store))
    except MlflowException as err:
        raise StoreError(err.message.splitlines()[0]) from None


@contextlib.contextmanager
def _store_for_registry(store: str):
    """MLflow resolves ``models:/`` through its global registry URI in places that ignore the one passed
    in, so a process that logged to another store first would look the name up there: point both globals
    at ``store`` for the call, then put back exactly what was there (unset stays unset)."""
    import mlflow.tracking._model_registry.utils as registry
    import mlflow.tracking._tracking_service.utils as tracking

    saved = (getattr(tracking, "_tracking_uri", None), getattr(registry, "_registry_uri", None))
    tracking._tracking_uri, registry._registry_uri = store, store
    try:
        yield
    finally:
        tracking._tracking_uri, registry._registry_uri = saved


def model_files(uri: str, tracking_uri: str | None = None) -> list[str]:
    """Names of the files at the top of the MLflow model (or artifact folder) ``uri``; downloads nothing.

    Raises:
        StoreError: If the store cannot resolve ``uri``.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    store = tracking_uri or default_tracking_uri()
    try:
        files = mlflow.artifacts.list_artifacts(artifact_uri=str(uri), tracking_uri=store)
    except (MlflowException, OSError) as err:
        reason = (err.message if isinstance(err, MlflowException) else str(err)).strip().splitlines()
        raise StoreError(reason[0] if reason else type(err).__name__) from None
    return [f.path.rsplit("/", 1)[-1] for f in files]
