"""Rejects reports, and the rule that featurizers never import molwm."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from featurizers import Reject, count_reject_codes, read_rejects, write_rejects

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_rejects_report_roundtrip(tmp_path):
    rejects = [Reject(5, "C1CC(", "could not parse", "parse_error"), Reject(2, "", "empty SMILES", "empty")]
    path = write_rejects(rejects, tmp_path / "sub" / "rejects.csv")
    back = read_rejects(path)
    assert [r.index for r in back] == [2, 5]
    assert back[1] == rejects[0]
    assert count_reject_codes(rejects) == {"empty": 1, "parse_error": 1}


def test_featurizers_never_import_molwm():
    offenders = []
    for path in (ROOT / "featurizers").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "molwm" or n.startswith("molwm.")]
    assert not offenders, offenders


def test_no_library_module_below_tracking_imports_mlflow():
    allowed = {"tracking.py"}
    offenders = []
    for path in (ROOT / "molwm").rglob("*.py"):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "mlflow"]
    assert not offenders, offenders
