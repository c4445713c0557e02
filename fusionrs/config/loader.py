"""One config dialect for build, training and evaluation.

Configs are sectioned dataclasses filled from YAML and patched by `dotted.key=value` overrides.
Every key is checked against the dataclasses, so a typo such as `split.sed=3` fails with a
message naming the key and the keys that would have been valid; every value is checked against
its type, then by the section's own `validate()`. The resolved config (secrets never live here:
API keys are read from the environment by name) is written beside every run's outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem, always naming the offending key."""


def stable_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------
# Validators shared by every config section (they raise ConfigError naming the key).


def positive(where: str, **values: float) -> None:
    for k, v in values.items():
        if v <= 0:
            raise ConfigError(f"{where}.{k}: must be positive, got {v}")


def in_range(where: str, v: float, lo: float, hi: float) -> None:
    if not lo <= v <= hi:
        raise ConfigError(f"{where}: {v} is outside [{lo}, {hi}]")


def choice(where: str, v: Any, choices: tuple) -> None:
    if v not in choices:
        raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(str, choices))}")


def validate_sections(cfg: Any, where: str = "") -> None:
    """Call `validate(where)` on every dataclass section of `cfg` (recursively)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            validate_sections(value, key)
            if hasattr(value, "validate"):
                value.validate(key)


# ---------------------------------------------------------------------------------------
# Filling dataclasses from plain data, with errors that name the key.


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, checking every key and every value's type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown key {key!r}; valid keys here: {', '.join(sorted(fields))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}" if where else name) for name, value in data.items()}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        key = f"{where}.{missing[0]}" if where else missing[0]
        raise ConfigError(f"missing required key {key!r}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML scalars (3 → int, true → bool)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key segment")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        for i, p in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_list_index(p, node, ".".join(parts[: i + 1]))]
                continue
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, (dict, list)):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(last, node, key)] = value
        else:
            node[last] = value
    return data


def _list_index(p: str, node: list, key: str) -> int:
    if not p.isdigit() or int(p) >= len(node):
        raise ConfigError(f"override {key!r}: {p!r} is not an index into a list of {len(node)}")
    return int(p)


def load_config(path: str | Path | None, overrides: list[str] | tuple = (), cls: type | None = None) -> Any:
    """YAML file (optional) + overrides → a validated `cls` (default: the build config). The
    config's own `resolve()` (when it has one) runs before validation: e.g. relative local paths
    become absolute, once."""
    if cls is None:
        from fusionrs.config.build import BuildConfig as cls  # noqa: N813 - deferred: build.py imports this module
    data: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    if overrides:
        # Overrides patch the resolved config (defaults filled in), so `split.fractions.train=..`
        # changes one entry instead of replacing the whole mapping. Keys are checked once more.
        try:
            data = dataclasses.asdict(from_dict(cls, data))
        except ConfigError:
            pass  # the YAML alone may be incomplete (e.g. output given on the command line)
        data = apply_overrides(data, list(overrides))
    cfg = from_dict(cls, data)
    if hasattr(cfg, "resolve"):
        cfg.resolve()
    validate_sections(cfg)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


# ---------------------------------------------------------------------------------------
# Describing a config: every key, its default and the comment beside it in the source.


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str]]:
    """(dotted key, default, one-line description) for every key of `cls`, sections expanded.
    Descriptions are the `# comments` beside the fields in the source: one place to read them.
    A section's defaults are those its parent gives it (e.g. the VLM's optimizer defaults)."""
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if defaults is not None and hasattr(defaults, f.name):
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if dataclasses.is_dataclass(tp):
            doc = comments.get(f.name, "") or (inspect.getdoc(tp) or "").split("\n")[0]
            doc = "" if doc.startswith(tp.__name__ + "(") else doc  # a dataclass without a docstring
            rows.append((key, "(section)", doc))
            rows += describe(tp, key + ".", None if default is dataclasses.MISSING else default)
            continue
        if default is dataclasses.MISSING:
            shown = "(required)"
        elif isinstance(default, str) and "\n" in default:
            shown = f"<{len(default)} characters of text>"
        else:
            shown = json.dumps(default)
        rows.append((key, shown, comments.get(f.name, "")))
    return rows


def _field_comments(cls: type) -> dict[str, str]:
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in src.splitlines():
            m = re.match(r"\s+(\w+): [^#]*?#\s*(.+)$", line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def format_keys(cls: type) -> str:
    rows = describe(cls)
    w = max(len(k) for k, _, _ in rows)
    dw = min(34, max(len(d) for _, d, _ in rows))
    return "\n".join(f"  {k:<{w}}  {d if len(d) <= dw else d[:dw - 1] + '…':<{dw}}  {c}" for k, d, c in rows)


# ---------------------------------------------------------------------------------------
# Job entry points: `--config FILE` anywhere on the line, `key=value` overrides, `--help`.


def parse_job_args(argv: list[str], cls: type, doc: str, prog: str) -> Any:
    """argv of a job entry point → a validated `cls`. `--help` prints the job's docstring and
    every config key; a config error prints the message and exits 2."""
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: {prog} [--config FILE] [key=value ...]\n\n{(doc or '').strip()}\n\nconfig keys "
              f"(default, description):\n{format_keys(cls)}")
        raise SystemExit(0)
    path, overrides, rest = None, [], list(argv)
    while rest:
        a = rest.pop(0)
        if a == "--config":
            if not rest:
                _fail(prog, "--config needs a file")
            path = rest.pop(0)
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif "=" in a and not a.startswith("-"):
            overrides.append(a)
        else:
            _fail(prog, f"unexpected argument {a!r}: expected --config FILE or key=value (see --help)")
    try:
        return load_config(path, overrides, cls=cls)
    except (ConfigError, FileNotFoundError) as e:
        _fail(prog, f"config error: {e}")


def _fail(prog: str, msg: str) -> None:
    print(f"{prog}: {msg}", file=sys.stderr)
    raise SystemExit(2)
