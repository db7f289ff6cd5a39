"""submit (one job or a batch in one request), watch, jobs, logs, sweep and compare."""

from __future__ import annotations

import datetime as dt
import json
import math
import posixpath
import random
import re
import secrets
import shlex
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..blueprint import LABEL_PREFIX, Blueprint
from ..config import MAX_SWEEP_RUNS, Config
from ..errors import OcError, UserError
from ..loader import apply_sets
from ..render import CONFIG_FILE, JobSubmission, object_list, render_job
from . import diagnose
from .base import (ARGS_ANNOTATION, CONFIG_ANNOTATION, SETS_ANNOTATION, SUBMISSION_LABEL, SWEEP_LABEL, Operation,
                   poll_seconds, sleep, warn)

ID_ALPHABET = string.ascii_lowercase + string.digits
PARAMS_ANNOTATION = "mlshift.io/parameters"
SNAPSHOT_LABEL = f"{LABEL_PREFIX}/snapshot"  # the snapshot of workspace/ a Job runs from (RUNS_DIR/<id>)


# --------------------------------------------------------------------------- names
def new_id(now: dt.datetime | None = None, rng: random.Random | None = None) -> str:
    """A submission id: UTC date and time (sortable) and 4 random characters, e.g. 250102-130405-k3x9."""
    now = now or dt.datetime.now(dt.timezone.utc)
    pick = rng.choice if rng else secrets.choice
    return now.strftime("%y%m%d-%H%M%S") + "-" + "".join(pick(ID_ALPHABET) for _ in range(4))


def new_ids(count: int) -> list[str]:
    now = dt.datetime.now(dt.timezone.utc)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        i = new_id(now)
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


# --------------------------------------------------------------------------- one submission
@dataclass
class Run:
    """One job of a submission: --set overrides and (optionally) replacement arguments."""

    sets: list[str] = field(default_factory=list)
    args: list[str] | None = None
    params: dict[str, Any] | None = None  # the sweep's values, shown by compare


def base_data(ctx: Operation) -> dict[str, Any]:
    from ..deployment import read_deployment_data

    return read_deployment_data(ctx.directory)


class JobFactory:
    """Makes each Job of a submission from the Job template, in memory; config.yaml is only read.

    The config is built once per distinct set of overrides. Each run then fills
    templates/manifests/job.yaml.j2 in (:func:`~wizard.render.render_job`) with the blueprint of
    its own config (which holds its arguments), of the submission's snapshot of workspace/
    (``run_dir``, when the application runs code from there) and a :class:`JobSubmission` (its
    name, labels and annotations): the same template as manifests/job.yaml, nothing patched.
    """

    def __init__(self, ctx: Operation):
        self.ctx = ctx
        self.data = base_data(ctx)
        self.run_dir: str | None = None  # the submission's snapshot of workspace/, once it is on the volume
        self._configs: dict[tuple[str, ...], Config] = {}
        self._blueprints: dict[tuple[str | None, ...], Blueprint] = {}

    def config(self, sets: list[str]) -> Config:
        """config.yaml with these --set overrides (checked: still this application, as jobs)."""
        from ..deployment import build_config

        key = tuple(sets)
        if key not in self._configs:
            config = build_config(apply_sets(self.data, sets), source="--set" if sets else CONFIG_FILE)
            if config.name != self.ctx.name:
                raise UserError("application.name cannot change for one submission", hint="edit config.yaml and re-deploy instead")
            if config.application.execution.mode != "job":
                raise UserError(f"{self.ctx.name} does not run as jobs (execution.mode: {config.application.execution.mode})",
                                hint=f"use {self.ctx.script('deploy.sh')}, or set application.execution.mode: job in config.yaml")
            self._configs[key] = config
        return self._configs[key]

    def blueprint(self, sets: list[str]) -> Blueprint:
        """The blueprint of config.yaml with these --set overrides, and of the snapshot when there is one."""
        key = (self.run_dir, *sets)
        if key not in self._blueprints:
            self._blueprints[key] = self._blueprint_of(self.config(sets))
        return self._blueprints[key]

    def _blueprint_of(self, config: Config) -> Blueprint:
        """A run's blueprint: it runs from the snapshot when its application runs code from workspace/."""
        blueprint = Blueprint(config, self.ctx.directory.name, run_dir=self.run_dir)
        if blueprint.run_dir and not blueprint.code_from_workspace:
            blueprint = Blueprint(config, self.ctx.directory.name)
        return blueprint

    def submission(self, run: Run, sub_id: str, sweep_id: str | None) -> tuple[Blueprint, JobSubmission]:
        """What the Job template is filled in with for this run: the blueprint of the run's own
        config (its overrides, and its arguments when it has its own), and its own values."""
        blueprint = self.blueprint(run.sets)
        if run.args is not None:
            config = blueprint.config.model_copy(deep=True)
            config.application.execution.arguments = list(run.args)
            blueprint = self._blueprint_of(config)
        labels = {SUBMISSION_LABEL: sub_id}
        if sweep_id:
            labels[SWEEP_LABEL] = sweep_id
        if blueprint.run_dir:
            labels[SNAPSHOT_LABEL] = posixpath.basename(blueprint.run_dir)
        annotations = {ARGS_ANNOTATION: json.dumps(blueprint.user_argv, ensure_ascii=False)}
        if run.sets:
            annotations[SETS_ANNOTATION] = json.dumps(run.sets, ensure_ascii=False)
        if run.params is not None:
            annotations[PARAMS_ANNOTATION] = json.dumps(run.params, ensure_ascii=False)
        return blueprint, JobSubmission(name=blueprint.job_name(sub_id), labels=labels, annotations=annotations,
                                        config_annotation=CONFIG_ANNOTATION)


