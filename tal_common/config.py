"""YAML configs parsed into typed dataclasses.

Each stage declares its configuration as (nested) dataclasses; this module turns a YAML file plus
``--set a.b=value`` overrides into an instance, checking every key and type on the way, and dumps a
resolved instance back to YAML so every output can record exactly what produced it.

An unknown key is an error that names the key, the file and the closest valid key; a value of the
wrong type is an error that names the key and the expected type.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.resources
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


CONFIG_PACKAGE = "tadaloc_configs"  # the repository's configs/ folder, installed as package data


def packaged_configs(kind: str) -> dict[str, Path]:
    """The YAML files shipped in ``configs/<kind>/`` (``extract`` or ``localize``), by name without ``.yaml``."""
    folder = Path(str(importlib.resources.files(CONFIG_PACKAGE) / kind))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config_path(value: str | Path, kind: str) -> Path:
    """A config given on the command line: an existing file, else a packaged config named by ``value``
    (``hacs_bmn``, ``hacs_bmn.yaml`` or the checkout-relative ``configs/<kind>/hacs_bmn.yaml``), so the same
    command works from any directory and from a wheel install."""
    path = Path(value)
    if path.is_file():
        return path
    known = packaged_configs(kind)
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if name in known and (path.parent == Path(".") or path.parent.as_posix().endswith(f"configs/{kind}")):
        return known[name]
    raise ConfigError(f"config {str(value)!r} not found: not a file, nor one of the packaged {kind} configs "
                      f"({', '.join(known)})")


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: str | Path | None = None,
) -> T:
    """Build ``cls`` from defaults, then ``base`` YAML, then ``path`` YAML, then ``overrides``.

    ``overrides`` are ``"a.b=value"`` strings; ``value`` is parsed as YAML (``1`` is an int,
    ``[1, 2]`` a list, ``null`` None). Later sources win key by key.
    """
    data: dict[str, Any] = {}
    sources: list[tuple[dict[str, Any], str]] = []
    for src in (base, path):
        if src is not None:
            sources.append((_read_yaml(Path(src)), str(src)))
    for item in overrides:
        sources.append((_parse_override(item), f"--set {item}"))
    for mapping, origin in sources:
        _check_keys(cls, mapping, origin, prefix="")
        data = _merge(data, mapping)
    origin = " + ".join(o for _, o in sources) or "<defaults>"
    return _build(cls, data, origin, prefix="")


def config_to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (field order kept)."""
    return yaml.safe_dump(_to_plain(cfg), sort_keys=False)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain dicts/lists/scalars."""
    return _to_plain(cfg)


def add_config_args(parser: argparse.ArgumentParser, config_help: str = "YAML config file",
                    example: str = "train.epochs=5") -> None:
    """Add ``--config FILE`` and repeatable ``--set KEY=VALUE`` to ``parser``; ``example`` is a valid override
    of that tool's config, shown in the help (tests/test_cli.py checks it)."""
    parser.add_argument("--config", type=Path, default=None, help=config_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config key, e.g. --set {example} (value parsed as YAML; repeatable)",
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    return loaded


def _parse_override(item: str) -> dict[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def _merge(old: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_keys(cls: type, mapping: Mapping[str, Any], origin: str, prefix: str) -> None:
    """Reject unknown keys anywhere in ``mapping`` before any value is built."""
    types_ = _field_types(cls)
    for key, value in mapping.items():
        if key not in types_:
            close = difflib.get_close_matches(str(key), list(types_), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            valid = ", ".join(types_)
            raise ConfigError(f"unknown config key '{prefix}{key}' in {origin}{hint}; valid keys: {valid}")
        sub = _dataclass_of(types_[key])
        if sub is not None and isinstance(value, dict):
            _check_keys(sub, value, origin, prefix=f"{prefix}{key}.")


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    return None


def _build(cls: type[T], data: Mapping[str, Any], origin: str, prefix: str) -> T:
    kwargs: dict[str, Any] = {}
    for name, tp in _field_types(cls).items():
        if name in data:
            kwargs[name] = _coerce(tp, data[name], f"{prefix}{name}", origin)
        elif _dataclass_of(tp) is not None:
            kwargs[name] = _build(tp, {}, origin, prefix=f"{prefix}{name}.")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or 'config'}: {exc}") from exc


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, key: str, origin: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    sub = _dataclass_of(tp)
    if sub is not None:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: '{key}' must be a mapping, got {value!r}")
        return _build(sub, value, origin, prefix=f"{key}.")
    origin_tp = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin_tp in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(arg, value, key, origin)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{origin}: '{key}' = {value!r} does not match {_type_name(tp)}")
    if origin_tp is typing.Literal:
        if value not in args:
            raise ConfigError(f"{origin}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin_tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{origin}: '{key}' must be a list, got {value!r}")
        if origin_tp is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{origin}: '{key}' must have {len(args)} items, got {value!r}")
            return tuple(_coerce(a, v, key, origin) for a, v in zip(args, value))
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, key, origin) for v in value]
        return tuple(items) if origin_tp is tuple else items
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e6 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{origin}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int or tp is bool:
        if type(value) is not tp:
            raise ConfigError(f"{origin}: '{key}' must be {tp.__name__}, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: '{key}' must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: '{key}' must be a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{origin}: '{key}': unsupported config type {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
