"""Bad input on every subcommand ends in one line, ``molwm: error: ...``, and exit code 2; never a traceback.

Each subcommand gets a missing file, a bad key and a wrong type. Most cases call :func:`molwm.cli.main` in
this process; two run the real console script, and one checks that building the parser stays light.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featurizers.errors import FeaturizationError
from molwm.cli import main
from molwm.errors import MolwmError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
MISSING = "/no/such/place"


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's usage errors exit
        return exit_.code


def _with(argv: list, flag: str, value) -> list:
    """``argv`` with the value after ``flag`` replaced."""
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2:]]


def _assert_one_line_error(capsys, argv: list[str], expected: str) -> None:
    code = _run([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("molwm: error: "), err
    assert expected in err, err


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory) -> Path:
    """A real (tiny) fine-tuned checkpoint, built once through the CLI."""
    work = tmp_path_factory.mktemp("model")
    out = work / "ft"
    code = main(["finetune", "--config", str(CONFIGS / "finetune/tiny.yaml"), "limit=80", "epochs=1", "seeds=[0]",
                 f"cache_dir={work / 'cache'}", f"out_dir={out}", "--no-track", "--no-progress"])
    assert code == 0
    return out / "model.pt"


@pytest.fixture
def cards(tmp_path) -> dict[str, Path]:
    """Card folders with one card each: an unknown key, a wrongly typed value."""
    body = ("source: {kind: local, files: [{path: a.csv}]}\ncolumns: {smiles: smiles}\n"
            "task: {type: regression}\nlicense: CC0-1.0\ncitation: none\n")
    out = {}
    for name, extra in (("bad_key", "nope: 1\n"), ("bad_type", "size: abc\n")):
        folder = tmp_path / f"cards_{name}"
        folder.mkdir()
        (folder / f"{name}.yaml").write_text(f"name: {name}\n{extra}{body}")
        out[name] = folder
    return out


DATA = [
    pytest.param(["data", "list", "--cards", MISSING], "card folder not found", id="data-list-missing"),
    pytest.param(["data", "show", f"{MISSING}/card.yaml"], "config file not found", id="data-show-missing"),
    pytest.param(["data", "prepare", "freesolv", "--config", f"{MISSING}.yaml", "--no-track"],
                 "config file not found", id="data-prepare-missing"),
    pytest.param(["data", "prepare", "freesolv", "nope=1", "--no-track"], "unknown config key 'nope'",
                 id="data-prepare-key"),
    pytest.param(["data", "prepare", "freesolv", "shard_size=abc", "--no-track"],
                 "'shard_size': expected int, got str 'abc'", id="data-prepare-type"),
]


@pytest.mark.cli
@pytest.mark.parametrize(("argv", "expected"), DATA)
def test_data_bad_input(capsys, argv, expected):
    _assert_one_line_error(capsys, argv, expected)


@pytest.mark.cli
@pytest.mark.parametrize("command", ["list", "show"])
def test_data_bad_cards(capsys, cards, command):
    for name, expected in (("bad_key", "unknown config key 'nope'"), ("bad_type", "'size': expected int")):
        argv = ["data", command] + ([name] if command == "show" else []) + ["--cards", cards[name]]
        if command == "show":
            _assert_one_line_error(capsys, argv, expected)
            continue
        assert _run([str(a) for a in argv]) == 0  # listed as broken, beside the others (issue 26)
        out = capsys.readouterr().out
        (reason,) = [line for line in out.splitlines() if line.strip().startswith(f"{name}: broken card: ")]
        assert expected in reason and "freesolv" in out


PRETRAIN_CONFIGS = {"graph": "pretrain/tiny.yaml", "multimodal": "pretrain/multimodal_tiny.yaml",
                    "world": "world/lab_tiny.yaml"}
MISSING_DATA = {"graph": (f"dataset={MISSING}.yaml", "config file not found"),
                "multimodal": (f"data.lab={MISSING}", "not found"),
                "world": (f"data.lab={MISSING}", "not a synthetic lab")}


@pytest.mark.cli
@pytest.mark.parametrize("kind", sorted(PRETRAIN_CONFIGS))
def test_pretrain_bad_input(capsys, kind):
    config = CONFIGS / PRETRAIN_CONFIGS[kind]
    base = ["pretrain", "--config", config, "--no-track", "--no-progress"]
    override, expected = MISSING_DATA[kind]
    _assert_one_line_error(capsys, [*base, override], expected)
    _assert_one_line_error(capsys, [*base, "model.nope=1"], "unknown config key 'model.nope'")
    _assert_one_line_error(capsys, [*base, "batch_size=abc"], "'batch_size': expected int, got str 'abc'")


@pytest.mark.cli
def test_pretrain_missing_config_yaml_key_and_resume(capsys, tmp_path):
    _assert_one_line_error(capsys, ["pretrain", "--config", f"{MISSING}.yaml", "--no-track"],
                           "config file not found")
    _assert_one_line_error(capsys, ["pretrain", "--resume", f"{MISSING}.pt", "--no-track"], "not found")
    _assert_one_line_error(capsys, ["pretrain", "--resume", f"{MISSING}.pt", "lr=0.1", "--no-track"],
                           "drop --config and the overrides")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: multimodal\nnope: 1\n")
    _assert_one_line_error(capsys, ["pretrain", "--config", bad, "--no-track"], "unknown config key 'nope'")


@pytest.mark.cli
def test_finetune_bad_input(capsys, model_pt):
    tiny = ["finetune", "--config", CONFIGS / "finetune/tiny.yaml", "--no-track", "--no-progress"]
    _assert_one_line_error(capsys, ["finetune", "--config", f"{MISSING}.yaml", "--no-track"],
                           "config file not found")
    _assert_one_line_error(capsys, [*tiny, "--from", f"{MISSING}.pt", "mode=full"], MISSING)
    _assert_one_line_error(capsys, [*tiny, f"dataset={MISSING}.yaml"], "config file not found")
    _assert_one_line_error(capsys, [*tiny, "encoder.nope=1"], "unknown config key 'encoder.nope'")
    _assert_one_line_error(capsys, [*tiny, "batch_size=abc"], "'batch_size': expected int, got str 'abc'")
    # a named model is used, or the user is told why not (tiny.yaml says mode: scratch)
    _assert_one_line_error(capsys, [*tiny, "--from", model_pt],
                           "--from/from_model was given but mode is scratch; set mode=full or mode=linear_probe")


@pytest.mark.cli
def test_ablate_bad_input(capsys):
    graph = ["ablate", "--config", CONFIGS / "ablate/graph_tiny.yaml", "--no-track", "--no-progress"]
    _assert_one_line_error(capsys, ["ablate", "--config", f"{MISSING}.yaml", "--no-track"],
                           "config file not found")
    _assert_one_line_error(capsys, [*graph, "nope=1"], "unknown config key 'nope'")
    _assert_one_line_error(capsys, [*graph, "pretrain.max_steps=abc"], "expected int, got str 'abc'")


@pytest.mark.cli
def test_query_bad_input(capsys, model_pt):
    query = ["query", "--model", model_pt, "--output", "out.csv", "--no-progress"]
    _assert_one_line_error(capsys, ["query", "--model", f"{MISSING}.pt", "--smiles", "CCO", "--output", "o.csv"],
                           MISSING)
    _assert_one_line_error(capsys, [*query, "--input", f"{MISSING}.csv"], "candidates file not found")
    _assert_one_line_error(capsys, [*query, "--input", Path.cwd()], "not found")  # a folder
    _assert_one_line_error(capsys, [*query, "--smiles", "CCO", "--what", "nope"], "unknown --what nope")
    _assert_one_line_error(capsys, [*query, "nope=1", "--smiles", "CCO"], "unrecognized arguments: nope=1")
    _assert_one_line_error(capsys, [*query, "--smiles", "CCO", "-k", "abc"], "argument -k: invalid int value")


@pytest.mark.cli
def test_serve_bad_input(capsys, model_pt, tmp_path):
    _assert_one_line_error(capsys, ["serve", "--model", f"{MISSING}.pt"], f"no model at {MISSING}.pt")
    _assert_one_line_error(capsys, ["serve", "--model", model_pt], "is a checkpoint file")
    _assert_one_line_error(capsys, ["serve", "--model", tmp_path], "not an MLflow model folder")
    _assert_one_line_error(capsys, ["serve", "--model", "models:/no_such_model@champion"],
                           "cannot serve models:/no_such_model@champion: MLflow store")
    _assert_one_line_error(capsys, ["serve", "--model", "models:/x@y", "nope=1"], "unrecognized arguments")
    _assert_one_line_error(capsys, ["serve", "--model", "models:/x@y", "--port", "abc"],
                           "argument --port: invalid int value: 'abc'")


@pytest.mark.cli
def test_forecast_and_plan_bad_input(capsys, model_pt, tmp_path):
    candidates = tmp_path / "c.csv"
    candidates.write_text("smiles\nCCO\n")
    forecast = ["forecast", "--smiles", "CCO", "--doses", "1", "--times", "24", "--output", "f.csv", "--no-track"]
    plan = ["plan", "--target", "CCO@10", "--candidates", candidates, "--time", "24", "--output", "p.csv",
            "--no-track"]
    for base in (forecast, plan):
        _assert_one_line_error(capsys, [*base, "--model", f"{MISSING}.pt"], MISSING)
        _assert_one_line_error(capsys, [*base, "--model", model_pt], "not a world model")
        _assert_one_line_error(capsys, [*base, "--model", model_pt, "model.nope=1"], "unrecognized arguments")
    _assert_one_line_error(capsys, [*_with(forecast, "--doses", "abc"), "--model", model_pt],
                           "argument --doses: expected comma-separated numbers")
    _assert_one_line_error(capsys, [*_with(plan, "--time", "abc"), "--model", model_pt],
                           "argument --time: invalid float value: 'abc'")


@pytest.mark.cli
def test_sim_generate_bad_input(capsys, tmp_path):
    sim = ["sim", "generate", "--out", tmp_path / "lab", "--no-progress"]
    _assert_one_line_error(capsys, [*sim, "--source", f"{MISSING}.smi"], f"SMILES file not found: {MISSING}.smi")
    _assert_one_line_error(capsys, [*sim, "--source", "no_such_card"], "unknown dataset 'no_such_card'")
    _assert_one_line_error(capsys, [*sim, "--format", "bmp"], "argument --format: invalid choice: 'bmp'")
    _assert_one_line_error(capsys, [*sim, "--molecules", "abc"], "argument --molecules: invalid int value")
    _assert_one_line_error(capsys, [*sim, "--molecules", "0"], "at least 1")


def _console(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("molwm")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "molwm"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


@pytest.mark.cli
@pytest.mark.parametrize("args", [
    pytest.param(("pretrain", "--config", str(CONFIGS / "pretrain/multimodal_tiny.yaml"), f"data.lab={MISSING}",
                  "--no-track", "--no-progress"), id="pretrain-multimodal-missing-lab"),
    pytest.param(("serve", "--model", f"{MISSING}.pt"), id="serve-missing-model"),
])
def test_console_script_reports_one_line(args):
    proc = _console(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("molwm: error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.unit
def test_building_the_parser_imports_no_heavy_library():
    code = ("import molwm.cli, sys; molwm.cli.build_parser(); print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'mlflow', 'rdkit', 'torch_geometric', 'deepchem')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.unit
@pytest.mark.parametrize(("error", "expected"), [
    (FeaturizationError("bad\nSMILES", "parse_error"), "molwm: error: bad SMILES"),
    (MolwmError("first line\n  second line"), "molwm: error: first line second line"),
    (PermissionError(13, "Permission denied", "/root/x"), "molwm: error: [Errno 13] Permission denied"),
    (IsADirectoryError(21, "Is a directory", "/tmp"), "molwm: error: [Errno 21] Is a directory"),
], ids=["featurization", "multi-line", "permission", "directory"])
def test_main_reports_each_error_class_in_one_line(capsys, monkeypatch, error, expected):
    def fail(args):
        raise error

    monkeypatch.setattr("molwm.data.cli.cmd_data_list", fail)
    assert main(["data", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and len(err.strip().splitlines()) == 1, err


@pytest.mark.unit
def test_every_molwm_error_shares_one_base():
    """Every exception class defined in molwm/ lists MolwmError next to its builtin base (read statically,
    so a class that moves between modules stays covered); featurizers/ never imports molwm."""
    import ast
    import builtins

    def builtin_error(base: ast.expr) -> bool:
        cls = getattr(builtins, base.id, None) if isinstance(base, ast.Name) else None
        return isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, Warning)

    found, missing = [], []
    for path in sorted((ROOT / "molwm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.name != "MolwmError" and any(map(builtin_error, node.bases)):
                found.append(node.name)
                if not any(isinstance(b, ast.Name) and b.id == "MolwmError" for b in node.bases):
                    missing.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not missing
    assert {"ConfigError", "DatasetError", "FormatError", "CheckpointError", "TrainingDiverged"} <= set(found)
    from molwm.config import ConfigError

    assert issubclass(ConfigError, MolwmError) and issubclass(ConfigError, ValueError)
    assert not issubclass(FeaturizationError, MolwmError)
