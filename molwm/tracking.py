"""Experiment tracking: the only module that talks to MLflow for logging.

Library code takes a :class:`Tracker` and never imports mlflow itself. This module
is a leaf: it depends on mlflow alone (imported when an :class:`MLflowTracker` is
made), the error base and :mod:`molwm.outbox` (which keeps what an unreachable store
could not take), never on the rest of molwm; what a molwm model logs as its MLflow pyfunc
is described by :mod:`molwm.packaging` and handed in as a :class:`ModelPackage`.
Two implementations share one interface:

* :class:`MLflowTracker` logs to an MLflow store. The default store is a
  local SQLite file, ``sqlite:///mlflow.db`` in the working directory, unless
  ``MLFLOW_TRACKING_URI`` says otherwise (e.g. a team server).
* :class:`NullTracker` keeps everything in memory, for tests and for runs
  with ``--no-track``.

Example:
    >>> tracker = MLflowTracker(experiment="molwm-data")
    >>> with tracker.run("prepare-moses", tags={"dataset": "moses"}):
    ...     tracker.log_metrics({"n_ok": 1000})
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from molwm.mlflow_calls import (  # noqa: F401 (re-exported)
    DEFAULT_TRACKING_URI,
    StoreError,
    default_tracking_uri,
    download_model,
    fail_fast,
    model_files,
    send_one,
    unreachable,
)
from molwm.outbox import Outbox, OutboxError, Replay, StoreUnreachable, read_outbox, replay  # noqa: F401


def store_call(tracking_uri: str, kind: str, payload: dict) -> str | None:
    """One tracker call to the store with an explicit run id (so a kept call goes to its own run later);
    a model's URI, else ``None``.

    Raises:
        StoreUnreachable: If the store did not answer (any other error is a refusal and propagates).
    """
    try:
        with fail_fast():
            return send_one(_client(tracking_uri), kind, payload)
    except Exception as err:
        if unreachable(err):
            raise StoreUnreachable(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        raise


@functools.lru_cache(maxsize=8)
def _client(tracking_uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri)


def plain(obj: Any) -> Any:
    """A dataclass tree as plain data (dicts, lists, str for paths), YAML/JSON-safe."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class ModelPackage:
    """How a checkpoint is logged as an MLflow pyfunc model (models-from-code: nothing is pickled).

    Attributes:
        code: Path of the Python file that defines the model (it calls ``mlflow.models.set_model``).
        inputs: Request columns as ``(name, mlflow type, required)``.
        params: Request parameters as ``(name, mlflow type, default)``.
        example: A request example, column name -> values.
        pip_requirements: What the served model needs installed.
    """

    code: str
    inputs: list[tuple[str, str, bool]]
    params: list[tuple[str, str, Any]] = field(default_factory=list)
    example: dict[str, list] = field(default_factory=dict)
    pip_requirements: list[str] = field(default_factory=list)


def flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (``{"a": {"b": 1}} -> {"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


class Tracker:
    """Interface shared by every tracker; the base class does nothing."""

    run_id: str | None = None

    @contextlib.contextmanager
    def run(self, name: str | None = None, tags: Mapping[str, str] | None = None, nested: bool = False,
            run_id: str | None = None) -> Iterator[str | None]:
        """Open a run (nested under the active one if ``nested``), or reopen ``run_id``; yields its id."""
        yield None

    def log_model(self, checkpoint: str | Path, package: ModelPackage, name: str = "model",
                  registered_name: str | None = None, alias: str | None = None) -> str | None:
        """Log a checkpoint as an MLflow pyfunc model described by ``package``; returns its model URI.

        Args:
            checkpoint: The checkpoint file, stored as the model's ``checkpoint`` artifact.
            package: The model's code file, request schema and example (:mod:`molwm.packaging`).
            name: The model's name inside the run.
            registered_name: Also register it in the model registry under this name.
            alias: Point this alias of the registered model at the new version.
        """
        return None

    def last_step(self, key: str) -> int:
        """Highest step already logged for metric ``key`` in the active run (-1 if none)."""
        return -1

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (nested dicts are flattened to dotted keys)."""

    def log_config(self, config: Any) -> None:
        """Log a resolved config: flattened as params, and whole as ``config.yaml``."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics, optionally at a step."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts."""

    def log_dict(self, data: Mapping, name: str) -> None:
        """Write a dict as JSON/YAML (by ``name``'s extension) into the artifacts."""

    def log_dataset(self, frame, name: str, source: str, digest: str, context: str = "training",
                    targets: str | None = None) -> None:
        """Record a dataset as a run input, with its content digest."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags."""


class NullTracker(Tracker):
    """Records calls in memory; logs nothing anywhere. Useful in tests."""

    def __init__(self):
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int | None]] = []
        self.artifacts: list[str] = []
        self.dicts: dict[str, Mapping] = {}
        self.datasets: list[dict] = []
        self.tags: dict[str, str] = {}

    @contextlib.contextmanager
    def run(self, name=None, tags=None, nested=False, run_id=None):
        self.tags.update(tags or {})
        yield run_id

    def log_model(self, checkpoint, package, name="model", registered_name=None, alias=None):
        self.artifacts.append(str(checkpoint))
        return str(Path(checkpoint).resolve())

    def log_params(self, params):
        self.params.update(flatten(params))

    def log_config(self, config):
        data = plain(config)
        self.params.update(flatten(data))
        self.dicts["config.yaml"] = data

    def log_metrics(self, metrics, step=None):
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(str(path))

    def log_dict(self, data, name):
        self.dicts[name] = data

    def log_dataset(self, frame, name, source, digest, context="training", targets=None):
        self.datasets.append({"name": name, "source": source, "digest": digest, "context": context})

    def set_tags(self, tags):
        self.tags.update(tags)


class MLflowTracker(Tracker):
    """Logs to MLflow; a store that stops answering does not stop the run.

    Metrics, params, tags, artifacts, models and the run's end go through an :class:`molwm.outbox.Outbox`:
    when the store is unreachable (a tracking server stopped, a database gone), the calls are kept in order
    (in memory and in ``$MOLWM_TRACKING_OUTBOX/<run id>/outbox.jsonl``, default ``./mlflow-outbox``), the
    run goes on, and they are sent when the store answers again. When the outermost run ends, a warning
    says what was logged, what was sent late and what was not (``molwm tracking replay`` sends the rest).
    Calls the store refuses (HTTP 4xx: a bad value) still raise.

    Args:
        experiment: Experiment name (created if missing).
        tracking_uri: Store URI; default :func:`default_tracking_uri`.
        retry_seconds: While the store is down, try it again at most this often.
    """

    def __init__(self, experiment: str = "molwm", tracking_uri: str | None = None, retry_seconds: float = 5.0):
        import mlflow

        self._mlflow = mlflow
        self.experiment = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        self.run_id = None
        self.outbox = Outbox(self._send, Path(os.environ.get("MOLWM_TRACKING_OUTBOX") or "mlflow-outbox"),
                             retry_seconds)
        self.report: str | None = None

    @contextlib.contextmanager
    def run(self, name=None, tags=None, nested=False, run_id=None):
        mlflow = self._mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        kwargs = {"run_id": run_id} if run_id else {"run_name": name, "tags": dict(tags or {})}
        # a run started while another is active (e.g. pretraining inside `molwm ablate`) is its child
        nested = nested or mlflow.active_run() is not None
        outermost = self.run_id is None
        active = mlflow.start_run(nested=nested, **kwargs)
        previous, self.run_id = self.run_id, active.info.run_id
        if outermost:
            root = Path(os.environ.get("MOLWM_TRACKING_OUTBOX") or "mlflow-outbox")
            self.outbox.folder = root / self.run_id
        status = "FAILED"
        try:
            yield self.run_id
            status = "FINISHED"
        finally:
            self.run_id = previous
            if outermost and self.outbox.kept:  # what was kept goes in before the run is ended
                self.outbox.flush()
            with fail_fast():  # mlflow.end_run pops the run, then tells the store (which may be down)
                try:
                    mlflow.end_run(status)
                except Exception as err:
                    if not unreachable(err):
                        raise
                    self.outbox.call("end", {"run_id": active.info.run_id, "status": status})
            if outermost:
                self.report = self.outbox.report(self.tracking_uri)
                if self.report:
                    import warnings

                    warnings.warn(self.report, stacklevel=3)

    def _send(self, kind: str, payload: dict) -> str | None:
        return store_call(self.tracking_uri, kind, payload)

    def log_params(self, params):
        flat = {k: ("" if v is None else v) for k, v in flatten(params).items()}
        # MLflow caps a param value at 6000 characters
        flat = {k: (str(v)[:6000]) for k, v in flat.items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            self.outbox.call("params", {"run_id": self.run_id, "params": dict(items[i : i + 100])})

    def log_config(self, config):
        data = plain(config)
        self.log_params(data)
        self.log_dict(data, "config.yaml")

    def log_metrics(self, metrics, step=None):
        clean = {k: float(v) for k, v in metrics.items()}
        self.outbox.call("metrics", {"run_id": self.run_id, "metrics": clean, "step": step,
                                     "timestamp": int(time.time() * 1000)})

    def log_artifact(self, path, artifact_path=None):
        self.outbox.call("artifact", {"run_id": self.run_id, "path": str(path), "artifact_path": artifact_path},
                         artifact=Path(path))

    def log_dict(self, data, name):
        self.outbox.call("dict", {"run_id": self.run_id, "data": json.loads(json.dumps(data, default=str)),
                                  "name": name})

    def log_dataset(self, frame, name, source, digest, context="training", targets=None):
        import warnings

        import mlflow.data

        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both are local files
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36], targets=targets)
        self._mlflow.log_input(dataset, context=context)

    def set_tags(self, tags):
        self.outbox.call("tags", {"run_id": self.run_id, "tags": {k: str(v) for k, v in dict(tags).items()}})

    def last_step(self, key):
        from mlflow.tracking import MlflowClient

        if not self.run_id:
            return -1
        try:
            with fail_fast():
                history = MlflowClient(self.tracking_uri).get_metric_history(self.run_id, key)
        except Exception as err:
            if unreachable(err):
                return -1  # the store is down: log everything again (MLflow keeps repeated points apart)
            raise
        return max((m.step for m in history), default=-1)

    def log_model(self, checkpoint, package, name="model", registered_name=None, alias=None):
        """Log the model now and return its URI; while the store is down, keep it (with a copy of the
        checkpoint) in the outbox like any other call and return ``None``: it is logged into this run once
        the store answers, and the run's end says which URI it got, or that it was not logged."""
        import logging

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        payload = {"run_id": self.run_id, "path": str(checkpoint), "package": plain(package), "name": name,
                   "registered_name": registered_name, "alias": alias}
        return self.outbox.call("model", payload, artifact=Path(checkpoint))


def replay_outbox(path: str | Path, tracking_uri: str | None = None) -> Replay:
    """Send the calls kept in a fallback file (``.../<run id>/outbox.jsonl``, or the folder holding it) to
    the store (default :func:`default_tracking_uri`), in order; what the store still cannot take stays in
    the file. The command line's twin: ``molwm tracking replay FILE``.

    Raises:
        OutboxError: If the file is missing or is not an outbox file.
    """
    store = tracking_uri or default_tracking_uri()
    return replay(path, functools.partial(store_call, store), where=store)


def make_tracker(track: bool = True, experiment: str = "molwm", tracking_uri: str | None = None) -> Tracker:
    """An :class:`MLflowTracker` when ``track``, else a :class:`NullTracker`."""
    return MLflowTracker(experiment, tracking_uri) if track else NullTracker()


@contextlib.contextmanager
def temporary_artifact_dir() -> Iterator[Path]:
    """A scratch folder for files that are written only to be logged."""
    with tempfile.TemporaryDirectory(prefix="molwm-artifacts-") as d:
        yield Path(d)
