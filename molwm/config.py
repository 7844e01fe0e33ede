"""Typed configuration: dataclass schemas, YAML loading, ``key=value`` overrides.

Every run is fully determined by one config object. Loading validates the
whole tree against the dataclass types, and errors name the dotted path of
the offending key, e.g. ``config key 'prepare.limit': expected int, got str 'ten'``.

Example:
    >>> cfg = load_config(PrepareConfig, "configs/data/moses_subset.yaml", ["limit=1000"])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union

import yaml

from molwm.atomic import write_text_atomic
from molwm.errors import MolwmError

T = TypeVar("T")


class ConfigError(MolwmError, ValueError):
    """A config file, dict or override does not match its schema."""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _fail(path: str, expected, value) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(
        f"config key '{path or '<root>'}': expected {_type_name(expected)}, got {type(value).__name__} {shown}"
    )


def _convert(tp, value, path: str):
    """Check ``value`` against type ``tp``, converting where lossless (int -> float, str -> Path)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise _fail(path, tp, value)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _fail(path, tp, value)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, tp, value)
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, tp, value)
        args = typing.get_args(tp)
        val_t = args[1] if len(args) == 2 else Any
        return {str(k): _convert(val_t, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _fail(path, tp, value)
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # no molwm setting means anything at NaN or infinity
                raise ConfigError(f"config key '{path or '<root>'}': must be a finite number, got {value}")
            return float(value)
        raise _fail(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(path, tp, value)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _fail(path, tp, value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _fail(path, tp, value)


def from_dict(cls: type[T], data: Mapping, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, validating every key and type.

    Args:
        cls: A dataclass type (fields may nest other dataclasses).
        data: Plain data, e.g. from YAML.
        path: Dotted prefix used in error messages.

    Raises:
        ConfigError: On an unknown key (with a suggestion), a missing required
            key, or a value of the wrong type; the message names the dotted path.
    """
    if not isinstance(data, Mapping):
        raise _fail(path, cls, data)
    upgrade = getattr(cls, "upgrade_legacy", None)
    if callable(upgrade):  # a schema that changed says how its older form reads
        data = upgrade(dict(data))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{_join(path, close[0])}'?)" if close else f" (known keys: {', '.join(fields)})"
        raise ConfigError(f"unknown config key '{_join(path, key)}'{hint}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key '{_join(path, name)}'")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{path + ': ' if path else ''}{err}") from None
    return obj


def check_ranges(obj, at_least_one: Sequence[str] = (), positive: Sequence[str] = (),
                 not_negative: Sequence[str] = (), fraction: Sequence[str] = ()) -> None:
    """Raise a one-line ConfigError for the first named field of ``obj`` out of its range (None is skipped).

    Args:
        obj: A config dataclass (call from its ``validate``; the loader prefixes the section).
        at_least_one: Sizes and counts (``dim``, ``layers``, ``batch_size``): >= 1.
        positive: Rates and scales (``lr``, ``grad_clip``): > 0.
        not_negative: Counts and weights that may be 0 (``warmup_steps``, ``weight_decay``): >= 0.
        fraction: Probabilities such as ``dropout``: in [0, 1).
    """
    rules = [(at_least_one, lambda v: v >= 1, "at least 1"), (positive, lambda v: v > 0, "positive"),
             (not_negative, lambda v: v >= 0, "0 or more"), (fraction, lambda v: 0 <= v < 1, "in [0, 1)")]
    for names, ok, what in rules:
        for name in names:
            value = getattr(obj, name)
            if value is not None and not ok(value):
                raise ConfigError(f"{name} must be {what}, got {value}")


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def to_dict(obj) -> Any:
    """Dataclass tree to plain data (lists, dicts, str for paths), YAML/JSON-safe."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], parsed value)``.

    The value is parsed as YAML, so ``limit=100`` is an int, ``name=moses``
    a string, ``seeds=[0,1,2]`` a list and ``limit=null`` is None.
    """
    shown = text if text.isprintable() else repr(text)[1:-1]  # a message stays one line
    if "=" not in text:
        raise ConfigError(f"override '{shown}' must look like key=value (e.g. limit=1000)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{shown}' has an empty key")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{shown}': value is not valid YAML ({_one_line(err)})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``data`` with each ``key=value`` override set (nested keys by dots)."""
    out = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                shown = text if text.isprintable() else repr(text)[1:-1]
                raise ConfigError(f"override '{shown}': '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return out


MAX_YAML_VALUES = 100_000
"""Values a config may hold once YAML aliases (``*name``) are expanded: a few hundred-byte file of nested
aliases (a "billion laughs") would otherwise grow to gigabytes when the tree is copied and checked."""

_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """``safe_load`` plus YAML 1.2 numbers (``1e-3`` is a float; PyYAML's 1.1 rules make it a string)
    and a bound on what aliases expand to, checked on the parsed node graph before anything is built."""

    def construct_document(self, node):
        expanded = _expanded_size(node, {}, set())
        if expanded > MAX_YAML_VALUES:
            raise ConfigError(f"YAML aliases (*name) expand to over {MAX_YAML_VALUES:,} values "
                              f"({expanded:,}); write the values out instead")
        return super().construct_document(node)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))


def _expanded_size(node, memo: dict, open_nodes: set) -> int:
    """Values under ``node`` with every alias expanded, counted once per node (linear in the file)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_nodes:
        raise ConfigError("a YAML alias (*name) refers to a section that contains it (a cycle)")
    open_nodes.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    memo[key] = total = 1 + sum(_expanded_size(child, memo, open_nodes) for child in children)
    open_nodes.discard(key)
    return total


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def safe_load(text: str):
    """Parse YAML like ``yaml.safe_load``, with :class:`_Loader`'s additions.

    Raises:
        ConfigError: Aliases that expand past :data:`MAX_YAML_VALUES` or refer to themselves,
            or nesting too deep to parse.
        yaml.YAMLError: Text that is not YAML.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError("YAML nested too deeply") from None


def _deep_copy(data):
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with ``safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = safe_load(path.read_text())
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(err)}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping | None = None,
    flags: Mapping | None = None,
) -> T:
    """Load a config of type ``cls`` from YAML plus overrides.

    Precedence, lowest first: schema defaults, ``base``, the file, ``flags``,
    ``overrides``.

    Args:
        cls: The schema dataclass.
        path: YAML file, or None.
        overrides: ``key=value`` strings (dotted keys), applied last.
        base: Values applied before the file.
        flags: Top-level values applied after the file (e.g. explicit CLI flags).

    Raises:
        ConfigError: Naming the file and the dotted key on any problem.
    """
    data = _deep_copy(dict(base or {}))
    if path is not None:
        data.update(read_yaml(path))
    data.update(flags or {})
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        if path is not None:
            raise ConfigError(f"{path}: {err}") from None
        raise


def save_config(obj, path: str | Path) -> Path:
    """Write a config dataclass as YAML (the resolved form logged with runs)."""
    path = Path(path)
    write_text_atomic(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
    return path
