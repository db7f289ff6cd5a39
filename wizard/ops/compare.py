"""compare: the runs of a sweep (or of a batch, or every run) side by side, as a person reads them.

Where the runs are read from, in this order; a run (by its id) found in an earlier source is
completed, never replaced, by a later one:

1. **W&B's API**, when ``experiment.tracking`` is W&B and online (or ``auto`` and this machine has a
   W&B key): the project's runs whose group is the sweep (:func:`wandb_api_runs`). It needs the
   network and a W&B account, so it is **not exercised by the tests**; when it fails, that is a
   note, and the volume is read as always.
2. **The volume**: the runs' records (``/workspace/<name>/results/<run id>/run.json`` and
   ``metrics.jsonl``, the shared contract of run records) and W&B offline runs beside them
   (``/workspace/<name>/wandb/**/offline-run-*/run-*.wandb``), fetched in **one** ``oc exec``
   (``find | tar | base64``) through a running job's pod, else the short-lived ``<name>-sync``
   pod (see :class:`wizard.ops.deploy.VolumePod`). The number of ``oc`` requests does not
   depend on the number of runs.
3. **Job logs**, last resort, for Jobs that still exist and whose sweep (or submission) has no
   record: their last 500 lines, ``name=value`` and ``name: value``.

``--from DIR`` reads 2. from a folder on this machine, with no cluster: records
(``results/*/run.json``) and W&B offline run folders as the ``wandb`` library writes them, in
any mix. An offline run's history lives only in its binary ``.wandb`` file: :func:`read_wandb_file`
reads it with wandb's own record definitions (``wandb.proto``), in the record-log layout that
wandb (checked with :data:`WANDB_CHECKED`) writes.

What it shows: a table ranked by the metric (``--metric``, else ``experiment.sweep.metric``;
``--goal``, else ``experiment.sweep.goal``), the best run marked, the parameters that differ
between runs, the final and best value of each metric, state and duration; ``--csv``, ``--json``,
``--plot`` (PNG) and ``--html`` (one self-contained page) from the same rows.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as dt
import html
import io
import json
import math
import os
import re
import struct
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from runtime.records import Run, goal_of, num, ranked as ranked_runs, read_record
from runtime.records import flat_params as _flat, is_number as _number, iso_time as _iso, sorted_history as _sorted_history

from ..blueprint import LABEL_PREFIX
from ..errors import UserError
from ..paths import WORKSPACE_MOUNT
from .base import SUBMISSION_LABEL, SWEEP_LABEL, Operation, warn

PARAMS_ANNOTATION = f"{LABEL_PREFIX}/parameters"  # a Job's parameters, as submit wrote them (JSON)
LOG_LINES = 500  # the last lines of a Job's log read for its metrics (the last resort)
TABLE_METRICS = 6  # metrics shown in the terminal table; --csv and --json have them all
LEGEND_RUNS = 12  # the plot names at most this many runs in its legend
SKIP_FOLDERS = frozenset({"__pycache__", "node_modules"})  # and every folder whose name starts with "."

# One run (Run) and its record (read_record) are runtime/records.py's: python -m runtime promote reads
# the same records in a pod, where the wizard is not.

# --------------------------------------------------------------------------- source: W&B offline runs
# A .wandb file is a record log: a 7-byte header (":W&B", 0xBEE1, version 0), then 32 KiB blocks of
# chunks, each a 7-byte header (CRC-32 of type and data, length, type: 1 whole, 2 first, 3 middle,
# 4 last) and its data; a block's last 6 bytes or fewer are padding. Each record is a protobuf
# wandb.proto.wandb_internal_pb2.Record. wandb's Python package no longer has a reader of its own
# (its datastore module went with the Go core), so this is one, checked against real runs written
# by the installed wandb in tests/test_compare.py.
WANDB_CHECKED = "0.31"  # the wandb version whose files this reader was checked against
WANDB_HEADER = struct.Struct("<4sHB")
WANDB_IDENT, WANDB_MAGIC, WANDB_VERSION = b":W&B", 0xBEE1, 0
CHUNK = struct.Struct("<IHB")
BLOCK = 32768


class Unreadable(Exception):
    """A W&B offline run this reader cannot read; its message says why."""


def wandb_records(data: bytes) -> Iterable[bytes]:
    """The records of a .wandb file's bytes. A torn end (a run still writing) ends the list."""
    if len(data) < WANDB_HEADER.size:
        raise Unreadable("too short to be a W&B run file")
    ident, magic, version = WANDB_HEADER.unpack_from(data)
    if ident != WANDB_IDENT or magic != WANDB_MAGIC:
        raise Unreadable("not a W&B run file (no :W&B header)")
    if version != WANDB_VERSION:
        raise Unreadable(f"W&B run file version {version}; this reader knows version {WANDB_VERSION} (wandb {WANDB_CHECKED})")
    pos, pending = WANDB_HEADER.size, b""
    while pos < len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:
            pos += left
            continue
        if pos + CHUNK.size > len(data):
            return
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if (crc, length, kind) == (0, 0, 0):  # padding to the end of the block
            pos += left
            continue
        body = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if len(body) < length or zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF != crc:
            return  # torn or damaged: what came before is still good
        pos += CHUNK.size + length
        if kind == 1:
            yield body
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        elif kind == 4:
            yield pending + body
            pending = b""
        else:
            return


