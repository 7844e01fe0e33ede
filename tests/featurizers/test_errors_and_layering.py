"""Rejects reports, and the rule that featurizers never import molwm."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from featurizers import Reject, count_reject_codes, read_rejects, write_rejects

pytestmark = pytest.mark.unit


def test_rejects_report_roundtrip(tmp_path):
    rejects = [Reject(5, "C1CC(", "could not parse", "parse_error"), Reject(2, "", "empty SMILES", "empty")]
    path = write_rejects(rejects, tmp_path / "sub" / "rejects.csv")
    back = read_rejects(path)
    assert [r.index for r in back] == [2, 5]
    assert back[1] == rejects[0]
    assert count_reject_codes(rejects) == {"empty": 1, "parse_error": 1}


def _imports(path: Path) -> list[str]:
    """Top-level module names imported anywhere in a file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n.split(".")[0] for n in names]


def test_featurizers_never_import_molwm(repo_root):
    offenders = [p.name for p in (repo_root / "featurizers").rglob("*.py") if "molwm" in _imports(p)]
    assert not offenders, offenders


def test_only_tracking_and_serving_import_mlflow(repo_root):  # pyfunc_model.py is the served model's entry file
    offenders = [
        str(p.relative_to(repo_root)) for p in (repo_root / "molwm").rglob("*.py")
        if p.name not in ("tracking.py", "mlflow_calls.py", "serving.py", "pyfunc_model.py") and "mlflow" in _imports(p)
    ]
    assert not offenders, offenders
