"""Turning a :class:`Config` into the files of ``deployments/<name>/``, safely.

Rendering happens in memory first, so a template or config problem writes nothing. Writing
reports, per file, whether it was created, unchanged, changed, or kept because the user
edited it (the new version then goes beside it as ``<file>.new``). Hashes of what was last
written live in ``.mlshift/state.json``; a new deployment is written to a temporary folder and
renamed into place, so an interrupted run never leaves half a deployment behind. What may be
written or removed, and where, is decided by the rules in :mod:`wizard.files`.

The manifests are Jinja templates that spell each object out (``templates/manifests/``), filled
in with a :class:`~wizard.blueprint.Blueprint`. The Job template is also what ``submit``
renders each Job from, with that submission's own values (:func:`render_job`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import yamlio
from .blueprint import NOT_LISTED_WHY, RENDEZVOUS_PORT, Blueprint
from .config import Config, json_schema
from .errors import UserError
from .files import (STATE_FILE, check_destinations, matches_record, new_folder, read_state, removal_verdict, remove_file,
                    sha256_text, state_text, write_file)
from .loader import HEADER, SCHEMA_COMMENT, dump_config, dump_user_config
from .paths import CACHE, TEMPLATES
from .verbs import VERBS

SCHEMA_FILE = "config.schema.json"
CONFIG_FILE = "config.yaml"
HEADER_NOTE = "its header comment lines put back; the rest is as you left it"


def config_header_restored(target: Path) -> str | None:
    """config.yaml with the wizard's header comment lines (the editor's schema line, "Written by
    mlshift") put back at the top, where a tool that drops comments (``yq -yi``) removed them;
    None when nothing is missing, or when config.yaml is not a plain UTF-8 file.

    The one change rendering makes to config.yaml: the missing lines are prepended (after a
    byte-order mark, before the rest), and every other byte stays the user's. A line of the
    same kind the user changed (another ``$schema=``) counts as present.
    """
    path = target / CONFIG_FILE
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom):]
    lines = body.splitlines(keepends=True)
    leading = []
    for line in lines:  # the comment lines on top (blank lines among them)
        if line.strip() and not line.lstrip().startswith("#"):
            break
        leading.append(line.strip())
    ours = [SCHEMA_COMMENT.format(SCHEMA_FILE), HEADER]
    kinds = [SCHEMA_COMMENT.split("$")[0].strip(), HEADER.split(";")[0].strip()]  # how each line starts
    missing = [line for line, kind in zip(ours, kinds) if not any(c.startswith(kind) for c in leading)]
    if not missing:
        return None
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    missing = [line.rstrip("\n") + newline for line in missing]
    if len(missing) == 1 and missing[0].startswith(kinds[1]) and lines[0].strip().startswith(kinds[0]):
        return bom + lines[0] + missing[0] + "".join(lines[1:])  # "Written by" goes under the schema line
    return bom + "".join(missing) + body


# --------------------------------------------------------------------------- jinja
class OcDumper(yamlio.Dumper):
    """:class:`yamlio.Dumper`, and it quotes the strings that Go's YAML reading takes for numbers or booleans.

    PyYAML leaves ``1e-3``, ``0o17``, ``08`` or ``y`` unquoted (YAML 1.1 reads them as strings),
    but ``oc``/``kubectl`` read YAML into JSON with Go's rules, where they are a number or a
    boolean, and the API server then refuses them as a container's command. Every manifest
    (the files and what ``submit`` sends) is written with this dumper, so that an argument such
    as ``--lr 1e-3`` reaches the container as the text it is.
    """


_GO_NUMBER = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")
_GO_WORDS = frozenset("y Y yes Yes YES n N no No NO on On ON off Off OFF true True TRUE false False FALSE "
                      "~ null Null NULL .inf .Inf .INF +.inf +.Inf +.INF -.inf -.Inf -.INF .nan .NaN .NAN <<".split())


def _oc_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if value in _GO_WORDS or _GO_NUMBER.fullmatch(value.replace("_", "")):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return yamlio.Dumper.yaml_representers[str](dumper, value)


OcDumper.add_representer(str, _oc_str)


def _dump(value: Any, dumper: type[yaml.SafeDumper], flow: bool) -> str:
    return yaml.dump(value, Dumper=dumper, default_flow_style=flow, width=2**31, allow_unicode=True, sort_keys=False)


_PLAIN = (list, dict, str, int, float, bool, type(None))


def _filters(dumper: type[yaml.SafeDumper]) -> dict[str, Any]:
    """The YAML filters of the templates: ``to_yaml`` (one line, flow style) and ``block(indent)``.

    Each distinct value is written once: a sweep renders the Job template thousands of times
    with the same environment, labels and resources.
    """
    written: dict[tuple[str, bool], str] = {}

    def dump(value: Any, flow: bool) -> str:
        if type(value) not in _PLAIN:
            return _dump(value, dumper, flow)
        key = (repr(value), flow)  # repr tells 1 from "1" and True, and keeps the order of keys
        if key not in written:
            if len(written) >= 1024:
                written.clear()
            written[key] = _dump(value, dumper, flow)
        return written[key]

    def to_yaml(value: Any) -> str:
        """A value as one line of YAML (flow style): safe for any text a user can type."""
        text = dump(value, True)
        if text.endswith("\n...\n"):
            text = text[: -len("\n...\n")]
        return text.rstrip("\n")

    def block(value: Any, indent: int) -> str:
        """A value as block-style YAML, every line indented by ``indent`` (Helm's toYaml | indent)."""
        text = dump(value, False)
        pad = " " * indent
        return "\n".join(pad + line if line else line for line in text.rstrip("\n").split("\n"))

    return {"to_yaml": to_yaml, "block": block}




def _shell_quote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))