def _item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def read_wandb_file(path: Path) -> Run:
    """One W&B run file (``run-<id>.wandb``): its id, name, group, config, history, state and times."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError as exc:
        raise Unreadable(f"the wandb package is not installed here ({exc.name}): pip install wandb") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    run = Run(id=path.stem[len("run-"):] if path.stem.startswith("run-") else path.stem, sources=["wandb offline"])
    history: dict[str, dict[int, float]] = {}
    exit_code: int | None = None
    last_runtime = 0.0
    seen = 0
    for raw in wandb_records(data):
        rec = pb.Record()
        try:
            rec.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a record of a newer wandb: the others still count
            continue
        seen += 1
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.id = r.run_id or run.id
            run.name = r.display_name or run.name
            run.group = r.run_group or run.group
            run.job_type = r.job_type or run.job_type
            if r.sweep_id:
                run.sweep = r.sweep_id
            if r.HasField("start_time") and run.started is None:
                run.started = r.start_time.seconds + r.start_time.nanos / 1e9
            run.params.update(_config_items(r.config.update))
        elif kind == "config":
            run.params.update(_config_items(rec.config.update))
        elif kind == "history":
            row: dict[str, float] = {}
            for item in rec.history.item:
                try:
                    v = json.loads(item.value_json)
                except ValueError:
                    continue
                if _number(v):
                    row[_item_key(item)] = float(v)
            step = int(row["_step"]) if "_step" in row else int(rec.history.step.num)
            last_runtime = max(last_runtime, row.get("_runtime", 0.0))
            for k, v in row.items():
                if not k.startswith("_"):
                    history.setdefault(k, {})[step] = v
        elif kind == "metric":
            m = rec.metric
            if m.name and (m.summary.min or m.summary.max) and not (m.summary.min and m.summary.max):
                run.goals[m.name] = "min" if m.summary.min else "max"
            if m.name and m.goal in (1, 2):  # GOAL_MINIMIZE, GOAL_MAXIMIZE
                run.goals[m.name] = "min" if m.goal == 1 else "max"
        elif kind == "exit":
            exit_code = int(rec.exit.exit_code)
            last_runtime = max(last_runtime, float(rec.exit.runtime))
    if not seen:
        raise Unreadable("no records in it")
    if run.job_type == "sweep-trial" and run.group and not run.sweep:
        run.sweep = run.group
    run.history = _sorted_history(history)
    run.runtime = last_runtime or None
    run.state = "running" if exit_code is None else ("finished" if exit_code == 0 else "failed")
    if exit_code is not None and run.started is not None and last_runtime:
        run.finished = run.started + last_runtime
    return run


def _config_items(items: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key = _item_key(item)
        if key.startswith("_"):
            continue
        try:
            value = json.loads(item.value_json)
        except ValueError:
            continue
        out[key] = value
    return _flat(out)


def _merge_parts(parts: list[Run]) -> Run:
    """The folders of one resumed W&B run, oldest first, as one run."""
    run = parts[0]
    for later in parts[1:]:
        for m, points in later.history.items():
            merged = dict(run.history.get(m, []))
            merged.update(points)
            run.history[m] = sorted(merged.items())
        run.params.update(later.params)
        run.goals.update(later.goals)
        run.state = later.state or run.state
        run.runtime = max(run.runtime or 0.0, later.runtime or 0.0) or None
        run.finished = later.finished
    return run


# --------------------------------------------------------------------------- a folder of runs
@dataclass
class Found:
    """The runs found so far, by id, and what the user should know about how they were read."""

    runs: dict[str, Run] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, run: Run) -> None:
        same = self.runs.get(run.id)
        if same is None and run.name:  # a W&B agent's own run id: the same run by name and group
            same = next((r for r in self.runs.values() if r.name == run.name and r.group == run.group), None)
        if same is not None:
            same.fill(run)
            return
        self.runs[run.id] = run


def scan_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """The record folders (with run.json) and W&B run files (``*run-*/*.wandb``) under ``root``."""
    records: list[Path] = []
    wandb_files: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if "run.json" in files:
            records.append(here)
            dirs[:] = []
            continue
        ours = sorted(f for f in files if f.endswith(".wandb"))
        if ours and "run-" in here.name:
            wandb_files.append(here / ours[0])
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_FOLDERS)
    return sorted(records), sorted(wandb_files, key=lambda p: p.parent.name)


def read_folder(root: Path, found: Found, where: str) -> None:
    """Every record and W&B offline run under ``root`` into ``found``: records first (they are
    plain), then the W&B runs complete them or add the runs that have no record."""
    records, wandb_files = scan_folder(root)
    for folder in records:
        run = read_record(folder)
        if run is None:
            found.notes.append(f"note: {where}{folder.relative_to(root)}/run.json is not a run record; left out")
        else:
            found.add(run)
    parts: dict[str, list[Run]] = {}
    unreadable: dict[str, list[str]] = {}
    for f in wandb_files:
        try:
            run = read_wandb_file(f)
        except Unreadable as exc:
            unreadable.setdefault(str(exc), []).append(str(f.parent.relative_to(root)))
            continue
        parts.setdefault(run.id, []).append(run)
    for reason, folders in unreadable.items():
        shown = ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
        found.notes.append(f"note: {len(folders)} W&B offline run(s) not read ({shown}): {reason}")
    for same in parts.values():
        found.add(_merge_parts(same))


# --------------------------------------------------------------------------- source: W&B's API (untested)
WANDB_STATES = {"finished": "finished", "failed": "failed", "crashed": "crashed", "killed": "killed",
                "running": "running", "pending": "pending"}


def wandb_api_runs(project: str, entity: str | None, group: str | None, base_url: str | None = None,
                   most: int = 500) -> list[Run]:
    """The runs of a W&B project (of one group when given), from W&B's API.

    NOT TESTED here: it needs the network, a W&B account and a key (WANDB_API_KEY or
    ``wandb login``). It is kept to this one function, which only turns W&B's runs into
    :class:`Run` s; any error it raises is reported by the caller, which then reads the volume.
    """
    import wandb

    api = wandb.Api(overrides={"base_url": base_url} if base_url else {}, timeout=30)
    path = f"{entity}/{project}" if entity else project
    runs = api.runs(path, filters={"group": group} if group else {}, order="-created_at", per_page=min(most, 100))
    out: list[Run] = []
    for r in runs:
        if len(out) >= most:
            break
        history: dict[str, dict[int, float]] = {}
        for row in r.scan_history(page_size=1000):
            step = int(row.get("_step") or 0)
            for k, v in row.items():
                if not str(k).startswith("_") and _number(v):
                    history.setdefault(str(k), {})[step] = float(v)
        summary = dict(r.summary) if r.summary else {}
        out.append(Run(id=r.id, name=r.name or "", group=r.group, job_type=r.job_type,
                       sweep=r.group if r.job_type == "sweep-trial" else None,
                       params=_flat(dict(r.config or {})), state=WANDB_STATES.get(r.state, str(r.state)),
                       started=_iso(getattr(r, "created_at", None)),
                       runtime=float(summary["_runtime"]) if _number(summary.get("_runtime")) else None,
                       history=_sorted_history(history), sources=["wandb"]))
    return out


def _wandb_api_key_here(base_url: str | None) -> bool:
    """Whether this machine has a W&B key: WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = re.sub(r"^https?://([^/:]+).*$", r"\1", base_url) if base_url else "api.wandb.ai"
    try:
        text = Path(os.environ.get("NETRC") or Path.home() / ".netrc").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"\bmachine\s+" + re.escape(host) + r"\b", text) is not None


def _wandb_online(ctx: Operation) -> bool:
    """Whether W&B's API is asked: tracking is W&B and online, or ``auto`` (online where the W&B Secret
    exists) and this machine has a key; never under WANDB_MODE=offline/disabled here."""
    t = ctx.config.experiment.tracking
    if not (t.enabled and t.backend == "wandb") or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    mode = getattr(t, "mode", "online")
    return mode == "online" or (mode == "auto" and (ctx.dry_run or _wandb_api_key_here(getattr(t, "base_url", None))))


# --------------------------------------------------------------------------- source: the volume
# Run in a pod that mounts the volume: sh -c SCRIPT mlshift-compare BASE. Writes a gzipped tar of
# the records and W&B run files under BASE, base64 (oc exec's output is text), or nothing.
FETCH_SCRIPT = r"""cd -- "$1" 2>/dev/null || exit 0
find results wandb -maxdepth 3 -type f \( -path "results/*/run.json" -o -path "results/*/metrics.jsonl" -o -path "*run-*/*.wandb" \) -print0 2>/dev/null |
  tar -czf - --null --no-recursion -T - | base64
"""


def records_root(ctx: Operation) -> str:
    """Where the runs' records are: /workspace/<name> (results/ and wandb/ in it)."""
    return f"{WORKSPACE_MOUNT}/{ctx.name}"


def _unpack(text: str, dest: Path) -> int:
    """The fetched tar into ``dest`` (plain files only, never outside it); how many files."""
    raw = base64.b64decode("".join(text.split()), validate=False)
    if not raw:
        return 0
    n = 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or not parts or Path(member.name).is_absolute() or ".." in parts:
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is not None:
                target.write_bytes(src.read())
                n += 1
    return n


def read_volume(ctx: Operation, jobs: list[dict[str, Any]], found: Found) -> None:
    """The records and W&B offline runs on the workspace volume, in one ``oc exec`` (a constant
    number of requests: whether the volume exists; the pods of running jobs, when a job runs;
    then one exec in a running job's pod, or the short-lived sync pod: delete, create, wait,
    exec, delete)."""
    from . import deploy as deploy_ops
    from .jobs import job_state

    base = records_root(ctx)
    claim = ctx.blueprint.workspace_claim
    ans = ctx.oc.call("get", [f"persistentvolumeclaim/{claim}", "-o", "name", "--ignore-not-found"],
                      what="look for the workspace volume", dry_answer=f"persistentvolumeclaim/{claim}")
    if not ans.out.strip():
        found.notes.append(f"note: no workspace volume {claim} in {ctx.where}: no run records to read")
        return
    pod, container = None, []
    if any(job_state(j) == "Running" for j in jobs):  # its pod mounts the volume (on a ReadWriteOnce one, the only way in)
        for p in ctx.pods(ctx.selector("job")):
            if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
                pod, container = p["metadata"]["name"], ["-c", ctx.blueprint.container_name]
                break
    command = ["--", "/bin/sh", "-c", FETCH_SCRIPT, "mlshift-compare", base]
    if ctx.dry_run:
        ctx.oc.note(f"the records and W&B offline runs in {base}/results and {base}/wandb, in one exec")
    # what the sync pod says while it starts goes to stderr: stdout holds the comparison (--json)
    with contextlib.redirect_stdout(sys.stderr) if not ctx.dry_run else contextlib.nullcontext():
        with deploy_ops.VolumePod(ctx, pod) as target:
            ans = ctx.oc.call("exec", [target, *container, *command], check=False, timeout=600,
                              what=f"read the run records in {base}")
    if ctx.dry_run:
        return
    if not ans.ok:
        from .oc import first_line

        found.notes.append(f"note: could not read the run records on the volume: {first_line(ans.err) or ans.returncode}")
        return
    with tempfile.TemporaryDirectory(prefix="mlshift-compare-") as tmp:
        try:
            _unpack(ans.out, Path(tmp))
        except (ValueError, tarfile.TarError, OSError, EOFError) as exc:
            found.notes.append(f"note: the run records fetched from the volume could not be unpacked: {exc}")
            return
        read_folder(Path(tmp), found, f"{base}/")


# --------------------------------------------------------------------------- source: job logs (last resort)
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
PAIR = re.compile(r"([A-Za-z_][\w./-]*)=(" + NUMBER + r")")
KATIB_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w./-]*=(?:" + NUMBER + r")\s*[,\s]\s*)*[A-Za-z_][\w./-]*=(?:" + NUMBER + r")\s*$")


