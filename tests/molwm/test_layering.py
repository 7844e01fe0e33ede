"""The layering of molwm: no import cycles, and lower layers never import higher ones.

Imports inside functions count as much as module-level ones: an import moved into a
function to dodge a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

LOWER = ("featurizers", "molwm.errors", "molwm.atomic", "molwm.weights", "molwm.config", "molwm.tracking", "molwm.outbox",
         "molwm.mlflow_calls", "molwm.data", "molwm.encoders", "molwm.jepa", "molwm.checkpoints")
"""Layers that never import the higher ones below."""
HIGHER = ("molwm.train", "molwm.world", "molwm.query", "molwm.query_files", "molwm.serving", "molwm.api",
          "molwm.pyfunc_model", "molwm.pretraining", "molwm.experiments", "molwm.cli", "molwm.screening")
"""What is built on everything else."""
WORLD_PARTS = ("molwm.world.model", "molwm.world.config", "molwm.world.data")
"""The world model's network, its config and its time-course container: parts the kind registry
rebuilds checkpoints from, not the world model's training or forecasting."""
BELOW_TRAINING = ("molwm.objectives", "molwm.kinds", "molwm.packaging", "molwm.predictors", "molwm.uncertainty",
                  "molwm.evaluation")
"""The plug-ins, the model-kind registry, the predictors, uncertainty and evaluation: the training driver
uses them, never the reverse."""


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("molwm", "featurizers"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the molwm/featurizers modules it imports, at module level or inside functions."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = package.split(".")
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _in(name: str, layers: tuple[str, ...]) -> bool:
    if layers is HIGHER and _in(name, WORLD_PARTS):
        return False
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def test_the_import_graph_sees_function_level_imports():
    graph = import_graph()
    assert "molwm.data.info" in graph["molwm.data.cli"]  # imported inside cmd_data_list
    assert graph["molwm.errors"] == set()


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_lower_layers_never_import_higher_ones():
    bad = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
           if _in(a, LOWER) and (_in(b, HIGHER) or _in(b, BELOW_TRAINING))]
    assert bad == []


def test_plugins_and_model_kinds_never_import_the_driver_or_the_front_ends():
    bad = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
           if _in(a, BELOW_TRAINING) and _in(b, HIGHER)]
    assert bad == []


def test_tracking_is_a_leaf():
    # molwm.outbox keeps what an unreachable store could not take; it is a leaf too
    assert import_graph()["molwm.tracking"] <= {"molwm.errors", "molwm.outbox", "molwm.mlflow_calls"}
    assert import_graph()["molwm.outbox"] <= {"molwm.errors", "molwm.atomic"}
    assert import_graph()["molwm.atomic"] <= {"molwm.errors"}  # atomic writes: every layer may use them
    assert import_graph()["molwm.mlflow_calls"] <= {"molwm.errors"}


def test_no_library_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for folder in ("molwm", "featurizers") for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_only_the_graph_encoder_computes_positional_codes():
    """Callers ask the encoder (``GraphEncoderConfig.prepare``, or nothing: its forward fills a missing code)."""
    callers = sorted(str(p.relative_to(ROOT)) for folder in ("molwm", "benchmarks") for p in (ROOT / folder).rglob("*.py")
                     if "structural_pe(" in p.read_text() and p != ROOT / "molwm/encoders/graph.py")
    assert callers == []


def test_front_ends_ask_the_kind_registry_and_name_no_kind():
    """Loading, serving, packaging, the CLI and the forecaster dispatch through ``molwm.kinds`` (kinds,
    families and their loaders); none of them names a checkpoint kind or imports a kind's constant."""
    from molwm.kinds import KINDS

    constants = ("GRAPH_JEPA", "GRAPH_PRETRAIN", "MULTIMODAL_JEPA", "MULTIMODAL_OTHERS", "PROPERTY_MODEL", "WORLD_MODEL",
                 "IMAGE_WORLD_MODEL")
    named = {}
    for rel in ("molwm/api.py", "molwm/serving.py", "molwm/packaging.py", "molwm/cli.py", "molwm/world/forecast.py",
                "molwm/query.py", "molwm/pyfunc_model.py"):
        text = (ROOT / rel).read_text()
        hits = [k for k in KINDS if f'"{k}"' in text or f"'{k}'" in text] + [c for c in constants if c in text]
        if hits:
            named[rel] = hits
    assert named == {}


def test_morgan_fingerprints_are_computed_in_featurizers_only():
    """Forests, the domain, extra inputs, the world model and the lab all read ``featurizers.fingerprints``."""
    places = sorted(str(p.relative_to(ROOT)) for folder in ("molwm", "featurizers", "benchmarks")
                    for p in (ROOT / folder).rglob("*.py")
                    if "GetMorganGenerator" in p.read_text() or "GetMorganFingerprint" in p.read_text())
    assert places == ["featurizers/fingerprints.py"]
