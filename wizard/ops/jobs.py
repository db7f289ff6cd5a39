"""submit (one job or a batch in one request), watch, jobs, logs and sweep (compare: wizard/ops/compare.py)."""

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

from ..blueprint import DNS_SUBDOMAIN_MAX, LABEL_PREFIX, Blueprint, k8s_escape, object_name, trial_identity
from ..config import MAX_SWEEP_RUNS, Config
from ..errors import OcError, UserError
from ..loader import apply_sets
from ..render import (CONFIG_FILE, JobSubmission, object_list, read_trial_file, render_job, render_object,
                      trial_command, trial_file, trial_tables, with_env)
from . import diagnose
from .base import (ARGS_ANNOTATION, CONFIG_ANNOTATION, SETS_ANNOTATION, SUBMISSION_LABEL, SWEEP_LABEL, Operation,
                   poll_seconds, sleep, warn)

ID_ALPHABET = string.ascii_lowercase + string.digits
PARAMS_ANNOTATION = "mlshift.io/parameters"
SNAPSHOT_LABEL = f"{LABEL_PREFIX}/snapshot"  # the snapshot of workspace/ a Job runs from (RUNS_DIR/<id>)
TRIAL_LABEL = f"{LABEL_PREFIX}/trial"  # a multi-node sweep's trial Job: its index
SWEEP_ANNOTATION = f"{LABEL_PREFIX}/sweep"  # on a sweep's Job(s): method, trials, seed, parameters, W&B sweep
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"  # an Indexed Job's pod: its index
PER_INDEX_RETRIES = 29  # backoffLimitPerIndex: on by default from Kubernetes 1.29 (OpenShift 4.16)
# A trial's run variables that differ from trial to trial: in its file of the table (the rest of
# blueprint.trial_identity is the same for every trial, in the container's environment).
PER_TRIAL_VARS = ("MLSHIFT_RUN", "MLSHIFT_RUN_NAME", "MLSHIFT_PARAMS", "MLSHIFT_RESULTS", "MLSHIFT_MODEL_DIR", "WANDB_NAME",
                  "WANDB_RUN_ID")


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
    env: dict[str, str] | None = None  # run variables of its own (a multi-node sweep's trial: MLSHIFT_RUN, ...)
    trial: int | None = None  # its index in a multi-node sweep (the label mlshift.io/trial)


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
        if run.trial is not None:
            labels[TRIAL_LABEL] = str(run.trial)
        return blueprint, JobSubmission(name=blueprint.job_name(sub_id), labels=labels, annotations=annotations,
                                        config_annotation=CONFIG_ANNOTATION,
                                        env=with_env(blueprint.env, run.env) if run.env else None)


def check_deployed(ctx: Operation) -> str:
    """The shared objects exist (one request): otherwise the pods would wait forever. Returns the
    workspace volume's uid ("" in a dry run), which tells a volume created again from the old one."""
    blueprint = ctx.blueprint
    wanted = [f"persistentvolumeclaim/{blueprint.workspace_claim}"]
    if blueprint.build:
        wanted.append(f"imagestreamtag/{ctx.name}:latest")
    if blueprint.model_store:
        wanted.append(f"persistentvolumeclaim/{blueprint.model_store.claim}")
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
    if blueprint.model_store and blueprint.model_store.claim not in found:
        raise UserError(f"the model store {blueprint.model_store.claim} does not exist in {ctx.where}",
                        hint=f"run {ctx.script('deploy.sh')} (it creates it)")
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
    from .tracking import at_submit  # W&B: mode auto decided (one `oc get secret`), online refused without its Secret
    at_submit(ctx, [factory.config(r.sets) for r in runs])
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


# --------------------------------------------------------------------------- a sweep as one line
def index_set(text: str | None) -> set[int]:
    """Indexes as an Indexed Job's status writes them: "1,3-5,7"."""
    out: set[int] = set()
    for part in (text or "").split(","):
        first, _, last = part.strip().partition("-")
        try:
            out.update(range(int(first), int(last or first) + 1))
        except ValueError:
            continue
    return out


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _finished(state: str) -> bool:
    return state.startswith(("Succeeded", "Failed"))