def log_history(text: str, metrics: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Metrics in log text: every line made only of ``name=number`` pairs (Katib's convention), and
    the named metrics as ``name=value`` or ``name: value`` anywhere; step = the value's order."""
    history: dict[str, list[float]] = {}
    named = {m: re.compile(r"(?<![\w.])" + re.escape(m) + r"\s*[:=]\s*(" + NUMBER + r")") for m in metrics}
    for line in text.splitlines():
        got: dict[str, float] = {}
        if KATIB_LINE.match(line):
            got.update((k, float(v)) for k, v in PAIR.findall(line))
        for m, pat in named.items():
            hits = pat.findall(line)
            if hits:
                got[m] = float(hits[-1])
        for k, v in got.items():
            history.setdefault(k, []).append(v)
    return {k: list(enumerate(vs)) for k, vs in history.items()}


def _job_run(ctx: Operation, job: dict[str, Any]) -> Run:
    from .jobs import job_state

    meta = job["metadata"]
    labels = meta.get("labels") or {}
    try:
        params = json.loads((meta.get("annotations") or {}).get(PARAMS_ANNOTATION, "{}"))
    except ValueError:
        params = {}
    state = job_state(job)
    state = "failed" if state.startswith("Failed") else {"Succeeded": "finished"}.get(state, state.lower())
    st = job.get("status") or {}
    return Run(id=labels.get(SUBMISSION_LABEL) or meta["name"], name=meta["name"], sweep=labels.get(SWEEP_LABEL),
               group=labels.get(SWEEP_LABEL), params=_flat(params) if isinstance(params, dict) else {}, state=state,
               started=_iso(st.get("startTime")), finished=_iso(st.get("completionTime")), sources=["job log"])


def read_job_logs(ctx: Operation, jobs: list[dict[str, Any]], found: Found, metrics: list[str],
                  sweep: str | None = None) -> None:
    """For each Job of the sweep compared whose runs have no record: its last log lines (one
    request per such Job)."""
    known = {v for r in found.runs.values() for v in (r.id, r.group, r.sweep) if v}
    if ctx.dry_run:
        ctx.oc.note(f"then, for each job whose runs have no record: its last {LOG_LINES} log lines")
        ctx.oc.call("logs", ["job/<each job>", "-c", ctx.blueprint.container_name, f"--tail={LOG_LINES}"])
        return
    # only the jobs of the sweep that will be shown (see select): the logs of the others would be read for nothing
    if sweep == "all":
        target = None
    else:
        target = sweep or _newest([r.sweep for r in found.runs.values()]
                                  + [(j["metadata"].get("labels") or {}).get(SWEEP_LABEL) for j in jobs])
    for job in jobs:
        labels = job["metadata"].get("labels") or {}
        if target and target not in (labels.get(SWEEP_LABEL), labels.get(SUBMISSION_LABEL)):
            continue
        if labels.get(SUBMISSION_LABEL) in known or (labels.get(SWEEP_LABEL) and labels[SWEEP_LABEL] in known):
            continue
        run = _job_run(ctx, job)
        ans = ctx.oc.call("logs", [f"job/{job['metadata']['name']}", "-c", ctx.blueprint.container_name,
                                   f"--tail={LOG_LINES}"], check=False)
        if ans.ok:
            run.history = log_history(ans.out, metrics)
        found.add(run)


def from_cluster(ctx: Operation, sweep: str | None, metrics: list[str]) -> tuple[Found, str]:
    """The runs, from the sources in order (see the module's docstring); and where they were read."""
    from .jobs import list_jobs

    ctx.check_session()
    jobs = list_jobs(ctx)
    found = Found()
    if _wandb_online(ctx):
        t = ctx.config.experiment.tracking
        project = t.project or ctx.name
        group = sweep if sweep and sweep != "all" else _newest(
            [(j["metadata"].get("labels") or {}).get(SWEEP_LABEL) for j in jobs])
        if ctx.dry_run:
            ctx.oc.note(f"W&B: the runs of project {project}" + (f" in group {group}" if group else "") + " (its API, not oc)")
        else:
            try:
                for run in wandb_api_runs(project, t.entity, group, getattr(t, "base_url", None)):
                    found.add(run)
            except Exception as exc:  # noqa: BLE001 - any failure of the API: the volume still has the records
                why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                found.notes.append(f"note: W&B's API did not answer ({type(exc).__name__}{': ' + why if why else ''}); "
                                   "the runs are read from their records on the volume")
    # always: records complete W&B's runs (a run that failed before wandb.init, an offline one) and add the others
    read_volume(ctx, jobs, found)
    read_job_logs(ctx, jobs, found, metrics, sweep)
    return found, f"in {ctx.where}"


def _newest(ids: Iterable[str | None]) -> str | None:
    ids = sorted({i for i in ids if i})
    return ids[-1] if ids else None


# --------------------------------------------------------------------------- choosing and ranking
LOWER_IS_BETTER = re.compile(r"loss|err|perplex|ppl|mse|mae|rmse|wer|cer|nll|latency|time|regret|distance", re.I)


def metric_goal(metric: str, runs: list[Run]) -> str:
    """A metric's better direction: as a run declared it (wandb.define_metric(summary="min"|"max")),
    else from its name (loss, error, perplexity, latency, time... are lower-is-better)."""
    for r in runs:
        if metric in r.goals:
            return r.goals[metric]
    return "min" if LOWER_IS_BETTER.search(metric) else "max"


@dataclass
class Comparison:
    title: str
    runs: list[Run]  # ranked: best first
    metric: str | None  # the one they are ranked by
    goal: str  # min or max
    metrics: list[str]  # shown, the ranking one first
    params: list[str]  # that differ between runs
    all_params: list[str]
    source: str
    now: float
    goals: dict[str, str] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)  # metrics left out of the terminal table

    @property
    def best(self) -> Run | None:
        if self.metric and self.runs and self.runs[0].best(self.metric, self.goal):
            return self.runs[0]
        return None


def select(runs: list[Run], sweep: str | None) -> tuple[list[Run], str | None]:
    """The runs of ``sweep`` (its id, or a batch's group); by default those of the newest sweep,
    or every run when none is part of a sweep; ``all``: every run."""
    if sweep == "all":
        return runs, None
    if sweep:
        return [r for r in runs if sweep in (r.sweep, r.group) or r.id == sweep or r.id.startswith(sweep + "-")], sweep
    newest = _newest(r.sweep for r in runs)
    if newest:
        return [r for r in runs if newest in (r.sweep, r.group)], newest
    return runs, None


def compare_runs(runs: list[Run], *, title: str, source: str, metric: str | None, metric_given: bool,
                 goal: str, shown: list[str] | None, now: float | None = None) -> Comparison:
    """Rank the runs and choose what to show. A metric asked for by name that no run has is an
    error naming the metrics there are; the configured one only a note (the table is still shown)."""
    known = sorted({m for r in runs for m in r.history})
    if metric and metric not in known:
        have = ", ".join(known) if known else "none yet"
        text = f"no run has the metric {metric!r}; the metrics the runs have: {have}"
        if metric_given:
            raise UserError(text, hint="pass one of them with --metric NAME" if known else None)
        warn(f"note: {text} (experiment.sweep.metric; pass --metric NAME to rank by another)")
        metric = None
    goals = {m: metric_goal(m, runs) for m in known}
    if metric:
        goals[metric] = goal

    ranked = ranked_runs(runs, metric, goal)
    if shown:
        metrics = list(dict.fromkeys(([metric] if metric else []) + shown))
    else:
        metrics = list(dict.fromkeys(([metric] if metric else []) + known))
    all_params = list(dict.fromkeys(k for r in ranked for k in r.params))
    if len(ranked) == 1:
        params = all_params
    else:
        # differ: two values among the runs that have it (a parameter only some sources know, e.g. W&B's
        # config beside a record's swept parameters, tells nothing apart where it is the same)
        params = [k for k in all_params
                  if len({json.dumps(r.params[k], sort_keys=True, default=str) for r in ranked if k in r.params}) > 1]
    return Comparison(title=title, runs=ranked, metric=metric, goal=goal, metrics=metrics, params=params,
                      all_params=all_params, source=source, now=time.time() if now is None else now, goals=goals)


# --------------------------------------------------------------------------- words
def word(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def duration_text(secs: float | None) -> str:
    if secs is None:
        return ""
    s = int(round(secs))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def _goal_words(goal: str) -> str:
    return "lowest first" if goal == "min" else "highest first"


def headline(c: Comparison) -> str:
    n = len(c.runs)
    line = f"{c.title}: {n} run{'s' if n != 1 else ''} ({c.source})"
    if c.metric:
        line += f", ranked by the best {c.metric} each reached, {_goal_words(c.goal)}"
    else:
        line += "; no metric to rank by (set experiment.sweep.metric, or pass --metric NAME)"
    return line


def best_line(c: Comparison) -> str | None:
    b = c.best
    if b is None or c.metric is None:
        return None
    value, step = b.best(c.metric, c.goal) or (None, 0)
    params = ", ".join(f"{k}={word(b.params[k])}" for k in c.params if k in b.params)
    return (f"best: {b.id}" + (f" ({params})" if params else "") + f": {c.metric} {num(value)} at step {step}"
            + f" (final {num(b.final(c.metric))})")


def _params_label(c: Comparison, r: Run) -> str:
    return ", ".join(f"{k}={word(r.params[k])}" for k in c.params if k in r.params) or r.id


# --------------------------------------------------------------------------- the terminal table
def table_lines(c: Comparison) -> list[str]:
    metrics = c.metrics[:TABLE_METRICS]
    c.hidden = c.metrics[TABLE_METRICS:]
    head = ["", "RUN", *c.params, "STATE", "DURATION"]
    rows: list[list[str]] = []
    for r in c.runs:
        cells = ["*" if r is c.best else "", r.id, *(word(r.params.get(k)) for k in c.params), r.state,
                 duration_text(r.duration(c.now))]
        for m in metrics:
            b = r.best(m, c.goals.get(m, "min"))
            cells += [num(r.final(m)), num(b[0]) if b else ""]
        rows.append(cells)
    sub = [*head, *(w for _ in metrics for w in ("final", "best"))]
    widths = [max(len(x[i]) for x in [sub, *rows]) for i in range(len(sub))]
    first = len(head)
    for i, m in enumerate(metrics):  # the metric's name spans its two columns
        a = first + 2 * i
        need = len(m) - (widths[a] + 2 + widths[a + 1])
        if need > 0:
            widths[a + 1] += need
    top = ""
    for i, m in enumerate(metrics):
        a = first + 2 * i
        start = sum(widths[:a]) + 2 * a
        top = top.ljust(start) + m
    out = [top.rstrip()] if metrics else []
    for x in [sub, *rows]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(x, widths)).rstrip())
    return out


