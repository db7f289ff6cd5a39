"""Turning a :class:`Config` into the files of ``deployments/<name>/``, safely.

Rendering happens in memory first, so a template or config problem writes nothing. Writing
reports, per file, whether it was created, unchanged, changed, or kept because the user
edited it (the new version then goes beside it as ``<file>.new``). Hashes of what was last
written live in ``.mlshift/state.json``; a new deployment is written to a temporary folder and
renamed into place, so an interrupted run never leaves half a deployment behind. What may be
written or removed, and where, is decided by the rules in :mod:`wizard.files`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from . import yamlio
from .config import Config, json_schema
from .errors import UserError
from .files import (STATE_FILE, check_destinations, matches_record, new_folder, read_state, removal_verdict, remove_file,
                    sha256_text, state_text, write_file)
from .loader import dump_config
from .paths import TEMPLATES
from .plan import RENDEZVOUS_PORT, Plan
from .verbs import VERBS

SCHEMA_FILE = "config.schema.json"
CONFIG_FILE = "config.yaml"


# --------------------------------------------------------------------------- jinja
def _to_yaml(value: Any) -> str:
    """A value as one line of YAML (flow style): safe for any text a user can type."""
    text = yamlio.dump(value, default_flow_style=True, width=2**31)
    if text.endswith("\n...\n"):
        text = text[: -len("\n...\n")]
    return text.rstrip("\n")


def _block(value: Any, indent: int) -> str:
    text = yamlio.dump(value, default_flow_style=False, width=2**31)
    pad = " " * indent
    return "\n".join(pad + line if line else line for line in text.rstrip("\n").split("\n"))


def _shell_quote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))


_ENV = None


def environment():
    global _ENV
    if _ENV is None:
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,
        )
        env.filters["to_yaml"] = _to_yaml
        env.filters["block"] = _block
        env.filters["shell_quote"] = _shell_quote
        _ENV = env
    return _ENV


# --------------------------------------------------------------------------- rendering
def render_files(config: Config, deployment: str, *, with_config: bool = False) -> dict[str, tuple[str, int]]:
    """Every generated file: relative path -> (text, mode). Writes nothing.

    ``config.yaml`` is the user's file: it is included only when the wizard writes it
    (``with_config``); re-rendering never rewrites it, so comments and layout survive.
    """
    plan = Plan(config, deployment)
    env = environment()
    config_text = dump_config(config, schema_ref=SCHEMA_FILE)
    files: dict[str, tuple[str, int]] = {
        SCHEMA_FILE: (json.dumps(json_schema(), indent=2) + "\n", 0o644),
    }

    def meta_tail(component: str, annotations: dict[str, str] | None = None) -> str:
        meta: dict[str, Any] = {}
        if plan.namespace:
            meta["namespace"] = plan.namespace
        meta["labels"] = plan.labels(component)
        if annotations:
            meta["annotations"] = annotations
        return _block(meta, 2)

    common = {"config": config, "plan": plan, "meta_tail": meta_tail, "config_text": config_text,
              "rendezvous_port": RENDEZVOUS_PORT, "scripts": VERBS}
    listed: list[str] = []
    unlisted: list[str] = []
    for template, in_kustomization in plan.manifests:
        out = f"{template}.yaml"
        files[f"manifests/{out}"] = (env.get_template(f"manifests/{template}.yaml.j2").render(common), 0o644)
        (listed if in_kustomization else unlisted).append(out)
    files["manifests/kustomization.yaml"] = (
        env.get_template("manifests/kustomization.yaml.j2").render(common, listed=listed, unlisted=unlisted), 0o644)
    for script in VERBS:
        files[f"scripts/{script.file}"] = (env.get_template("scripts/script.sh.j2").render(common, script=script), 0o755)
    files["scripts/_common.sh"] = (env.get_template("scripts/_common.sh.j2").render(common), 0o644)
    if plan.build:
        files["Containerfile"] = (env.get_template("Containerfile.j2").render(common), 0o644)
    files["README.md"] = (env.get_template("README.md.j2").render(common), 0o644)
    files["workspace/.gitkeep"] = ("", 0o644)
    if with_config:
        files[CONFIG_FILE] = (config_text, 0o644)
    return files


# --------------------------------------------------------------------------- writing
@dataclass
class FileReport:
    path: str
    status: str  # created | unchanged | changed | kept | removed | left | ignored
    note: str = ""


GITKEEP = "workspace/.gitkeep"


def plan_writes(target: Path, files: dict[str, tuple[str, int]], *, force: bool = False) -> list[FileReport]:
    """What writing ``files`` into ``target`` would do, file by file. Touches nothing.

    Follows the rules of :mod:`wizard.files`: a link on the way to any file it would write is
    refused here (so a dry run says so too); a file is overwritten without asking only when
    it is still what the wizard wrote (or with ``force``), and a file no longer generated is
    removed only when it is still what the wizard wrote, ``force`` or not.
    """
    check_destinations(target, [*(rel for rel in files if rel != GITKEEP), STATE_FILE])
    state = read_state(target)
    reports: list[FileReport] = []
    workspace_is_link = (target / "workspace").is_symlink()
    for rel, (text, _mode) in sorted(files.items()):
        path = target / rel
        if rel == GITKEEP and workspace_is_link:
            reports.append(FileReport(rel, "unchanged"))  # nothing is written through a link
            continue
        if not os.path.lexists(path):
            reports.append(FileReport(rel, "created"))
            continue
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current == text:
            reports.append(FileReport(rel, "unchanged"))
        elif rel == GITKEEP:
            reports.append(FileReport(rel, "unchanged"))
        elif current is not None and (force or rel == CONFIG_FILE or matches_record(path, state.files.get(rel))):
            reports.append(FileReport(rel, "changed"))
        else:
            reports.append(FileReport(rel, "kept", f"you edited it; the new version is in {rel}.new"))
    check_destinations(target, [r.path + ".new" if r.status == "kept" else r.path for r in reports if r.status != "unchanged"])
    if state.ignored:
        reports.append(FileReport(STATE_FILE, "ignored", state.note()))
    for rel, recorded in sorted(state.files.items()):
        if rel in files or rel == CONFIG_FILE or rel.startswith("workspace/") or not os.path.lexists(target / rel):
            continue
        why = removal_verdict(target, rel, recorded)
        if why:
            reports.append(FileReport(rel, "left", f"{why}; it is left alone"))
        else:
            reports.append(FileReport(rel, "removed", "no longer needed by config.yaml"))
    return reports


def write(target: Path, files: dict[str, tuple[str, int]], reports: list[FileReport]) -> None:
    """Apply ``reports`` (from :func:`plan_writes`). A new deployment appears whole or not at all."""
    if not target.exists():
        with new_folder(target) as staging:
            _apply(staging, files, reports)
        return
    _apply(target, files, reports)


def _apply(target: Path, files: dict[str, tuple[str, int]], reports: list[FileReport]) -> None:
    """Write what ``reports`` say, then the state: the hash of each file the wizard wrote."""
    state = read_state(target).files
    for r in reports:
        if r.status == "removed":
            if remove_file(target, r.path, state.get(r.path, "")):
                state.pop(r.path, None)
            continue
        if r.path not in files:
            continue
        text, mode = files[r.path]
        if r.status == "unchanged":
            if r.path != GITKEEP:
                state[r.path] = sha256_text(text)
        elif r.status == "kept":
            write_file(target, r.path + ".new", text, mode)
        elif r.status in ("created", "changed"):
            write_file(target, r.path, text, mode)
            state[r.path] = sha256_text(text)
    write_file(target, STATE_FILE, state_text(state), 0o644)


def summarize(reports: Iterable[FileReport]) -> list[str]:
    lines = []
    for r in reports:
        if r.status == "unchanged":
            continue
        lines.append(f"  {r.status:<9} {r.path}" + (f"  ({r.note})" if r.note else ""))
    return lines


def check_target(deployments_dir: Path, name: str) -> Path:
    """The deployment folder for NAME, refusing anything that would leave ``deployments_dir``."""
    from .config import check_name

    try:
        check_name(name, "deployment name")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    target = (deployments_dir / name).resolve()
    if target.parent != deployments_dir.resolve():
        raise UserError(f"{name!r} would be written outside {deployments_dir}")
    return target