def check_deployed(ctx: Operation) -> str:
    """The shared objects exist (one request): otherwise the pods would wait forever. Returns the
    workspace volume's uid ("" in a dry run), which tells a volume created again from the old one."""
    blueprint = ctx.blueprint
    wanted = [f"persistentvolumeclaim/{blueprint.workspace_claim}"]
    if blueprint.build:
        wanted.append(f"imagestreamtag/{ctx.name}:latest")
    ans = ctx.oc.call("get", [*wanted, "-o", "json", "--ignore-not-found"], what="check that the application is deployed")
    if ctx.dry_run:
        return ""
    data = ans.json() or {}
    items = (data.get("items") or []) if data.get("kind") == "List" else [data]
    found = {(i.get("metadata") or {}).get("name"): i for i in items if isinstance(i, dict)}
    if blueprint.workspace_claim not in found:
        raise UserError(f"{ctx.name} is not deployed in {ctx.where} (no volume {blueprint.workspace_claim})",
                        hint=f"run {ctx.script('deploy.sh')} once first")
    if blueprint.build and f"{ctx.name}:latest" not in found:
        raise UserError(f"the image {ctx.name}:latest has not been built in {ctx.where}",
                        hint=f"run {ctx.script('deploy.sh')} (it builds the image)")
    return str((found[blueprint.workspace_claim].get("metadata") or {}).get("uid") or "")


def submit_runs(ctx: Operation, runs: list[Run], *, sweep_id: str | None = None, no_sync: bool = False) -> list[str]:
    """Create one Job per run in a single `oc create` of a List; returns the job names.

    When the application runs code from workspace/, every run of the submission (one job, a
    batch, a sweep) runs from one snapshot of it on the volume, uploaded first when workspace/
    changed since the last one (see :func:`wizard.ops.snapshots.snapshot_for_jobs`); ``no_sync``
    runs the last one as it is. The number of oc requests does not depend on len(runs): the
    session check, one lookup of the shared objects, the upload when workspace/ changed (the
    short-lived pod: delete, create, wait, delete; one rsync, one exec), and one create.
    """
    if not runs:
        raise UserError("nothing to submit")
    from ..files import check_destinations
    from .snapshots import SNAPSHOT_STATE, snapshot_for_jobs

    factory = JobFactory(ctx)
    # every override is checked before the cluster is touched
    snapshot = any(factory.blueprint(sets).code_from_workspace for sets in dict.fromkeys(tuple(r.sets) for r in runs))
    if snapshot:
        check_destinations(ctx.directory, [SNAPSHOT_STATE])  # where the snapshot is recorded; before anything happens
    elif no_sync:
        warn(f"note: --no-sync: {ctx.name} does not run code from workspace/; there is nothing to upload")
    ids = new_ids(len(runs))
    ctx.check_session()
    volume = check_deployed(ctx)
    if snapshot:
        factory.run_dir = snapshot_for_jobs(ctx, new_id=sweep_id or ids[0], volume=volume, no_sync=no_sync)
    submissions = [factory.submission(run, i, sweep_id) for run, i in zip(runs, ids)]
    jobs = [render_job(blueprint, sub) for blueprint, sub in submissions]
    what = "create the job" if len(jobs) == 1 else f"create the {len(jobs)} jobs"
    ctx.oc.call("create", ["-f", "-", "-o", "name"], stdin=object_list(jobs), what=what, timeout=300)
    return [sub.name for _, sub in submissions]