@dataclass
class SweepView:
    """A sweep, seen from its Job(s): the Indexed Job of its trials, or one Job per trial (multi-node
    trials; sweeps submitted before trials were indexes). Counts come from the Jobs' status."""

    sweep_id: str
    jobs: list[dict[str, Any]]

    @property
    def indexed(self) -> dict[str, Any] | None:
        for j in self.jobs:
            if (j.get("spec") or {}).get("completionMode") == "Indexed" and TRIAL_LABEL not in _labels(j) \
                    and SWEEP_ANNOTATION in ((j.get("metadata") or {}).get("annotations") or {}):
                return j
        return None

    @property
    def name(self) -> str:
        job = self.indexed
        if job is not None:
            return job["metadata"]["name"]
        return f"{self.sweep_id} ({len(self.jobs)} jobs)"

    @property
    def per_trial_retries(self) -> bool:
        job = self.indexed
        return job is None or "backoffLimitPerIndex" in (job.get("spec") or {})

    def state(self) -> str:
        job = self.indexed
        if job is not None:
            return job_state(job)
        states = [job_state(j) for j in self.jobs]
        if all(_finished(s) for s in states):
            return "Succeeded" if all(s == "Succeeded" for s in states) else "Failed"
        return "Running" if any(s == "Running" for s in states) else "Pending"

    def counts(self) -> dict[str, int]:
        """total, done, running, failed (trials), attempts (failed pods, of an Indexed Job)."""
        job = self.indexed
        if job is not None:
            st, spec = job.get("status") or {}, job.get("spec") or {}
            done = len(index_set(st.get("completedIndexes"))) if st.get("completedIndexes") else int(st.get("succeeded") or 0)
            return {"total": int(spec.get("completions") or 0), "done": done, "running": int(st.get("active") or 0),
                    "failed": len(index_set(st.get("failedIndexes"))), "attempts": int(st.get("failed") or 0)}
        states = [job_state(j) for j in self.jobs]
        return {"total": len(self.jobs), "done": states.count("Succeeded"),
                "running": sum(1 for j, s in zip(self.jobs, states) if not _finished(s) and (j.get("status") or {}).get("active")),
                "failed": sum(1 for s in states if s.startswith("Failed")), "attempts": 0}

    def line(self) -> str:
        """e.g. 3/27 done, 4 running, 1 failed, 19 waiting."""
        c = self.counts()
        rest = max(0, c["total"] - c["done"] - c["running"] - c["failed"])
        text = f"{c['done']}/{c['total']} done, {c['running']} running, {c['failed']} failed, {rest} " + (
            "not run" if _finished(self.state()) else "waiting")
        if not self.per_trial_retries and c["attempts"]:
            spec = (self.indexed or {}).get("spec") or {}
            text += f"; {c['attempts']} failed attempt(s) of the {spec.get('backoffLimit', 0)} the trials share"
        return text

    def failed_trials(self) -> list[int]:
        job = self.indexed
        if job is not None:
            return sorted(index_set((job.get("status") or {}).get("failedIndexes")))
        return sorted(int(_labels(j).get(TRIAL_LABEL, -1)) for j in self.jobs if job_state(j).startswith("Failed"))

    def started(self) -> float | None:
        stamps = [_when((j.get("status") or {}).get("startTime")) for j in self.jobs]
        return min((s for s in stamps if s is not None), default=None)

    def took(self) -> str:
        """' after 1h02m', from the first start to the last completion (or now)."""
        start = self.started()
        if start is None:
            return ""
        ends = [_when((j.get("status") or {}).get("completionTime")) for j in self.jobs]
        end = max((e for e in ends if e is not None), default=None) if _finished(self.state()) else None
        secs = int((end or time.time()) - start)
        return f" after {secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f" after {secs // 60}m{secs % 60:02d}s"


def _when(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def group_jobs(items: list[dict[str, Any]]) -> list[dict[str, Any] | SweepView]:
    """Jobs in name order, the Jobs of one sweep together as one :class:`SweepView` (where its first is)."""
    out: list[dict[str, Any] | SweepView] = []
    sweeps: dict[str, SweepView] = {}
    for j in sorted(items, key=lambda j: j["metadata"]["name"]):
        sweep_id = _labels(j).get(SWEEP_LABEL)
        if not sweep_id:
            out.append(j)
        elif sweep_id in sweeps:
            sweeps[sweep_id].jobs.append(j)
        else:
            sweeps[sweep_id] = SweepView(sweep_id, [j])
            out.append(sweeps[sweep_id])
    return out


def read_trial_tables(ctx: Operation, sweep_id: str | None = None) -> dict[str, dict[int, tuple[list[str], dict[str, str]]]]:
    """The tables of trials of this application's sweeps (one request): sweep id -> index -> (arguments, variables)."""
    sel = f"{ctx.instance_selector},{SWEEP_LABEL}" + (f"={sweep_id}" if sweep_id else "")
    items = ctx.oc.get_json(["configmaps", "-l", sel], what="read the sweeps' tables of trials").get("items", [])
    out: dict[str, dict[int, tuple[list[str], dict[str, str]]]] = {}
    for cm in items:
        table = out.setdefault(_labels(cm).get(SWEEP_LABEL, ""), {})
        for key, text in ((cm.get("data") or {}).items()):
            if key.isdigit():
                table[int(key)] = read_trial_file(text)
    return out


def sweep_pods(ctx: Operation, sweep_id: str | None = None) -> list[dict[str, Any]]:
    """The pods of this application's sweeps (one request)."""
    return ctx.pods(f"{ctx.selector('job')},{SWEEP_LABEL}" + (f"={sweep_id}" if sweep_id else ""))


def _params_text(params: dict[str, Any] | None) -> str:
    if params is None:
        return "(chosen by the W&B agent)"
    return " ".join(f"{k}={_word(v)}" for k, v in params.items()).replace("\n", "\\n")


def trial_rows(view: SweepView, pods: list[dict[str, Any]],
               table: dict[int, tuple[list[str], dict[str, str]]]) -> list[tuple[str, ...]]:
    """One row per trial: TRIAL, RUN, STATE, POD, PARAMETERS."""
    rows: list[tuple[str, ...]] = [("TRIAL", "RUN", "STATE", "POD", "PARAMETERS")]
    finished = _finished(view.state())

    def newest(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
        return max(candidates, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""), default=None)

    job = view.indexed
    if job is not None:
        name = job["metadata"]["name"]
        st = job.get("status") or {}
        done, failed = index_set(st.get("completedIndexes")), index_set(st.get("failedIndexes"))
        mine = [p for p in pods if _labels(p).get("batch.kubernetes.io/job-name", _labels(p).get("job-name")) == name]
        by_index: dict[int, list[dict[str, Any]]] = {}
        for p in mine:
            i = ((p.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
            if i is not None and str(i).isdigit():
                by_index.setdefault(int(i), []).append(p)
        for i in range((job.get("spec") or {}).get("completions") or 0):
            args, env = table.get(i, ([], {}))
            pod = newest(by_index.get(i, []))
            tries = sum(1 for p in by_index.get(i, []) if (p.get("status") or {}).get("phase") == "Failed")
            if i in done:
                state = "Succeeded"
            elif i in failed:
                state = "Failed"
            elif pod is not None and not finished:
                state = diagnose.phase(pod) + (f" (try {tries + 1})" if tries else "")
            else:
                state = "Not run" if finished else "Waiting"
            params = json.loads(env["MLSHIFT_PARAMS"]) if "MLSHIFT_PARAMS" in env else None
            rows.append((str(i), env.get("MLSHIFT_RUN", f"{view.sweep_id}-{i:03d}"), state,
                         (pod or {}).get("metadata", {}).get("name", ""), _params_text(params)))
        return rows
    # one Job per trial: its index is its label (a sweep from before trials were indexes: its place by name)
    ordered = sorted(enumerate(sorted(view.jobs, key=lambda j: j["metadata"]["name"])),
                     key=lambda p: int(_labels(p[1]).get(TRIAL_LABEL, p[0])))
    for position, j in ordered:
        i = int(_labels(j).get(TRIAL_LABEL, position))
        try:
            params = json.loads(((j.get("metadata") or {}).get("annotations") or {}).get(PARAMS_ANNOTATION, "{}"))
        except ValueError:
            params = {}
        pod = newest([p for p in pods if _labels(p).get("batch.kubernetes.io/job-name", _labels(p).get("job-name")) == j["metadata"]["name"]])
        rows.append((str(i), f"{view.sweep_id}-{i:03d}", job_state(j), j["metadata"]["name"] if pod is None else
                     (pod.get("metadata") or {}).get("name", ""), _params_text(params)))
    return rows


def table_lines(rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def say_trials(ctx: Operation, views: list[SweepView], pods: list[dict[str, Any]],
               tables: dict[str, dict[int, tuple[list[str], dict[str, str]]]]) -> None:
    for view in views:
        ctx.say(f"Sweep {view.sweep_id} ({view.name}), {view.state()}: {view.line()}")
        for line in table_lines(trial_rows(view, pods, tables.get(view.sweep_id, {}))):
            ctx.say(line)


def job_name(ctx: Operation, ident: str | None) -> str:
    """A job's full name from what the user typed: the name, the submission id, or nothing (newest)."""
    if ident and ident not in ("latest", "last"):
        prefix = ctx.blueprint.job_prefix
        scheduled = ctx.blueprint.schedule and ident.startswith(ctx.blueprint.cronjob_name + "-")  # <cronjob>-<minutes>
        return ident if ident.startswith(prefix + "-") or scheduled else f"{prefix}-{ident}"
    if ctx.dry_run:
        ctx.oc.call("get", ["jobs", "-l", ctx.selector("job"), "-o", "json"])
        return f"{ctx.blueprint.job_prefix}-<newest>"
    jobs = ctx.oc.get_json(["jobs", "-l", ctx.selector("job")], what="list the jobs").get("items", [])
    if not jobs:
        raise UserError(f"no jobs of {ctx.name} in {ctx.where}", hint=f"submit one with {ctx.script('submit-job.sh')}")
    # The newest by creation: a scheduled run's name (<cronjob>-<minutes>) does not sort with submissions'.
    return max(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]))["metadata"]["name"]


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
        ctx.oc.note("(a sweep: its Job(s) by the label mlshift.io/sweep, until every trial has ended)")
        return 0
    sweep_id = _sweep_of(ctx, name, args.job)
    if sweep_id:
        return _watch_sweep(ctx, sweep_id, args)
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
        if any(diagnose.started(p) for p in pods):
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


def _sweep_of(ctx: Operation, name: str, ident: str | None) -> str | None:
    """The sweep the job to watch belongs to, if any; ``ident`` may also be a sweep's id."""
    try:
        job = get_job(ctx, name)
    except UserError:
        if ident and list_jobs(ctx, ident):  # the id of a sweep of multi-node trials (one Job each)
            return ident
        raise
    return _labels(job).get(SWEEP_LABEL)


def _watch_sweep(ctx: Operation, sweep_id: str, args) -> int:
    """Follow a sweep as one line of counts until every trial has ended; 0 when all succeeded."""
    start = time.monotonic()
    last = ""
    view = SweepView(sweep_id, list_jobs(ctx, sweep_id))
    ctx.say(f"Watching sweep {sweep_id}: {view.name}, {view.counts()['total']} trials "
            "(Ctrl-C stops watching; the sweep goes on)")
    while True:
        state = view.state()
        line = f"{state}: {view.line()}"
        if line != last:
            ctx.say(f"[{int(time.monotonic() - start):>4}s] {line}")
            last = line
        if _finished(state):
            break
        c = view.counts()
        if not c["running"] and not c["done"]:
            failures = diagnose.creation_failures(ctx.events(), [j["metadata"]["name"] for j in view.jobs])
            if failures:
                q = diagnose.quota_line(failures[-1])
                raise UserError(q or f"the sweep's pods cannot be created: {failures[-1]}",
                                hint=f"free the quota or ask for less; the sweep waits (delete it with: oc delete jobs -l {SWEEP_LABEL}={sweep_id})")
        if args.timeout and time.monotonic() - start > args.timeout:
            raise UserError(f"sweep {sweep_id} is still running after {args.timeout}s: {view.line()}",
                            hint="watch again later; the sweep goes on")
        sleep(poll_seconds())
        view = SweepView(sweep_id, list_jobs(ctx, sweep_id))
    if getattr(args, "trials", False):
        say_trials(ctx, [view], sweep_pods(ctx, sweep_id), read_trial_tables(ctx, sweep_id))
    c = view.counts()
    if state == "Succeeded":
        ctx.say(f"Sweep {sweep_id} succeeded{view.took()}: {c['done']}/{c['total']} trials done.")
        return 0
    failed = view.failed_trials()
    which = f" (trial{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))})" if failed else ""
    warn(f"error: sweep {sweep_id} failed{view.took()}: {view.line()}{which} "
         f"(each trial: {ctx.script('list-jobs.sh')} --sweep {sweep_id} --trials)")
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
    """The application's jobs, a sweep as one line (its trials' counts); each trial with --trials."""
    ctx.check_session()
    items = list_jobs(ctx, args.sweep)
    trials = getattr(args, "trials", False)
    if trials:  # two more requests, whatever the number of trials: their pods and their tables
        pods = sweep_pods(ctx, args.sweep)
        tables = read_trial_tables(ctx, args.sweep)
    if ctx.dry_run:
        return 0
    if not items:
        ctx.say(f"No jobs of {ctx.name} in {ctx.where}" + (f" in sweep {args.sweep}" if args.sweep else "") + ".")
        return 0
    rows = [("NAME", "STATE", "DURATION", "SWEEP", "TRIALS", "ARGUMENTS")]
    entries = group_jobs(items)
    for entry in entries:
        j = entry.jobs[0] if isinstance(entry, SweepView) else entry
        meta = j["metadata"]
        try:
            argv = json.loads((meta.get("annotations") or {}).get(ARGS_ANNOTATION, "[]"))
        except ValueError:
            argv = []
        shown = shlex.join(argv).replace("\n", "\\n")
        shown = shown[:60] + ("..." if len(shown) > 60 else "")
        if isinstance(entry, SweepView):
            rows.append((entry.name, entry.state(), entry.took().replace(" after ", ""), entry.sweep_id, entry.line(), shown))
        else:
            rows.append((meta["name"], job_state(j), _duration(j).replace(" after ", ""),
                         (meta.get("labels") or {}).get(SWEEP_LABEL, ""), "", shown))
    for line in table_lines(rows, indent=""):
        ctx.say(line)
    if trials:
        say_trials(ctx, [e for e in entries if isinstance(e, SweepView)], pods, tables)
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


# --------------------------------------------------------------------------- sweep
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


@dataclass
class Trial:
    """One trial of a sweep: its index, its parameters (None: the W&B agent chooses them) and the
    arguments they add to the application's (through experiment.sweep.flag_format)."""

    index: int
    params: dict[str, Any] | None
    words: list[str]


@dataclass
class SweepPlan:
    """What one run-sweep.sh submits, decided before the cluster is touched."""

    sweep_id: str
    method: str
    trials: list[Trial]
    config: Config  # config.yaml with the sweep's --set overrides
    seed: int | None = None  # a random sweep's draw (drawn here when neither config nor --seed gives one)
    wandb_sweep: str | None = None  # bayes: entity/project/id of the W&B sweep the agents work for

    @property
    def params(self) -> list[str]:
        return list(dict.fromkeys(k for t in self.trials for k in (t.params or {})))


WANDB_MACROS = {"--{name}={value}": "${args}", "{name}={value}": "${args_no_hyphens}"}


def bayes_refusal(config: Config) -> str | None:
    """Why a bayes sweep cannot run with this config (one line naming the key), or None."""
    tr = config.experiment.tracking
    online = tr.mode == "online" or (tr.mode == "auto" and bool(config.secrets.wandb))  # auto: online with the Secret
    if not (tr.enabled and tr.backend == "wandb" and online):
        return ("experiment.tracking.mode: a bayes sweep needs W&B tracking online (a W&B sweep chooses each trial from "
                f"the results before it): set experiment.tracking enabled: true, backend: wandb, mode: online (now "
                f"enabled: {str(tr.enabled).lower()}, backend: {tr.backend}, mode: {tr.mode}"
                + (", no secrets.wandb" if tr.mode == "auto" and not config.secrets.wandb else "")
                + "), or use experiment.sweep.method: grid or random")
    sweep = config.experiment.sweep
    if sweep is not None and not sweep.metric:
        return ("experiment.sweep.metric: a bayes sweep optimises a metric: name the one your program logs to W&B "
                "(and experiment.sweep.goal)")
    if sweep is not None and sweep.flag_format not in WANDB_MACROS:
        return (f"experiment.sweep.flag_format: the W&B agent passes the parameters as --{{name}}={{value}} or "
                f"{{name}}={{value}}; {sweep.flag_format!r} is neither")
    if config.multi_node:
        return ("deployment.mode: a bayes sweep's agent runs one trial per pod; a multi-node trial needs its nodes to "
                "agree on one, which is not supported: use method: grid or random, or deployment.mode: single-node")
    return None


def plan_sweep(ctx: Operation, max_runs: int | None, seed: int | None, wandb_sweep: str | None = None,
               sets: list[str] | None = None) -> SweepPlan:
    """The sweep's trials, from experiment.sweep of config.yaml with the sweep's ``sets`` (checked:
    nothing reaches the cluster if refused)."""
    config = JobFactory(ctx).config(list(sets)) if sets else ctx.config
    sweep = config.experiment.sweep
    if sweep is None or not sweep.parameters:
        raise UserError("config.yaml has no experiment.sweep.parameters",
                        hint="add e.g. experiment: {sweep: {parameters: {lr: [0.001, 0.01]}}} and re-run")
    if max_runs is not None and max_runs > MAX_SWEEP_RUNS:
        raise UserError(f"--max-runs: {max_runs:,} is more than the {MAX_SWEEP_RUNS:,} trials one sweep may run")
    count = max_runs or sweep.max_runs
    sweep_id = new_id()
    if sweep.method == "bayes":
        if problem := bayes_refusal(config):
            raise UserError(problem)
        if wandb_sweep is not None and not re.fullmatch(r"[^/\s]+/[^/\s]+/[A-Za-z0-9]+", wandb_sweep):
            raise UserError(f"--wandb-sweep: {wandb_sweep!r} is not ENTITY/PROJECT/SWEEP_ID (as `wandb sweep` prints it)")
        return SweepPlan(sweep_id, "bayes", [Trial(i, None, []) for i in range(count or 1)], config, wandb_sweep=wandb_sweep)
    if wandb_sweep is not None:
        raise UserError("--wandb-sweep is for experiment.sweep.method: bayes (a W&B sweep's agents choose the trials)")
    if seed is None:
        seed = sweep.seed
    if sweep.method == "random" and seed is None:
        seed = secrets.randbelow(2**31)  # drawn here, so that it can be shown and the draw repeated
    trials = []
    for i, params in enumerate(sweep_trials(sweep.parameters, sweep.method, count, seed)):
        words = []
        for n, v in params.items():
            for part in sweep.flag_format.split():
                words.append(part.replace("{name}", n).replace("{value}", _word(v)))
        trials.append(Trial(i, params, words))
    return SweepPlan(sweep_id, sweep.method, trials, config, seed=seed if sweep.method == "random" else None)


def sweep_job_spec(config: Config, trials: int, profile: Any) -> tuple[dict[str, Any], str | None]:
    """The sweep's Indexed Job: completions, parallelism and retries; and a note when the cluster
    cannot retry each trial on its own (Kubernetes before 1.29, or not stated in the profile)."""
    sweep = config.experiment.sweep
    retries = sweep.retries if sweep else 1
    spec: dict[str, Any] = {"completionMode": "Indexed", "completions": trials,
                            "parallelism": min(config.experiment.parallelism, trials)}
    if profile.kubernetes_at_least(PER_INDEX_RETRIES):
        spec["backoffLimitPerIndex"] = retries
        if sweep and sweep.max_failed_trials is not None and sweep.max_failed_trials < trials:
            spec["maxFailedIndexes"] = sweep.max_failed_trials
        return spec, None
    spec["backoffLimit"] = retries * trials
    stated = f"states Kubernetes {profile.kubernetes_version}" if profile.kubernetes_version else "states no kubernetes_version"
    note = (f"note: retries per trial (backoffLimitPerIndex) need Kubernetes 1.29+ (OpenShift 4.16+) and the cluster "
            f"profile {config.deployment.cluster!r} {stated}: the {trials} trials share one budget of {retries * trials} "
            "retries (backoffLimit), and once it is spent the whole sweep stops, its running trials too")
    if sweep and sweep.max_failed_trials is not None:
        note += "; experiment.sweep.max_failed_trials is not applied"
    if not profile.kubernetes_version:
        note += " (state the cluster's version, kubernetes_version: \"1.29\", in clusters.yaml if it is newer)"
    return spec, note


def trial_table_names(blueprint: Blueprint, sweep_id: str):
    """The name of the k-th ConfigMap of a sweep's table of trials: <name>-sweep-<id>, then -2, -3..."""
    return lambda k: object_name(blueprint.name, f"sweep-{sweep_id}" + (f"-{k + 1}" if k else ""), DNS_SUBDOMAIN_MAX)


def wandb_sweep_config(blueprint: Blueprint, plan: SweepPlan) -> dict[str, Any]:
    """The W&B sweep a bayes sweep's agents work for: its parameters, metric, and the command each
    agent runs (the application's, from the sweep's snapshot, and the parameters W&B's way)."""
    sweep = blueprint.config.experiment.sweep
    return {"name": f"{blueprint.name}-{plan.sweep_id}", "method": "bayes",
            "metric": {"name": sweep.metric, "goal": sweep.goal},
            "parameters": {k: {"values": list(v)} for k, v in sweep.parameters.items()},
            "run_cap": len(plan.trials),
            "command": [*blueprint.app_argv(), WANDB_MACROS[sweep.flag_format]]}


def create_wandb_sweep(config: dict[str, Any], project: str, entity: str | None) -> str:
    """Create the W&B sweep from this machine with the W&B API; returns ENTITY/PROJECT/ID.

    Here rather than in a first pod: the sweep exists before any GPU is asked for, a refusal (no
    login, a wrong entity) is said at submit, and the agents need nothing but the sweep's path.
    """
    try:
        import wandb  # type: ignore[import-not-found]
    except ImportError:
        raise UserError("a bayes sweep is created at submit with the W&B API, and the wandb package is not installed here",
                        hint="pip install wandb, then wandb login; or create the sweep yourself and pass "
                             "--wandb-sweep ENTITY/PROJECT/ID") from None
    try:
        sweep_id = wandb.sweep(config, project=project, entity=entity)
        entity = entity or wandb.Api().default_entity
    except Exception as exc:  # the W&B client's errors have no common base
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"W&B did not create the sweep: {first}",
                        hint="check wandb login and experiment.tracking.project/entity; or pass --wandb-sweep ENTITY/PROJECT/ID") from None
    return f"{entity}/{project}/{sweep_id}"


def submit_sweep(ctx: Operation, plan: SweepPlan, sets: list[str], *, no_sync: bool = False) -> str:
    """Submit a sweep of single-node trials as ONE Indexed Job; returns its name.

    One index per trial (``completions``), ``experiment.parallelism`` at once (Kubernetes keeps
    to it), retried per trial where the cluster can. Each pod finds its trial in the table of
    trials, ConfigMaps created with it and owned by it (deleted with it): one file per index,
    read by the trial wrapper (:data:`wizard.render.TRIAL_WRAPPER`). The oc requests do not grow
    with the trials: the session, the shared objects, the snapshot's upload when workspace/
    changed, the Job, its table.
    """
    from ..files import check_destinations
    from .snapshots import SNAPSHOT_STATE, snapshot_for_jobs

    factory = JobFactory(ctx)
    blueprint = factory.blueprint(sets)  # the overrides are checked before the cluster is touched
    if blueprint.code_from_workspace:
        check_destinations(ctx.directory, [SNAPSHOT_STATE])
    elif no_sync:
        warn(f"note: --no-sync: {ctx.name} does not run code from workspace/; there is nothing to upload")
    spec, note = sweep_job_spec(blueprint.config, len(plan.trials), blueprint.profile)
    if note:
        warn(note)
    ctx.check_session()
    volume = check_deployed(ctx)
    from .tracking import at_submit  # as submit_runs: W&B mode auto decided, online refused without its Secret

    at_submit(ctx, [blueprint.config])
    agent = plan.method == "bayes"
    tr = blueprint.config.experiment.tracking
    if agent and tr.mode == "offline":
        raise UserError(f"experiment.tracking.mode: a bayes sweep needs W&B online, and mode auto was decided offline "
                        f"(the Secret {blueprint.config.secrets.wandb} is missing)",
                        hint="create that Secret (deploy.sh says how), or use experiment.sweep.method: grid or random")
    if blueprint.code_from_workspace:
        factory.run_dir = snapshot_for_jobs(ctx, new_id=plan.sweep_id, volume=volume, no_sync=no_sync)
        blueprint = factory.blueprint(sets)
    if agent:
        if plan.wandb_sweep is None:
            wandb_config = wandb_sweep_config(blueprint, plan)
            if ctx.dry_run:
                ctx.oc.note("create the W&B sweep with the W&B API, from here: " + json.dumps(wandb_config, ensure_ascii=False))
                plan.wandb_sweep = f"{tr.entity or '<entity>'}/{tr.project}/<sweep id>"
            else:
                plan.wandb_sweep = create_wandb_sweep(wandb_config, tr.project or blueprint.name, tr.entity)
        process = blueprint.started([k8s_escape(w) for w in ("wandb", "agent", "--count", "1", plan.wandb_sweep)])
    else:
        process = blueprint.container_command
    identities = [trial_identity(blueprint.config, plan.sweep_id, t.index, t.params, agent=agent) for t in plan.trials]
    shared = {k: v for k, v in identities[0].items() if k not in PER_TRIAL_VARS}
    if agent:
        shared["WANDB_MODE"] = "online"  # the agent asks the W&B sweep for each trial
    env = with_env([e for e in blueprint.env if e.get("name") not in PER_TRIAL_VARS], shared)
    files = [trial_file(t.words, {k: v for k, v in ident.items() if k in PER_TRIAL_VARS})
             for t, ident in zip(plan.trials, identities)]
    tables = trial_tables(files, trial_table_names(blueprint, plan.sweep_id))
    name = blueprint.job_name(plan.sweep_id)
    labels = {SUBMISSION_LABEL: plan.sweep_id, SWEEP_LABEL: plan.sweep_id}
    if blueprint.run_dir:
        labels[SNAPSHOT_LABEL] = posixpath.basename(blueprint.run_dir)
    summary: dict[str, Any] = {"method": plan.method, "trials": len(plan.trials), "parameters": plan.params}
    if plan.seed is not None:
        summary["seed"] = plan.seed
    if plan.wandb_sweep:
        summary["wandb_sweep"] = plan.wandb_sweep
    annotations = {ARGS_ANNOTATION: json.dumps(blueprint.user_argv, ensure_ascii=False),
                   SWEEP_ANNOTATION: json.dumps(summary, ensure_ascii=False)}
    if sets:
        annotations[SETS_ANNOTATION] = json.dumps(sets, ensure_ascii=False)
    job = render_job(blueprint, JobSubmission(
        name=name, labels=labels, annotations=annotations, config_annotation=CONFIG_ANNOTATION, spec=spec,
        command=trial_command(process), env=env, trial_tables=tuple(t for t, _ in tables)))
    ans = ctx.oc.call("create", ["-f", "-", "-o", "json"], stdin=object_list([job]), what="create the sweep's job",
                      timeout=300, dry_answer=json.dumps({"metadata": {"name": name, "uid": "<the job's uid>"}}))
    created = ans.json()
    items = created.get("items", []) if created.get("kind") == "List" else [created]
    uid = next((str((i.get("metadata") or {}).get("uid") or "") for i in items), "")
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "blockOwnerDeletion": False}
    maps = []
    for table, data in tables:
        meta: dict[str, Any] = {"name": table}
        if blueprint.namespace:
            meta["namespace"] = blueprint.namespace
        meta["labels"] = {**blueprint.labels("sweep-trials"), SWEEP_LABEL: plan.sweep_id}
        if uid:
            meta["ownerReferences"] = [owner]
        maps.append(render_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}))
    try:
        ctx.oc.call("create", ["-f", "-", "-o", "name"], stdin=object_list(maps), what="create the sweep's table of trials",
                    timeout=300)
    except OcError:
        # without its table no trial can start: take the Job back rather than leave pods waiting
        ctx.oc.call("delete", ["job", name, "--ignore-not-found", "--wait=false"], check=False)
        warn(f"note: the sweep's Job {name} is deleted again: without its table of trials no trial can start")
        raise
    return name


