"""docs/reference.md and docs/config.schema.json, generated from the config model.

``make docs`` (``python -m wizard docs``) rewrites both; a test fails when they are stale, so
the reference can never drift from the model.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import Config, json_schema
from .loader import _model_in, _unwrap
from .paths import SOURCE_ROOT
from .verbs import VERBS

HEADER = """# Configuration reference

Every key of a deployment's `config.yaml`, generated from the model that validates it
(`wizard/config.py`) by `make docs`. Unknown keys are rejected with a "did you mean".
Editors that speak the YAML language server get completion and checks from the
`# yaml-language-server: $schema=config.schema.json` line at the top of each written file;
`python -m wizard schema` prints the same JSON Schema.

Values marked *derived* are filled in from other answers when the file is read (memory scales
with GPUs, for example); the wizard writes the filled-in value so that nothing is hidden.
"""


def _type_name(annotation: Any) -> str:
    names = []
    for t in _unwrap(annotation):
        origin = typing.get_origin(t)
        if t is type(None):
            continue
        if origin is typing.Literal:
            names.append(" \\| ".join(f"`{a}`" for a in typing.get_args(t)))
        elif origin is list:
            names.append(f"list of {_type_name(typing.get_args(t)[0])}")
        elif origin is dict:
            names.append("mapping")
        elif isinstance(t, type) and issubclass(t, BaseModel):
            names.append("section")
        elif isinstance(t, type):
            names.append({"str": "text", "int": "integer", "float": "number", "bool": "true/false"}.get(t.__name__, t.__name__))
        else:
            names.append(str(t))
    return " or ".join(dict.fromkeys(names)) or "any"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "*derived* / empty"
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel], prefix: str, sections: list[tuple[str, type[BaseModel]]]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = _model_in(field.annotation)
        if sub is not None:
            sections.append((path, sub))
            continue
        desc = (field.description or "").replace("|", "\\|")
        constraints = []
        for meta in field.metadata:
            for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
                if getattr(meta, attr, None) is not None:
                    constraints.append(f"{sym} {getattr(meta, attr)}")
        if constraints:
            desc = (desc + " " if desc else "") + f"({', '.join(constraints)})"
        rows.append(f"| `{path}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
    return rows


def _runtime_flags() -> list[str]:
    """The engine settings as the runtime's flags and vLLM's arguments (from their marks)."""
    from runtime.settings import BatchSettings, BenchSettings, Flag, ServeSettings, Vllm, WatchSettings, marks

    out = ["\n## Runtime flags\n",
           "`python -m runtime serve|batch|watch|bench` takes one flag per setting, declared with the setting in "
           "`runtime/settings.py`; `--config config.yaml` reads the same keys, and flags override them. "
           "The vLLM column is the name vLLM's server (`--name`) and `LLM(...)` take.\n",
           "| flag | commands | config.yaml key | vLLM | meaning |\n| --- | --- | --- | --- | --- |"]
    keys = {"batch": BatchSettings.model_fields, "inference": Config.model_fields["inference"].annotation.model_fields}

    def flagged(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
        """(dotted key, field) of each setting; a section without a flag of its own (rate_limit)
        gives its settings, whose flags are named after the dotted key."""
        out: list[tuple[str, Any]] = []
        for name, field in model.model_fields.items():
            sub = field.annotation
            if marks(field, Flag) is None and isinstance(sub, type) and issubclass(sub, BaseModel):
                out += flagged(sub, f"{prefix}{name}.")
            else:
                out.append((prefix + name, field))
        return out

    for model in (ServeSettings, BatchSettings, WatchSettings, BenchSettings):
        for name, field in flagged(model):
            flag = marks(field, Flag)
            if flag is None:
                continue
            vllm = marks(field, Vllm)
            section = "batch" if model is BatchSettings else "inference"
            owned = model in (ServeSettings, BatchSettings)  # watch and bench flags are no config keys
            key = f"`{section}.{name}`" if owned and name.split(".")[0] in keys[section] else ""
            desc = (field.description or "").replace("|", "\\|")
            out.append(f"| `--{name.replace('_', '-').replace('.', '-')}` | {', '.join(flag.commands)} | {key} | "
                       f"{f'`{vllm.name}`' if vllm else ''} | {desc} |")
    return out


def reference_markdown() -> str:
    out = [HEADER]
    queue: list[tuple[str, type[BaseModel]]] = [("", Config)]
    while queue:
        path, model = queue.pop(0)
        found: list[tuple[str, type[BaseModel]]] = []
        rows = _rows(model, f"{path}." if path else "", found)
        title = f"`{path}`" if path else "Top level"
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        out.append(f"\n## {title}\n")
        if doc:
            out.append(doc + "\n")
        if rows:
            out.append("| key | type | default | meaning |\n| --- | --- | --- | --- |")
            out.extend(rows)
        queue = found + queue
    out.extend(_runtime_flags())
    out.append("\n## Scripts\n")
    out.append("Each deployment's `scripts/` has one script per operation; `python -m wizard VERB DEPLOYMENT` "
               "runs the same, and `--help` lists its options (declared in `wizard/verbs.py`).\n")
    out.append("| script | verb | what it does |\n| --- | --- | --- |")
    out.extend(f"| `{v.file}` | `{v.name}` | {v.summary.replace('|', chr(92) + '|')} |" for v in VERBS)
    return "\n".join(out).rstrip() + "\n"


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def write_docs(output_dir: Path | None = None) -> list[Path]:
    out = output_dir or SOURCE_ROOT / "docs"
    out.mkdir(parents=True, exist_ok=True)
    ref, schema = out / "reference.md", out / "config.schema.json"
    ref.write_text(reference_markdown(), encoding="utf-8")
    schema.write_text(schema_text(), encoding="utf-8")
    return [ref, schema]