def show_table(c: Comparison, say) -> None:  # type: ignore[no-untyped-def]
    say(headline(c))
    for line in table_lines(c):
        say(line)
    line = best_line(c)
    if line:
        say(line)
    if c.hidden:
        say(f"({len(c.hidden)} more metric{'s' if len(c.hidden) != 1 else ''}: {', '.join(c.hidden)}; "
            "--csv and --json have them, --metric NAME chooses)")


# --------------------------------------------------------------------------- CSV, JSON
def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _iso_text(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rank(c: Comparison, r: Run) -> int | None:
    if not c.metric or r.best(c.metric, c.goal) is None:
        return None
    return c.runs.index(r) + 1


def write_csv(c: Comparison, path: Path) -> None:
    head = ["rank", "run", "name", "group", "state", "duration_s", "started", "finished", "source", *c.all_params]
    for m in c.metrics:
        head += [f"{m}.final", f"{m}.best", f"{m}.best_step"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(head)
    for r in c.runs:
        d = r.duration(c.now)
        row = [_rank(c, r) or "", r.id, r.name, r.group or "", r.state, "" if d is None else round(d, 1),
               _iso_text(r.started) or "", _iso_text(r.finished) or "", "+".join(r.sources),
               *(word(r.params.get(k)) for k in c.all_params)]
        for m in c.metrics:
            b = r.best(m, c.goals.get(m, "min"))
            final = r.final(m)
            row += ["" if final is None else repr(final) if not math.isfinite(final) else f"{final:.10g}",
                    "" if b is None else f"{b[0]:.10g}", "" if b is None else b[1]]
        w.writerow(row)
    _write(path, out.getvalue().encode("utf-8"))


def as_json(c: Comparison) -> dict[str, Any]:
    best = c.best
    runs = []
    for r in c.runs:
        metrics = {}
        for m in sorted(r.history):
            b = r.best(m, c.goals.get(m, metric_goal(m, [r])))
            metrics[m] = {"final": _finite(r.final(m)), "best": None if b is None else b[0],
                          "best_step": None if b is None else b[1], "steps": len(r.history[m]),
                          "goal": c.goals.get(m, metric_goal(m, [r]))}
        d = r.duration(c.now)
        runs.append({"rank": _rank(c, r), "id": r.id, "name": r.name, "group": r.group, "sweep": r.sweep,
                     "state": r.state, "started": _iso_text(r.started), "finished": _iso_text(r.finished),
                     "duration_s": None if d is None else round(d, 3), "sources": r.sources, "params": r.params,
                     "metrics": metrics,
                     "history": {m: [[s, _finite(v)] for s, v in r.history[m]] for m in c.metrics if m in r.history}})
    return {"title": c.title, "metric": c.metric, "goal": c.goal if c.metric else None,
            "best": best.id if best else None, "metrics": c.metrics, "params": c.params, "runs": runs}


def _write(path: Path, data: bytes) -> None:
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


# --------------------------------------------------------------------------- the plots
def plot_png(c: Comparison) -> bytes:
    """The metric per run over its steps, and its best value against each swept parameter (one
    panel each), as PNG bytes (matplotlib's Agg canvas; no display, no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("--plot and --html need matplotlib, which is not installed here", hint="pip install matplotlib") from None
    metric = c.metric or (c.metrics[0] if c.metrics else None)
    if metric is None:
        raise UserError("nothing to plot: no run has logged a metric yet")
    goal = c.goals.get(metric, c.goal)
    panels = 1 + len(c.params)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(rows, cols, 1)
    best = c.best
    for r in c.runs:
        points = r.history.get(metric)
        if not points:
            continue
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 30 else None,
                linewidth=2.6 if r is best else 1.2, zorder=3 if r is best else 2,
                label=("* " if r is best else "") + _params_label(c, r))
    ax.set_title(f"{metric} per step")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if 0 < len(c.runs) <= LEGEND_RUNS and ax.lines:
        ax.legend(fontsize=7)
    for i, k in enumerate(c.params, start=2):
        ax = fig.add_subplot(rows, cols, i)
        xs, ys, marks = [], [], []
        for r in c.runs:
            b = r.best(metric, goal)
            if b is None or k not in r.params:
                continue
            xs.append(r.params[k])
            ys.append(b[0])
            marks.append(r is best)
        numeric = bool(xs) and all(_number(x) for x in xs)
        if numeric:
            pos = [float(x) for x in xs]
            if min(pos) > 0 and max(pos) / min(pos) >= 100:
                ax.set_xscale("log")
            values = sorted(set(pos))
            if len(values) <= 8:  # a grid's few values: a tick at each, written as given
                ax.set_xticks(values, [word(next(x for x in xs if float(x) == v)) for v in values])
                ax.minorticks_off()
        else:
            labels = sorted({word(x) for x in xs})
            pos = [labels.index(word(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
        ax.scatter(pos, ys, s=30, zorder=2)
        best_pos = [(p, y) for p, y, m in zip(pos, ys, marks) if m]
        if best_pos:
            ax.scatter(*zip(*best_pos), s=160, marker="*", zorder=3, label="best")
            ax.legend(fontsize=7)
        ax.set_title(f"best {metric} by {k}")
        ax.set_xlabel(k)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(c.title)
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


# --------------------------------------------------------------------------- the HTML report
HTML_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:14px}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.best{background:#fff6d5;font-weight:600}
img{max-width:100%;margin-top:1.5em}"""


def html_report(c: Comparison, png: bytes | None) -> str:
    e = html.escape
    metrics = c.metrics
    head = ["", "run", *c.params, "state", "duration"]
    th = "".join(f"<th>{e(h)}</th>" for h in head) + "".join(f'<th colspan="2">{e(m)}</th>' for m in metrics)
    th2 = "<th></th>" * len(head) + "<th>final</th><th>best</th>" * len(metrics)
    body = []
    for r in c.runs:
        cells = ["&#9733;" if r is c.best else "", e(r.id), *(e(word(r.params.get(k))) for k in c.params), e(r.state),
                 e(duration_text(r.duration(c.now)))]
        tds = "".join(f"<td>{x}</td>" for x in cells)
        for m in metrics:
            b = r.best(m, c.goals.get(m, "min"))
            tds += f'<td class="n">{e(num(r.final(m)))}</td><td class="n">{e(num(b[0]) if b else "")}</td>'
        row_class = ' class="best"' if r is c.best else ""
        body.append(f"<tr{row_class}>{tds}</tr>")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(c.title)}</title>",
        f"<style>{HTML_STYLE}</style></head><body>", f"<h1>{e(c.title)}</h1>", f"<p>{e(headline(c))}</p>",
        f'<table id="runs"><thead><tr>{th}</tr><tr>{th2}</tr></thead><tbody>', *body, "</tbody></table>",
    ]
    line = best_line(c)
    if line:
        parts.append(f"<p><strong>{e(line)}</strong></p>")
    if png:
        parts.append(f'<img alt="{e(c.metrics[0] if c.metrics else "")} per step and by parameter" '
                     f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- the verb
def _metrics_wanted(ctx: Operation, args) -> tuple[str | None, bool, list[str] | None]:  # type: ignore[no-untyped-def]
    """(the metric to rank by, whether it was asked for by name, the metrics to show or None for all)."""
    cfg = ctx.config
    given = list(args.metric or [])
    if given:
        return given[0], True, given
    configured = cfg.experiment.sweep.metric if cfg.experiment.sweep else None
    shown = list(cfg.monitoring.metrics) or None
    return configured, False, shown


def compare(ctx: Operation, args) -> int:  # type: ignore[no-untyped-def]
    metric, metric_given, shown = _metrics_wanted(ctx, args)
    sweep_cfg = ctx.config.experiment.sweep
    goal = goal_of(args.goal or (sweep_cfg.goal if sweep_cfg else None))
    from_dir: Path | None = args.from_dir
    if from_dir is not None:
        if not from_dir.is_dir():
            raise UserError(f"--from {from_dir}: not a folder")
        found = Found()
        read_folder(from_dir, found, f"{from_dir}/")
        where = f"in {from_dir}"
    else:
        found, where = from_cluster(ctx, args.sweep, [m for m in [metric, *(shown or [])] if m])
        if ctx.dry_run:
            return 0
    for note in found.notes:
        warn(note)
    runs, sweep = select(sorted(found.runs.values(), key=lambda r: r.id), args.sweep)
    if not runs:
        what = f"sweep {args.sweep}" if args.sweep and args.sweep != "all" else ctx.name
        if from_dir is not None:
            text = (f"Nothing to compare in {from_dir}: no run records (results/*/run.json) and no W&B offline runs "
                    "(wandb/offline-run-*)" + (f" of sweep {args.sweep}" if args.sweep and found.runs else "") + ".")
        elif found.runs:
            text = f"Nothing to compare: no runs of {what} {where} (other runs: --sweep all)."
        else:
            text = (f"Nothing to compare: no runs of {ctx.name} {where} (no run records on the volume, no jobs)."
                    if not args.sweep else f"Nothing to compare: no runs of {what} {where}.")
        if args.json:
            warn(text)
            print(json.dumps({"title": None, "metric": metric, "goal": None, "best": None, "metrics": [], "params": [],
                              "runs": []}, indent=1))
        else:
            ctx.say(text)
        return 0
    if sweep:
        title = f"Sweep {sweep}"
    elif from_dir is not None:
        title = f"Runs in {from_dir}"
    else:
        title = f"Runs of {ctx.name}"
    firsts = [r.sources[0] for r in runs]
    counts = ", ".join(f"{firsts.count(s)} {SOURCE_WORDS.get(s, s)}" for s in dict.fromkeys(firsts))
    c = compare_runs(runs, title=title, source=counts or where, metric=metric, metric_given=metric_given,
                     goal=goal, shown=shown)
    if args.json:
        print(json.dumps(as_json(c), indent=1))
    else:
        show_table(c, ctx.say)
    say = warn if args.json else ctx.say
    if args.csv:
        write_csv(c, args.csv)
        say(f"wrote {args.csv}")
    png = None
    if args.plot or (args.html and c.metrics):
        png = plot_png(c)
    if args.plot and png is not None:
        _write(args.plot, png)
        say(f"wrote {args.plot}")
    if args.html:
        _write(args.html, html_report(c, png).encode("utf-8"))
        say(f"wrote {args.html}")
    return 0


SOURCE_WORDS = {"record": "from records", "wandb offline": "from W&B offline runs", "wandb": "from W&B",
                "job log": "from job logs"}