def sweep_table(plan: SweepPlan) -> list[str]:
    """The short table of a sweep's trials: index, run id, the parameters' values."""
    params = plan.params
    rows = [("TRIAL", "RUN", *params)]
    rows += [(str(t.index), f"{plan.sweep_id}-{t.index:03d}", *(_word((t.params or {}).get(k, "")) for k in params))
             for t in plan.trials]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def sweep_heading(plan: SweepPlan) -> str:
    n, config = len(plan.trials), plan.config
    if plan.method == "grid":
        how = f"the grid's first {n}" if n < config.experiment.sweep.size else "the whole grid"
    elif plan.method == "random":
        how = f"drawn at random, seed {plan.seed}"
    else:
        how = "each chosen by the W&B agent, bayes"
    par = min(config.experiment.parallelism, n)
    if config.multi_node:
        where = f"one Indexed Job of {config.deployment.num_nodes} pods per trial"
    else:
        where = f"one Indexed Job, {par} at a time"
    return f"Sweep {plan.sweep_id}: {n} trial{'s' if n != 1 else ''} ({how}), {where}"


def sweep(ctx: Operation, args) -> int:
    sets = list(args.set or [])
    plan = plan_sweep(ctx, args.max_runs, args.seed, getattr(args, "wandb_sweep", None), sets)
    if ctx.dry_run:
        return _sweep_dry_run(ctx, plan, sets, show_jobs=args.yaml, no_sync=args.no_sync)
    if plan.config.multi_node:
        names = _submit_multi_node(ctx, plan, sets, no_sync=args.no_sync)
        ctx.say(sweep_heading(plan) + f": {len(names)} Jobs created")
    else:
        name = submit_sweep(ctx, plan, sets, no_sync=args.no_sync)
        ctx.say(sweep_heading(plan) + f": {name}")
    if plan.method != "bayes":
        for line in sweep_table(plan):
            ctx.say(line)
    else:
        ctx.say(f"  W&B sweep: {plan.wandb_sweep} (each pod runs: wandb agent --count 1 {plan.wandb_sweep}; "
                "a retried index runs a new trial)")
    if plan.seed is not None:
        ctx.say(f"  the same trials again: {ctx.script('run-sweep.sh')} --seed {plan.seed}")
    ctx.say(f"  follow it:   {ctx.script('watch-job.sh')} {plan.sweep_id}")
    ctx.say(f"  its trials:  {ctx.script('list-jobs.sh')} --sweep {plan.sweep_id} --trials")
    ctx.say(f"  compare:     {ctx.script('compare-experiments.sh')} --sweep {plan.sweep_id}")
    return 0