def read_batch(path: Path) -> list[Run]:
    """A batch file: a YAML list; each item a list of key=value overrides, or {set: [...], args: [...]}."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise UserError(f"{path}: not valid YAML") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a list of runs (each a list of key=value, or a mapping with set: and args:)")
    runs = []
    for n, item in enumerate(data, 1):
        if isinstance(item, list) and all(isinstance(s, str) for s in item):
            runs.append(Run(sets=list(item)))
        elif isinstance(item, dict) and set(item) <= {"set", "args"}:
            sets, args = item.get("set") or [], item.get("args")
            if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
                raise UserError(f"{path}: run {n}: set: must be a list of key=value")
            if args is not None and (not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args)):
                raise UserError(f"{path}: run {n}: args: must be a list of words")
            runs.append(Run(sets=list(sets), args=None if args is None else [str(a) for a in args]))
        else:
            raise UserError(f"{path}: run {n}: expected a list of key=value, or a mapping with set: and args:")
    return runs


def submit(ctx: Operation, args) -> int:
    sets = list(args.set or [])
    extra = list(args.arguments or [])
    replace = extra if (extra or args.no_arguments) else None
    if args.batch:
        runs = [Run(sets=sets + r.sets, args=r.args if r.args is not None else replace) for r in read_batch(args.batch)]
    else:
        runs = [Run(sets=sets, args=replace)]
    runs = [r for r in runs for _ in range(args.repeat)]
    names = submit_runs(ctx, runs, no_sync=args.no_sync)
    if ctx.dry_run:
        return 0
    if len(names) == 1:
        sub = names[0][len(ctx.blueprint.job_prefix) + 1:]
        ctx.say(f"Submitted {names[0]}")
        ctx.say(f"  follow it:  {ctx.script('watch-job.sh')} {sub}")
        ctx.say(f"  its logs:   {ctx.script('logs.sh')} {sub} -f")
    else:
        ctx.say(f"Submitted {len(names)} jobs:")
        for n in names:
            ctx.say(f"  {n}")
        ctx.say(f"  list them:  {ctx.script('list-jobs.sh')}")
    return 0


# --------------------------------------------------------------------------- job state
def condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def job_state(job: dict[str, Any]) -> str:
    if condition(job, "Complete") or condition(job, "SuccessCriteriaMet"):
        return "Succeeded"
    failed = condition(job, "Failed") or condition(job, "FailureTarget")
    if failed:
        return "Failed" + (f" ({failed.get('reason')})" if failed.get("reason") else "")
    if condition(job, "Suspended"):
        return "Suspended"
    st = job.get("status") or {}
    if st.get("active"):
        return "Running" if st.get("ready") or st.get("startTime") else "Pending"
    return "Pending"


def job_name(ctx: Operation, ident: str | None) -> str:
    """A job's full name from what the user typed: the name, the submission id, or nothing (newest)."""
    if ident and ident not in ("latest", "last"):
        prefix = ctx.blueprint.job_prefix
        return ident if ident.startswith(prefix + "-") else f"{prefix}-{ident}"
    if ctx.dry_run:
        ctx.oc.call("get", ["jobs", "-l", ctx.selector("job"), "-o", "json"])
        return f"{ctx.blueprint.job_prefix}-<newest>"
    jobs = ctx.oc.get_json(["jobs", "-l", ctx.selector("job")], what="list the jobs").get("items", [])
    if not jobs:
        raise UserError(f"no jobs of {ctx.name} in {ctx.where}", hint=f"submit one with {ctx.script('submit-job.sh')}")
    return sorted(j["metadata"]["name"] for j in jobs)[-1]


