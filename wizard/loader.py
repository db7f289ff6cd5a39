"""Reading config.yaml, answers files and ``--set`` overrides into a :class:`Config`, and
writing a config back.

Every failure becomes a :class:`ConfigError` whose message names the file, the field path, the
bad value and what is allowed, with a "did you mean" for misspelt keys and choices.

:class:`Answers` holds the sources of answers in their order of priority; :func:`dump_user_config`
writes the deployment's ``config.yaml`` (derived values as comment lines) and :func:`dump_config`
the resolved copy that travels to the cluster (every value spelled out).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import secrets
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Union

import yaml
from pydantic import BaseModel, ValidationError

from .config import DERIVED, DERIVED_BY_PATH, DERIVED_PATHS, Config
from . import yamlio
from .errors import ConfigError

SCHEMA_COMMENT = "# yaml-language-server: $schema={}\n"
HEADER = "# Written by mlshift; edit freely. Every script re-reads this file.\n"
CONFIG_FILE = "config.yaml"
MISSING: Any = object()  # no value at a path (None is a value: an empty answer)


# --------------------------------------------------------------------------- nested mappings
def get_path(data: Any, path: str) -> Any:
    """The value at ``a.b.c`` in nested mappings, or MISSING."""
    node = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


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


def del_path(data: dict[str, Any], path: str) -> None:
    """Remove ``a.b.c`` from nested mappings, if it is there."""
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    node.pop(keys[-1], None)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested answers as ``{dotted path: value}``; a mapping that is a value (a sweep's
    parameters) stays whole, an empty section is kept as ``{}``."""
    out: dict[str, Any] = {}
    if isinstance(data, dict) and (not prefix or is_section(prefix)):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        if not data and prefix:
            out[prefix] = {}
        return out
    out[prefix] = data
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any], _path: str = "") -> dict[str, Any]:
    """``over`` on top of ``base``: sections are merged key by key; any other value, a mapping
    such as a sweep's parameters included, is replaced whole."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        here = f"{_path}.{k}" if _path else str(k)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and is_section(here, unknown=True):
            out[k] = deep_merge(out[k], v, here)
        else:
            out[k] = copy.deepcopy(v)
    return out


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
    """The resolved config, every value spelled out, derived ones included: what travels to the
    cluster (the ConfigMap, a submission's annotation), where nothing is derived again."""
    data = _plain(config)
    body = yamlio.dump(data, width=100)
    return SCHEMA_COMMENT.format(schema_ref) + HEADER + body


FOLLOWS_NOTE = "  (follows {}; set it to choose)"
_TOKEN_LINE = re.compile(r"^( *)([^\s#][^:]*): (__mlshift_derived_[0-9a-f]+_\d+__)$")


class _Follows:
    """A derived value's place in the data being written."""

    def __init__(self, path: str, value: Any):
        self.path, self.value = path, value


def dump_user_config(config: Config, *, schema_ref: str) -> str:
    """The deployment's config.yaml: every answer, and each derived value as a comment line at
    its place (``# cpu: '4'  (follows resources.gpus; set it to choose)``), so that reading the
    file back derives it again from the answers it follows. A section holding only derived
    values is commented out whole (an empty section would read as null)."""
    data = _plain(config)
    for d in DERIVED:
        if d.path in config.derived_paths and get_path(data, d.path) is not MISSING:
            set_path(data, d.path, _Follows(d.path, get_path(data, d.path)))
    tokens: dict[str, Any] = {}  # placeholder written by PyYAML -> what its line becomes
    nonce = secrets.token_hex(8)  # no answer can look like a placeholder

    def mark(node: Any) -> Any:
        if _only_follows(node):
            token = f"__mlshift_derived_{nonce}_{len(tokens)}__"
            tokens[token] = node
            return token
        return {k: mark(v) for k, v in node.items()} if isinstance(node, dict) else node

    body = yamlio.dump({k: mark(v) for k, v in data.items()}, width=100)
    lines = []
    for line in body.splitlines(keepends=True):
        m = _TOKEN_LINE.match(line.rstrip("\n"))
        if m is None or m.group(3) not in tokens:
            lines.append(line)
            continue
        indent, key = m.group(1), m.group(2)
        lines += [f"{indent}# {text}\n" for text in _commented(key, tokens[m.group(3)])]
    return SCHEMA_COMMENT.format(schema_ref) + HEADER + "".join(lines)


def _only_follows(node: Any) -> bool:
    return isinstance(node, _Follows) or (
        isinstance(node, dict) and bool(node) and all(_only_follows(v) for v in node.values()))


def _commented(key: str, node: Any, depth: int = 0) -> list[str]:
    pad = "  " * depth
    if isinstance(node, _Follows):
        shown = yamlio.dump({key: node.value}, default_flow_style=False, width=2**31).rstrip("\n")
        return [pad + shown + FOLLOWS_NOTE.format(DERIVED_BY_PATH[node.path].follows)]
    out = [f"{pad}{key}:"]
    for k, v in node.items():
        out += _commented(k, v, depth + 1)
    return out


def is_follows_comment(line: str) -> bool:
    """Whether ``line`` is one that :func:`dump_user_config` writes for a derived value."""
    text = line.strip()
    return text.startswith("#") and text.endswith("; set it to choose)") and "  (follows " in text


_KEY_LINE = re.compile(r"^( *)([A-Za-z_][\w.-]*):(?:[ \t]|$)")


def set_answer_text(text: str, path: str, value: Any, *, label: str) -> str:
    """``text`` (a config.yaml) with the answer at ``path`` (``inference.model``) set to ``value``
    and every other line as it was: the value's line replaced, or a line added at the start of its
    section. A layout this edit cannot follow (a flow mapping, a section that is not there, a
    value spread over lines) is written again whole from its data, as ``new --set`` would write it
    (:func:`dump_user_config`: derived values as comments, the user's own comments lost)."""
    keys = path.split(".")
    data = parse_yaml(text, label)
    wanted = copy.deepcopy(data)
    set_path(wanted, keys, value)
    scalar = yamlio.dump({keys[-1]: value}, default_flow_style=False, width=2**31)
    edited = _edit_lines(text.splitlines(keepends=True), keys, scalar.rstrip("\n"))
    if edited is not None:
        try:
            if yaml.safe_load(edited) == wanted:
                return edited
        except yaml.YAMLError:
            pass
    from .deployment import build_config
    from .render import SCHEMA_FILE

    return dump_user_config(build_config(wanted, source=label), schema_ref=SCHEMA_FILE)


def _edit_lines(lines: list[str], keys: list[str], scalar: str) -> str | None:
    """The lines with ``keys``' value line replaced by ``scalar`` (``key: value``), or added to the
    innermost section found; None when a section on the way is not a block of its own."""
    start, end, indent = 0, len(lines), -1
    for depth, key in enumerate(keys):
        found = None
        child_indent = None
        for i in range(start, end):
            m = _KEY_LINE.match(lines[i])
            if not m:
                continue
            here = len(m.group(1))
            if here <= indent:
                break
            if child_indent is None:
                child_indent = here
            if here == child_indent and m.group(2) == key:
                found = (i, here)
                break
        last = depth == len(keys) - 1
        if found is None:
            if not last:
                return None
            pad = " " * (child_indent if child_indent is not None else indent + 2)
            at = start
            return "".join(lines[:at] + [pad + scalar + "\n"] + lines[at:])
        i, here = found
        # the block of this key: the lines after it, indented deeper (blank and comment lines too)
        j = i + 1
        while j < end:
            line = lines[j]
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and len(line) - len(line.lstrip(" ")) <= here:
                break
            j += 1
        if last:
            newline = "\n" if lines[i].endswith("\n") else ""
            return "".join(lines[:i] + [" " * here + scalar + newline] + lines[i + 1:])
        rest = lines[i][len(_KEY_LINE.match(lines[i]).group(0)):].split("#", 1)[0].strip()  # type: ignore[union-attr]
        if rest:  # a value on the key's own line (a flow mapping): not a block
            return None
        start, end, indent = i + 1, j, here
    return None


def chosen_answers(config: Config) -> dict[str, Any]:
    """Every answer of a valid config, with the values that follow other answers left out."""
    data = config.model_dump(mode="json")
    for path in DERIVED_PATHS:
        if path in config.derived_paths or get_path(data, path) is None:
            del_path(data, path)
    return data


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


@functools.lru_cache(maxsize=512)
def is_section(path: str, *, unknown: bool = False) -> bool:
    """Whether ``a.b`` is a section of config.yaml (a model), not a value; ``unknown`` for a key
    the model does not have."""
    try:
        _, _, annotation = field_at(path.split("."))
    except ConfigError:
        return unknown
    return _model_in(annotation) is not None


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


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for expr in sets:
        path, value = parse_set(expr)
        set_path(data, path, value)
    return data


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


def validate(data: dict[str, Any], *, source: str, checks: bool = True) -> Config:
    """The config of ``data``, derived values filled in; ``checks=False`` skips the rules across
    fields (each field is still checked), to see derived values of incomplete answers."""
    try:
        return Config.model_validate(data, context=None if checks else {"checks": False})
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


def with_default_name(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data`` with the application named after the deployment where it has no name."""
    app = data.get("application")
    if app is None:
        data["application"] = {"name": name}
    elif isinstance(app, dict) and not app.get("name"):
        app["name"] = name
    return data


# --------------------------------------------------------------------------- the sources of answers
LAYERS: tuple[str, ...] = ("derived", "preset", "config.yaml", "answers", "--set")  # lowest priority first


@dataclasses.dataclass(frozen=True)
class Answers:
    """The answers of one ``new``, from every source, with one order of priority:
    ``--set`` > the answers file > the deployment's existing config.yaml > the preset > derived.

    Each layer but the lowest is a (partial) config.yaml; a higher layer's value replaces a lower
    one's, section by section (:func:`deep_merge`). The lowest, ``derived``, holds no data: the
    application name defaults to the deployment's name, and the config model derives the values
    that follow other answers (:data:`wizard.config.DERIVED`), where no layer gives one.
    """

    name: str  # the deployment's name
    preset: str | None = None
    existing: dict[str, Any] | None = None  # the deployment's config.yaml, when it has one
    answers: dict[str, Any] | None = None  # --answers FILE
    sets: tuple[str, ...] = ()  # --set KEY=VALUE, in order (a later one wins)
    _set_data: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.preset is not None:
            from .presets import get

            get(self.preset)  # an unknown preset is one line, before anything else
        object.__setattr__(self, "_set_data", apply_sets({}, list(self.sets)))

    @classmethod
    def gather(cls, target: Path, *, name: str, answers_file: Path | None = None, sets: list[str] | tuple[str, ...] = (),
               preset: str | None = None) -> "Answers":
        """The answers for deployments/NAME (``target``): its config.yaml if it has one, the
        answers file, ``--set`` and the preset."""
        existing = target / CONFIG_FILE
        old = read_yaml(existing, label=f"{target.name}/{CONFIG_FILE}") if existing.is_file() else None
        given = read_yaml(answers_file, label=str(answers_file)) if answers_file is not None else None
        return cls(name, preset=preset, existing=old, answers=given, sets=tuple(sets))

    def replace(self, **changes: Any) -> "Answers":
        return dataclasses.replace(self, **changes)

    def only(self, *layers: str) -> "Answers":
        """These answers with only the layers named (``derived`` is always there)."""
        return dataclasses.replace(
            self, preset=self.preset if "preset" in layers else None,
            existing=self.existing if "config.yaml" in layers else None,
            answers=self.answers if "answers" in layers else None,
            sets=self.sets if "--set" in layers else ())

    def layers(self) -> list[tuple[str, dict[str, Any]]]:
        """(layer, its answers) for each layer present, lowest priority first."""
        from .presets import get

        out: list[tuple[str, dict[str, Any]]] = []
        if self.preset is not None:
            out.append(("preset", get(self.preset).answers))
        if self.existing is not None:
            out.append(("config.yaml", self.existing))
        if self.answers is not None:
            out.append(("answers", self.answers))
        if self.sets:
            out.append(("--set", self._set_data))
        return out

    def has(self, layer: str) -> bool:
        return any(name == layer for name, _ in self.layers())

    @property
    def data(self) -> dict[str, Any]:
        """The merged answers (a new copy): what the config is validated from."""
        out: dict[str, Any] = {}
        for _layer, data in self.layers():
            out = deep_merge(out, data)
        return with_default_name(out, self.name)

    def origin(self, path: str, config: Config | None = None) -> str | None:
        """The layer that gives ``path`` its value: one of LAYERS, or None where the model's
        default applies. With ``config``, a value it derived is ``derived``."""
        for layer, data in reversed(self.layers()):
            if _holds(data, path):
                return layer
        if path == "application.name" or (config is not None and path in config.derived_paths):
            return "derived"
        return None

    def chosen(self, path: str) -> bool:
        """Whether some source gives ``path`` a value (it does not follow other answers)."""
        return self.origin(path) not in (None, "derived")


def _holds(data: Any, path: str) -> bool:
    """Whether one layer's answers decide ``path``: they hold it, or an enclosing value that is
    not a section (``experiment.sweep: null``). An empty derived value or name is not held."""
    keys = path.split(".")
    node = data
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
        if i < len(keys) - 1 and not isinstance(node, dict):
            return True
    return node is not None or (path not in DERIVED_PATHS and path != "application.name")
