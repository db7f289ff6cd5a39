"""Reading config.yaml, answers files and ``--set`` overrides into a :class:`Config`.

Every failure becomes a :class:`ConfigError` whose message names the file, the field path, the
bad value and what is allowed, with a "did you mean" for misspelt keys and choices.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Union

import yaml
from pydantic import BaseModel, ValidationError

from .config import Config
from . import yamlio
from .errors import ConfigError

SCHEMA_COMMENT = "# yaml-language-server: $schema={}\n"


# --------------------------------------------------------------------------- YAML
def read_yaml(path: Path, *, label: str | None = None) -> dict[str, Any]:
    label = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(label, [("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(label, [("", "is a folder, not a YAML file")]) from None
    except PermissionError:
        raise ConfigError(label, [("", "cannot be read (permission denied)")]) from None
    except UnicodeDecodeError:
        raise ConfigError(label, [("", "is not UTF-8 text")]) from None
    return parse_yaml(text, label)


def parse_yaml(text: str, label: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(label, [("", f"malformed YAML: {where}{problem}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(label, [("", f"expected a mapping of sections (deployment:, application:, ...), found a {type(data).__name__}")])
    return data


def _plain(model: BaseModel) -> dict[str, Any]:
    """A model as YAML-ready data: empty values left out unless empty is not the default."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = _plain(value)
        elif value is None:
            if field.default is not None and field.default_factory is None:
                out[name] = None  # a deliberate "none", e.g. no Hugging Face Secret
        else:
            out[name] = type(model).__pydantic_serializer__.to_python(model, mode="json", include={name})[name]
    return out


def dump_config(config: Config, *, schema_ref: str) -> str:
    data = _plain(config)
    body = yamlio.dump(data, width=100)
    header = SCHEMA_COMMENT.format(schema_ref) + "# Written by mlshift; edit freely. Every script re-reads this file.\n"
    return header + body


# --------------------------------------------------------------------------- model introspection
def _unwrap(annotation: Any) -> list[Any]:
    """The member types of an annotation (Optional/Union/Annotated flattened)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for t in _unwrap(annotation):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def field_at(path: list[str]) -> tuple[type[BaseModel], str, Any]:
    """(model, field name, annotation) for a dotted path; raise ConfigError with a suggestion."""
    model: type[BaseModel] = Config
    for i, key in enumerate(path):
        fields = model.model_fields
        if key not in fields:
            raise ConfigError("--set", [(".".join(path[: i + 1]), "unknown key" + did_you_mean(key, list(fields)))])
        annotation = fields[key].annotation
        if i == len(path) - 1:
            return model, key, annotation
        sub = _model_in(annotation)
        if sub is None:
            raise ConfigError("--set", [(".".join(path[: i + 1]), f"is a value, not a section; it has no key {path[i + 1]!r}")])
        model = sub
    raise AssertionError("unreachable")


def enclosing_sections(path: str) -> Iterator[tuple[str, str, type[BaseModel]]]:
    """For ``a.b.c``: (section path, the rest, section model) of each enclosing section,
    innermost first; stops at the first unknown key."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            _, _, annotation = field_at(parts[:cut])
        except ConfigError:
            return
        model = _model_in(annotation)
        if model is not None:
            yield ".".join(parts[:cut]), ".".join(parts[cut:]), model


def _takes_text(annotation: Any) -> bool:
    members = _unwrap(annotation)
    return str in members or any(typing.get_origin(m) is typing.Literal for m in members)


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- --set
def parse_set(expr: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` into a path and a value: text for text fields, YAML for the rest."""
    if "=" not in expr:
        raise ConfigError("--set", [("", f"{expr!r} is not key=value (for example resources.gpus=2)")])
    key, raw = expr.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in path):
        raise ConfigError("--set", [("", f"{key!r} is not a dotted key such as resources.gpus")])
    _, _, annotation = field_at(path)
    members = _unwrap(annotation)
    if _takes_text(annotation) and not any(m in (int, float, bool) for m in members):
        if raw == "" and type(None) in members:
            return path, None
        if raw.startswith("[") and any(typing.get_origin(m) is list for m in members):
            return path, _yaml_value(expr, raw)
        return path, raw  # text stays text, byte for byte
    return path, _yaml_value(expr, raw)


def _yaml_value(expr: str, raw: str) -> Any:
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError("--set", [("", f"cannot read the value in {expr!r}")]) from None


def set_path(data: dict[str, Any], path: str | list[str], value: Any) -> None:
    """Set ``a.b.c`` in nested mappings, making the sections on the way."""
    keys = path.split(".") if isinstance(path, str) else path
    node = data
    for key in keys[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    node[keys[-1]] = value


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for expr in sets:
        path, value = parse_set(expr)
        set_path(data, path, value)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------- validation
def _siblings(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = Config
    for key in loc:
        if model is None or not isinstance(key, str) or key not in model.model_fields:
            return []
        model = _model_in(model.model_fields[key].annotation)
    return list(model.model_fields) if model else []


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or "[" in p)))
        path = ".".join(str(p) for p in loc)
        kind, value = err["type"], err.get("input")
        if kind == "extra_forbidden":
            parent, key = loc[:-1], loc[-1]
            problems.append((path, "unknown key" + did_you_mean(str(key), _siblings(parent))))
        elif kind == "literal_error":
            expected = [str(e).strip("'") for e in str(err["ctx"]["expected"]).replace(" or ", ", ").split(", ")]
            problems.append((path, f"{value!r} is not one of {', '.join(expected)}" + did_you_mean(str(value), expected)))
        elif kind in ("value_error", "assertion_error"):
            msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            for line in msg.splitlines():
                sub, sep, rest = line.partition(": ")
                if sep and sub and " " not in sub and all(part.isidentifier() for part in sub.split(".")):
                    problems.append((".".join(filter(None, [path, sub])), rest))
                else:
                    problems.append((path, line))
        elif kind == "missing":
            problems.append((path, "is required"))
        else:
            shown = f"{value!r}: " if value is not None and not isinstance(value, (dict, list)) else ""
            problems.append((path, shown + str(err["msg"]).lower().removeprefix("input ")))
    return problems or [("", str(exc))]


def validate(data: dict[str, Any], *, source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def load_config(path: Path, *, sets: list[str] | None = None, label: str | None = None) -> Config:
    data = read_yaml(path, label=label or path.name)
    if sets:
        data = apply_sets(data, sets)
    config = validate(data, source=label or path.name)
    if not config.application.name:
        raise ConfigError(label or path.name, [("application.name", "is required")])
    return config