def get_job(ctx: Operation, name: str) -> dict[str, Any]:
    try:
        return ctx.oc.get_json(["job", name], what=f"read job {name}")
    except OcError as exc:
        if "notfound" in exc.failure.stderr.lower().replace(" ", ""):
            raise UserError(f"no job {name} in {ctx.where}",
                            hint=f"list them with {ctx.script('list-jobs.sh')} (finished jobs expire after 7 days)") from None
        raise


def job_logs_args(ctx: Operation, name: str, follow: bool) -> list[str]:
    if ctx.blueprint.multi_node:
        n = ctx.config.deployment.num_nodes or 2
        args = ["-l", f"job-name={name}", "--prefix", f"--max-log-requests={n + 1}", "--tail=-1"]
    else:
        args = [f"job/{name}"]
    args += ["-c", ctx.blueprint.container_name]
    return args + (["-f"] if follow else [])


def watch(ctx: Operation, args) -> int:
    ctx.check_session()
    name = job_name(ctx, args.job)
    if ctx.dry_run:
        ctx.oc.note("poll the job and its pods until a pod runs:")
        ctx.oc.call("get", ["job", name, "-o", "json"])
        ctx.oc.call("get", ["pods", "-l", f"job-name={name}", "-o", "json"])
        ctx.oc.call("get", ["events", "-o", "json"])
        if not args.no_logs:
            ctx.oc.stream("logs", job_logs_args(ctx, name, True))
        ctx.oc.note("then poll the job until it completes or fails:")
        ctx.oc.call("get", ["job", name, "-o", "json"])
        return 0
    ctx.say(f"Watching {name} (Ctrl-C stops watching; the job goes on)")
    start = time.monotonic()
    last = ""
    deadline = args.timeout
    # 1. until a pod runs (or the job has already ended)
    while True:
        job = get_job(ctx, name)
        state = job_state(job)
        if state.startswith(("Succeeded", "Failed")):
            break
        pods = ctx.pods(f"job-name={name}")
        if any((p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed") for p in pods):
            break
        events = ctx.events()
        detail = "waiting for a pod"
        if not pods:
            failures = diagnose.creation_failures(events, [name])
            if failures:
                q = diagnose.quota_line(failures[-1])
                raise UserError(q or f"the job's pods cannot be created: {failures[-1]}",
                                hint=f"free the quota or ask for less; delete this job with: oc delete job {name}")
        for p in pods:
            for pr in diagnose.pod_problems(p, events, image=ctx.blueprint.image):
                if pr.fatal:
                    raise UserError(f"{pr.pod}: {pr.summary}", hint=f"{pr.hint}; delete this job with: oc delete job {name}")
                detail = pr.summary
                break
            else:
                detail = f"{p['metadata']['name']} {diagnose.phase(p)}"
        if detail != last:
            ctx.say(f"[{int(time.monotonic() - start):>4}s] {detail}")
            last = detail
        if deadline and time.monotonic() - start > deadline:
            raise UserError(f"{name} has not started after {deadline}s: {detail}", hint="it keeps waiting on the cluster; watch again later")
        sleep(poll_seconds())
    # 2. its logs, to the end
    if not args.no_logs:
        ctx.oc.stream("logs", job_logs_args(ctx, name, True), check=False)
    # 3. its outcome
    while True:
        job = get_job(ctx, name)
        state = job_state(job)
        if state.startswith(("Succeeded", "Failed")):
            break
        if deadline and time.monotonic() - start > deadline:
            raise UserError(f"{name} is still running after {deadline}s", hint="watch again later; the job goes on")
        sleep(poll_seconds())
    took = _duration(job)
    if state == "Succeeded":
        ctx.say(f"{name} succeeded{took}.")
        return 0
    failed = condition(job, "Failed") or condition(job, "FailureTarget") or {}
    why = failed.get("message") or failed.get("reason") or "see its logs"
    warn(f"error: {name} failed{took}: {why} (logs: {ctx.script('logs.sh')} {name[len(ctx.blueprint.job_prefix) + 1:]})")
    return 1


def _duration(job: dict[str, Any]) -> str:
    st = job.get("status") or {}
    a, b = st.get("startTime"), st.get("completionTime")
    if not a:
        return ""
    try:
        t0 = dt.datetime.fromisoformat(a.replace("Z", "+00:00"))
        t1 = dt.datetime.fromisoformat(b.replace("Z", "+00:00")) if b else dt.datetime.now(dt.timezone.utc)
    except ValueError:
        return ""
    secs = int((t1 - t0).total_seconds())
    return f" after {secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f" after {secs // 60}m{secs % 60:02d}s"


# --------------------------------------------------------------------------- jobs, logs
def list_jobs(ctx: Operation, sweep: str | None = None) -> list[dict[str, Any]]:
    sel = ctx.selector("job") + (f",{SWEEP_LABEL}={sweep}" if sweep else "")
    return sorted(ctx.oc.get_json(["jobs", "-l", sel], what="list the jobs").get("items", []),
                  key=lambda j: j["metadata"]["name"])


def jobs(ctx: Operation, args) -> int:
    ctx.check_session()
    items = list_jobs(ctx, args.sweep)
    if ctx.dry_run:
        return 0
    if not items:
        ctx.say(f"No jobs of {ctx.name} in {ctx.where}" + (f" in sweep {args.sweep}" if args.sweep else "") + ".")
        return 0
    rows = [("NAME", "STATE", "DURATION", "SWEEP", "ARGUMENTS")]
    for j in items:
        meta = j["metadata"]
        try:
            argv = json.loads((meta.get("annotations") or {}).get(ARGS_ANNOTATION, "[]"))
        except ValueError:
            argv = []
        shown = shlex.join(argv).replace("\n", "\\n")
        rows.append((meta["name"], job_state(j), _duration(j).replace(" after ", ""),
                     (meta.get("labels") or {}).get(SWEEP_LABEL, ""), shown[:60] + ("..." if len(shown) > 60 else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        ctx.say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def logs(ctx: Operation, args) -> int:
    ctx.check_session()
    opts = []
    if args.tail is not None:
        opts.append(f"--tail={args.tail}")
    if args.since:
        opts.append(f"--since={args.since}")
    if args.previous:
        opts.append("--previous")
    if ctx.blueprint.is_job:
        name = job_name(ctx, args.job)
        return ctx.oc.stream("logs", job_logs_args(ctx, name, args.follow) + opts, what=f"read the logs of {name}")
    if args.job:
        raise UserError(f"{ctx.name} does not run jobs; logs takes no job name here")
    if ctx.dry_run:
        ctx.oc.call("get", ["pods", "-l", ctx.selector(), "-o", "json"])
        pod = "<newest pod>"
    else:
        pods = [p for p in ctx.pods() if not p["metadata"].get("deletionTimestamp")]
        if not pods:
            raise UserError(f"no pod of {ctx.name} in {ctx.where}", hint=f"deploy it with {ctx.script('deploy.sh')}")
        ready = [p for p in pods if diagnose.is_ready(p)] or pods
        pod = sorted(ready, key=lambda p: p["metadata"].get("creationTimestamp", ""))[-1]["metadata"]["name"]
    return ctx.oc.stream("logs", [f"pod/{pod}", "-c", ctx.blueprint.container_name, *(["-f"] if args.follow else []), *opts],
                         what="read the logs")


# --------------------------------------------------------------------------- sweep, compare
def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _combination(parameters: dict[str, list[Any]], index: int) -> dict[str, Any]:
    """Combination `index` of the grid, in itertools.product order (the last parameter changes fastest)."""
    picks = []
    for values in reversed(list(parameters.values())):
        index, digit = divmod(index, len(values))
        picks.append(values[digit])
    return dict(zip(parameters, reversed(picks)))


def _distinct(rng: random.Random, total: int, count: int) -> list[int]:
    """`count` different whole numbers below `total`, in the order drawn; work grows with count only."""
    if 2 * count > total:  # then total < 2 * count: drawing from all of them is as cheap
        return rng.sample(range(total), count)
    drawn: dict[int, None] = {}
    while len(drawn) < count:
        drawn[rng.randrange(total)] = None
    return list(drawn)


def sweep_trials(parameters: dict[str, list[Any]], method: str, count: int | None,
                 seed: int | None = None) -> list[dict[str, Any]]:
    """The parameter values of each run of a sweep, found without listing the grid.

    Combination i of the grid is i written in the mixed radix of the value counts. A grid runs
    the first `count` combinations (all when None); a random sweep runs `count` distinct
    combinations drawn with random.Random(seed), so the same seed gives the same runs. Either
    way the cost grows with the runs returned, never with the size of the grid.
    """
    total = math.prod(len(values) for values in parameters.values())
    count = total if count is None else min(count, total)
    indices = _distinct(random.Random(seed), total, count) if method == "random" else range(count)
    return [_combination(parameters, i) for i in indices]


def sweep_runs(ctx: Operation, max_runs: int | None, seed: int | None) -> list[Run]:
    sweep = ctx.config.experiment.sweep
    if sweep is None or not sweep.parameters:
        raise UserError("config.yaml has no experiment.sweep.parameters",
                        hint="add e.g. experiment: {sweep: {parameters: {lr: [0.001, 0.01]}}} and re-run")
    if sweep.method == "bayes":
        raise UserError("bayes sweeps need a search agent (a W&B sweep), which is not available here yet",
                        hint="use experiment.sweep.method: grid or random")
    if max_runs is not None and max_runs > MAX_SWEEP_RUNS:
        raise UserError(f"--max-runs: {max_runs:,} is more than the {MAX_SWEEP_RUNS:,} jobs one sweep may submit")
    base = ctx.blueprint.user_argv
    runs = []
    for params in sweep_trials(sweep.parameters, sweep.method, max_runs or sweep.max_runs, seed):
        words = list(base)
        for n, v in params.items():
            for part in sweep.flag_format.split():
                words.append(part.replace("{name}", n).replace("{value}", _word(v)))
        runs.append(Run(args=words, params=params))
    return runs


def sweep(ctx: Operation, args) -> int:
    runs = sweep_runs(ctx, args.max_runs, args.seed)
    for r in runs:
        r.sets = list(args.set or [])
    sweep_id = new_id()
    if ctx.dry_run:
        return _sweep_dry_run(ctx, runs, sweep_id, show_jobs=args.yaml, no_sync=args.no_sync)
    names = submit_runs(ctx, runs, sweep_id=sweep_id, no_sync=args.no_sync)
    ctx.say(f"Sweep {sweep_id}: submitted {len(names)} jobs")
    for n, r in zip(names, runs):
        ctx.say(f"  {n}  " + " ".join(f"{k}={_word(v)}" for k, v in (r.params or {}).items()))
    par = ctx.config.experiment.parallelism
    if par < len(names):
        ctx.say(f"note: all {len(names)} are submitted at once; the project's quota decides how many run together "
            f"(experiment.parallelism {par} is not enforced yet)")
    ctx.say(f"  list them:  {ctx.script('list-jobs.sh')} --sweep {sweep_id}")
    ctx.say(f"  compare:    {ctx.script('compare-experiments.sh')} --sweep {sweep_id}")
    return 0


def _sweep_dry_run(ctx: Operation, runs: list[Run], sweep_id: str, *, show_jobs: bool, no_sync: bool = False) -> int:
    """A sweep's dry run: first a table of its runs, then the oc commands. The Jobs themselves
    (a hundred lines of YAML each) only with ``show_jobs`` (--yaml); else the create is one comment."""
    import contextlib
    import io

    from .oc import HEREDOC_END

    printed, out = io.StringIO(), ctx.oc.out
    ctx.oc.out = printed
    try:
        with contextlib.redirect_stdout(printed):  # its notes too, in their order after the table
            names = submit_runs(ctx, runs, sweep_id=sweep_id, no_sync=no_sync)
    finally:
        ctx.oc.out = out
    params = list(dict.fromkeys(k for r in runs for k in (r.params or {})))
    rows = [("NAME", *params)] + [(n, *(_word((r.params or {}).get(k, "")) for k in params)) for n, r in zip(names, runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    ctx.say(f"Sweep {sweep_id}: {len(names)} run{'s' if len(names) != 1 else ''} (the names are drawn again when it is submitted)")
    for row in rows:
        ctx.say("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    lines: list[str] = []
    heredoc: list[str] | None = None  # the command given a document on its stdin, and the document
    for line in printed.getvalue().splitlines():
        if heredoc is None:
            if line.endswith(f" <<'{HEREDOC_END}'"):
                heredoc = [line]
            else:
                lines.append(line)
            continue
        heredoc.append(line)
        if line != HEREDOC_END:
            continue
        if show_jobs or not any(text.strip() == "kind: Job" for text in heredoc):
            lines += heredoc
        else:  # the create of the Jobs
            command = heredoc[0][: -len(f" <<'{HEREDOC_END}'")]
            lines.append(f"# {command}   (its input: the {len(names)} Job(s) above; --yaml prints them)")
        heredoc = None
    out.write("".join(line + "\n" for line in lines + (heredoc or [])))
    out.flush()
    return 0


def metric_value(text: str, metric: str) -> float | None:
    pat = re.compile(r"(?<![\w.])" + re.escape(metric) + r"\s*[:=]\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")
    found = pat.findall(text)
    if not found:
        return None
    try:
        return float(found[-1])
    except ValueError:
        return None


def compare(ctx: Operation, args) -> int:
    ctx.check_session()
    sweep_id = args.sweep
    items = list_jobs(ctx, sweep_id)
    if ctx.dry_run:
        ctx.oc.note("then, for each job: its last log lines, for the metrics")
        ctx.oc.call("logs", ["job/<each job>", "-c", ctx.blueprint.container_name, "--tail=500"])
        return 0
    if not sweep_id:
        sweeps = sorted({(j["metadata"].get("labels") or {}).get(SWEEP_LABEL) for j in items} - {None})
        if sweeps:
            sweep_id = sweeps[-1]
            items = [j for j in items if (j["metadata"].get("labels") or {}).get(SWEEP_LABEL) == sweep_id]
    if not items:
        ctx.say(f"No jobs of {ctx.name} to compare.")
        return 0
    cfg = ctx.config
    metrics = list(args.metric or []) or list(dict.fromkeys(
        ([cfg.experiment.sweep.metric] if cfg.experiment.sweep and cfg.experiment.sweep.metric else []) + list(cfg.monitoring.metrics)))
    params: list[str] = []
    rows_data = []
    for j in items:
        meta = j["metadata"]
        try:
            p = json.loads((meta.get("annotations") or {}).get(PARAMS_ANNOTATION, "{}"))
        except ValueError:
            p = {}
        params += [k for k in p if k not in params]
        values: dict[str, float | None] = {}
        if metrics:
            ans = ctx.oc.call("logs", [f"job/{meta['name']}", "-c", ctx.blueprint.container_name, "--tail=500"], check=False)
            for m in metrics:
                values[m] = metric_value(ans.out, m) if ans.ok else None
        rows_data.append((meta["name"], job_state(j), p, values))
    if metrics and cfg.experiment.sweep and cfg.experiment.sweep.metric in metrics:
        key = cfg.experiment.sweep.metric
        sign = -1 if cfg.experiment.sweep.goal == "maximize" else 1
        rows_data.sort(key=lambda r: (r[3].get(key) is None, sign * (r[3].get(key) or 0.0)))
    ctx.say(f"Sweep {sweep_id}:" if sweep_id else f"Jobs of {ctx.name}:")
    rows = [("NAME", "STATE", *params, *metrics)]
    for name, state, p, values in rows_data:
        rows.append((name, state, *(_word(p.get(k, "")) for k in params),
                     *("" if values.get(m) is None else f"{values[m]:g}" for m in metrics)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        ctx.say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if not metrics:
        ctx.say("(set experiment.sweep.metric or monitoring.metrics, or pass --metric NAME, to read metrics from the logs)")
    return 0