_ENV: Any = None


def _compiled_templates() -> Any:
    """Jinja's bytecode cache in the user's cache folder, so that a run does not compile the
    templates again; None (compile each time) where that folder cannot be written."""
    import jinja2

    class Cache(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket: Any) -> None:
            try:
                super().load_bytecode(bucket)
            except (OSError, ValueError, EOFError):
                bucket.reset()

        def dump_bytecode(self, bucket: Any) -> None:
            try:
                super().dump_bytecode(bucket)
            except OSError:
                pass  # a cache that cannot be written only costs time

    folder = CACHE / "templates"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return Cache(str(folder))


def environment():
    """The templates' Jinja environment (its YAML filters write what oc reads as written)."""
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
            bytecode_cache=_compiled_templates(),
        )
        env.filters.update(_filters(OcDumper))
        env.filters["shell_quote"] = _shell_quote
        _ENV = env
    return _ENV


# --------------------------------------------------------------------------- rendering
def _context(blueprint: Blueprint, **more: Any) -> dict[str, Any]:
    """What every template sees: the config, its blueprint, and a few constants."""
    # `plan` is the blueprint's old name, still used by the templates outside manifests/.
    return {"config": blueprint.config, "blueprint": blueprint, "submission": None,
            "rendezvous_port": RENDEZVOUS_PORT, "scripts": VERBS, **more}