def _multi_node_runs(ctx: Operation, plan: SweepPlan, sets: list[str]) -> list[Run]:
    base = plan.config.application.execution.argv()
    return [Run(sets=list(sets), args=[*base, *t.words], params=t.params, trial=t.index,
                env=trial_identity(plan.config, plan.sweep_id, t.index, t.params)) for t in plan.trials]


def _submit_multi_node(ctx: Operation, plan: SweepPlan, sets: list[str], *, no_sync: bool = False) -> list[str]:
    """A sweep of multi-node trials: one Indexed Job per trial (the index is the node's rank), all
    created in one request. Nothing queues them: every trial asks for its nodes at once."""
    cfg = plan.config
    n, nodes = len(plan.trials), cfg.deployment.num_nodes or 2
    gpus = f", {n * nodes * cfg.resources.gpus} GPUs in all" if cfg.resources.gpus else ""
    warn(f"note: without a queue all {n} trials ask for their {nodes} nodes each at once ({n * nodes} pods{gpus}), "
         "whatever experiment.parallelism says; the ones that do not fit wait Pending (queueing comes later)")
    return submit_runs(ctx, _multi_node_runs(ctx, plan, sets), sweep_id=plan.sweep_id, no_sync=no_sync)


def _sweep_dry_run(ctx: Operation, plan: SweepPlan, sets: list[str], *, show_jobs: bool, no_sync: bool = False) -> int:
    """A sweep's dry run: first the short table of its trials, then the oc commands. The objects
    created (the Job, its table of trials: long YAML) only with ``show_jobs`` (--yaml); otherwise
    each create is one comment."""
    import contextlib
    import io

    from .oc import HEREDOC_END

    printed, out = io.StringIO(), ctx.oc.out
    ctx.oc.out = printed
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):  # its notes, after the table
            if plan.config.multi_node:
                _submit_multi_node(ctx, plan, sets, no_sync=no_sync)
            else:
                submit_sweep(ctx, plan, sets, no_sync=no_sync)
    finally:
        ctx.oc.out = out
    ctx.say(sweep_heading(plan) + " (the ids are drawn again when it is submitted)")
    for line in (sweep_table(plan) if plan.method != "bayes" else []):
        ctx.say(line)
    lines: list[str] = []
    heredoc: list[str] | None = None  # the command given a document on its stdin, and the document
    for line in printed.getvalue().splitlines():
        if heredoc is None:
            if line.endswith(f" <<'{HEREDOC_END}'"):
                heredoc = [line]
            else:
                lines.append(line if line.startswith("#") or line.startswith("oc ") or not line else "# " + line)
            continue
        heredoc.append(line)
        if line != HEREDOC_END:
            continue
        kinds = [text[len("  kind: "):] for text in heredoc if text in ("  kind: Job", "  kind: ConfigMap")]  # a List's items
        if show_jobs or not kinds:
            lines += heredoc
        else:
            command = heredoc[0][: -len(f" <<'{HEREDOC_END}'")]
            what = ("the sweep's Indexed Job" if kinds == ["Job"] else f"the {len(kinds)} Indexed Jobs of its trials"
                    if "Job" in kinds else f"the table of {len(plan.trials)} trials, {len(kinds)} ConfigMap(s)")
            lines.append(f"# {command}   (its input: {what}; --yaml prints it)")
        heredoc = None
    out.write("".join(line + "\n" for line in lines + (heredoc or [])))
    out.flush()
    return 0