def render_files(config: Config, folder: str, *, with_config: bool = False) -> dict[str, tuple[str, int]]:
    """Every generated file: relative path -> (text, mode). Writes nothing.

    ``config.yaml`` is the user's file: it is included only when the wizard writes it
    (``with_config``); re-rendering never rewrites it, so comments and layout survive.
    """
    blueprint = Blueprint(config, folder)
    env = environment()
    config_text = dump_config(config, schema_ref=SCHEMA_FILE)
    files: dict[str, tuple[str, int]] = {
        SCHEMA_FILE: (json.dumps(json_schema(), indent=2) + "\n", 0o644),
    }
    common = _context(blueprint, config_text=config_text)
    listed: list[str] = []
    unlisted: list[str] = []
    for template, in_kustomization in blueprint.manifests:
        out = f"{template}.yaml"
        files[f"manifests/{out}"] = (env.get_template(f"manifests/{template}.yaml.j2").render(common), 0o644)
        if in_kustomization:
            listed.append(out)
        else:
            unlisted.append(f"{out} ({NOT_LISTED_WHY.get(template, 'created by a verb, not by oc apply -k')})")
    files["manifests/kustomization.yaml"] = (
        env.get_template("manifests/kustomization.yaml.j2").render(common, listed=listed, unlisted=unlisted), 0o644)
    for script in VERBS:
        files[f"scripts/{script.file}"] = (env.get_template("scripts/script.sh.j2").render(common, script=script), 0o755)
    files["scripts/_common.sh"] = (env.get_template("scripts/_common.sh.j2").render(common), 0o644)
    if blueprint.build:
        files["Containerfile"] = (env.get_template("Containerfile.j2").render(common), 0o644)
    files["README.md"] = (env.get_template("README.md.j2").render(common), 0o644)
    files["workspace/.gitkeep"] = ("", 0o644)
    if with_config:
        files[CONFIG_FILE] = (dump_user_config(config, schema_ref=SCHEMA_FILE), 0o644)  # derived values as comments
    return files


@dataclass(frozen=True)
class JobSubmission:
    """What one submitted Job has of its own, besides its blueprint: the Job template's other inputs.

    templates/manifests/job.yaml.j2 shows where each goes. The command comes from the blueprint
    of the run's own config, which holds the run's arguments; a sweep's Job brings its own
    (:func:`wizard.ops.jobs.submit_sweep`): the trial wrapper, the run variables shared by its
    trials, its completions, parallelism and retries, and the ConfigMaps of its table of trials.
    """

    name: str  # the Job's name: <application>-<submission id>
    labels: dict[str, str]  # added to the standard labels of the Job and of its pods
    annotations: dict[str, str]  # the Job's: its arguments, overrides, sweep parameters
    config_annotation: str  # the pod annotation that carries the run's config.yaml (mounted from it)
    spec: dict[str, Any] | None = None  # the Job's completion and retry fields, instead of the blueprint's
    command: list[str] | None = None  # the container's command, instead of the blueprint's
    env: list[dict[str, Any]] | None = None  # the container's environment, instead of the blueprint's
    trial_tables: tuple[str, ...] = ()  # ConfigMaps mounted together at trials_mount: one file per index
    trials_mount: str = "/etc/mlshift-trials"


def render_job(blueprint: Blueprint, submission: JobSubmission) -> str:
    """One Job to create, as the YAML sent to oc: the Job template filled in with the run's
    blueprint and ``submission``. The run's config.yaml (``config_text``) travels with its pods."""
    config_text = dump_config(blueprint.config, schema_ref=SCHEMA_FILE)
    template = environment().get_template("manifests/job.yaml.j2")
    return template.render(_context(blueprint, submission=submission, config_text=config_text))


# --------------------------------------------------------------------------- sweeps
TRIALS_MOUNT = JobSubmission.trials_mount
# The container's command in a sweep's Indexed Job: plain sh, in any image. It reads the file of
# its index (JOB_COMPLETION_INDEX, set by Kubernetes) from the table of trials, which sets the
# trial's run variables and appends the trial's arguments to "$@" (the application's command), and
# runs it. The file is written by trial_file(): every word in it is single-quoted (shlex.quote),
# so sh parses no user text, and the words reach the process byte for byte. No "$(" and no "$$":
# Kubernetes' expansion of the command leaves it as it is.
TRIAL_WRAPPER = (
    'case "${JOB_COMPLETION_INDEX:-}" in ""|*[!0-9]*) '
    'echo "mlshift: JOB_COMPLETION_INDEX is not a trial index (an Indexed Job sets it)" >&2; exit 1;; esac; '
    't="$1/$JOB_COMPLETION_INDEX"; shift; '
    'if [ ! -f "$t" ]; then echo "mlshift: trial $JOB_COMPLETION_INDEX: its file $t is missing" >&2; exit 1; fi; '
    '. "$t"; exec "$@"'
)
TABLE_BUDGET = 700_000  # bytes of one ConfigMap's data, as JSON (the API server's limit is 1 MiB)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def trial_command(process: list[str]) -> list[str]:
    """The sweep's container command: the trial wrapper, then ``process`` (escaped for Kubernetes)."""
    return ["/bin/sh", "-c", TRIAL_WRAPPER, "mlshift-trial", TRIALS_MOUNT, *process]


def trial_file(words: list[str], env: dict[str, str]) -> str:
    """One trial's file in the table: its run variables (``export NAME='value'``) and its
    arguments (``set -- "$@" 'word' ...``), each value single-quoted by shlex.quote."""
    import shlex

    lines = []
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        lines.append(f"export {name}={shlex.quote(value)}")
    if words:
        lines.append('set -- "$@" ' + " ".join(shlex.quote(w) for w in words))
    return "".join(line + "\n" for line in lines)


def read_trial_file(text: str) -> tuple[list[str], dict[str, str]]:
    """(arguments, run variables) of a file trial_file() wrote."""
    import shlex

    words = shlex.split(text, comments=True)
    env: dict[str, str] = {}
    args: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "export" and i + 1 < len(words):
            name, _, value = words[i + 1].partition("=")
            env[name] = value
            i += 2
        elif words[i:i + 3] == ["set", "--", "$@"]:
            args = words[i + 3:]
            break
        else:
            i += 1
    return args, env


def trial_tables(files: list[str], names: Any) -> list[tuple[str, dict[str, str]]]:
    """The table of trials as ConfigMaps: (name, data) with one key per index (``"0"``, ``"1"``...).
    Split into as many as their size needs; ``names(k)`` is the name of the k-th (0, 1, ...)."""
    tables: list[tuple[str, dict[str, str]]] = []
    data: dict[str, str] = {}
    size = 0
    for index, text in enumerate(files):
        cost = len(json.dumps(text)) + len(str(index)) + 8
        if data and size + cost > TABLE_BUDGET:
            tables.append((names(len(tables)), data))
            data, size = {}, 0
        data[str(index)] = text
        size += cost
    tables.append((names(len(tables)), data))
    return tables


def render_object(obj: dict[str, Any]) -> str:
    """An object built here (a sweep's ConfigMap of trials) as the YAML sent to oc."""
    return _dump(obj, OcDumper, False)


def with_env(env: list[dict[str, Any]], values: dict[str, str]) -> list[dict[str, Any]]:
    """``env`` with these variables set: each replaces one of the same name, or is added."""
    out = [e for e in env if e.get("name") not in values]
    return out + [{"name": k, "value": v} for k, v in values.items()]


def object_list(documents: list[str]) -> str:
    """Rendered objects as one ``kind: List``, so that one ``oc create`` makes them all."""
    if not documents:
        return "apiVersion: v1\nkind: List\nitems: []\n"
    items = []
    for doc in documents:
        first, _, rest = doc.partition("\n")
        items.append("- " + first + "\n" + "".join(("  " + line if line else line) + "\n" for line in rest.rstrip("\n").split("\n")))
    return "apiVersion: v1\nkind: List\nitems:\n" + "".join(items)


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
    if CONFIG_FILE not in files and config_header_restored(target) is not None:
        reports.append(FileReport(CONFIG_FILE, "changed", HEADER_NOTE))
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
        if r.path == CONFIG_FILE and r.path not in files:
            restored = config_header_restored(target)  # read again: the user's bytes as they are now
            if restored is not None:
                write_file(target, CONFIG_FILE, restored, stat.S_IMODE(os.lstat(target / CONFIG_FILE).st_mode))
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
