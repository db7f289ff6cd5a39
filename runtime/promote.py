"""Promotion: the best run's model served by another deployment.

Two callers make the same decision and the same change: ``python -m runtime promote`` in a pod (a
scheduled loop: it talks to the Kubernetes API with the pod's ServiceAccount, :class:`KubeApi`),
and ``scripts/promote.sh`` from a checkout (``wizard/ops/promote.py``, through ``oc``).

- :func:`pick`: the best **finished** run by the best value it reached of the metric (ties: the
  newest), and its model folder (:func:`model_folder`: its record's ``model_dir``, else
  ``<models root>/<run id>``).
- :func:`read_served` and :func:`is_better`: what the serving Deployment serves now (its container's
  ``RUNTIME_MODEL``) and the promotion that put it there (the annotation ``mlshift.io/promoted``:
  JSON with model, run, metric, value, goal, at, previous); the candidate is better when its value
  beats the served one's. No promotion, or one by another metric, counts as better; a model chosen
  by hand (``promote.sh --model``) is left to the person who chose it.
- :func:`patch_body`: one strategic-merge patch of the serving Deployment: the annotation and the
  container's ``RUNTIME_MODEL`` (containers and their env are merged by name). A changed pod
  template makes Kubernetes roll the Deployment out. It is refused when the serving Deployment
  does not mount the volume the model folder is on (the model store).
- :func:`decide`: the whole decision, the one flow both callers follow: the best run (or a model
  chosen by hand), what is served, whether it is better, and the action (``promote``, ``keep``
  under --if-better, ``same`` when it is served already) with the record, the patch, the undo
  command and the lines to say (:class:`Decision`). Each caller does only its own reading and
  writing around it: the pod reads the records on the volume and talks to the API (:class:`KubeApi`),
  ``promote.sh`` reads the runs as compare does, talks through ``oc`` and updates its checkout.

Standard library only (and the runtime's settings): the pod needs no Kubernetes client.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import posixpath
import ssl
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeFailure, UsageError
from runtime import records
from runtime.records import Run, goal_of, ranked
from runtime.pod import MODEL_ENV, SERVICE_ACCOUNT_DIR, STORE_CLAIM, STORE_MOUNT
from runtime.settings import PromoteSettings, checked

PROMOTED_ANNOTATION = "mlshift.io/promoted"
WORKSPACE = "/workspace"  # where the workspace volume is mounted (wizard/paths.py WORKSPACE_MOUNT)
MODELS_ROOT_ENV = "MLSHIFT_MODELS_ROOT"  # <models root> of the application, in its pods
PATCH_TYPE = "application/strategic-merge-patch+json"
API_TIMEOUT = 30  # seconds for one request to the Kubernetes API


class ApiError(RuntimeFailure):
    """The Kubernetes API refused or could not be reached; the message is one line."""


# --------------------------------------------------------------------------- goals and numbers


def metric_and_goal(metric: str | None, goal: str | None, settings: PromoteSettings | None,
                    sweep_metric: str | None, sweep_goal: str | None) -> tuple[str | None, str]:
    """The metric to rank by and its goal: the flag's, else experiment.promote's, else
    experiment.sweep's (the goal: min when none says)."""
    return (metric or (settings.metric if settings else None) or sweep_metric,
            goal_of(goal or (settings.goal if settings else None) or sweep_goal))


def num(value: float | None) -> str:
    return records.num(value, missing="?")


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


# --------------------------------------------------------------------------- the candidate
@dataclass
class Candidate:
    """The run to promote: its best value of the metric, the step it reached it at, its model folder."""

    run: Run
    metric: str
    goal: str  # min or max
    value: float
    step: int
    model: str
    notes: list[str] = field(default_factory=list)  # better runs left out, and why


def model_folder(run: Run, models_root: str | None) -> str | None:
    """Where ``run`` saved its model: its record's ``model_dir``, else ``<models root>/<run id>``.
    None when neither names a folder in the pods: no models root, or a ``model_dir`` that is not
    an absolute path (a record written by hand)."""
    if run.model_dir:
        folder = posixpath.normpath(run.model_dir)
        return folder if folder.startswith("/") else None
    if models_root:
        return posixpath.join(models_root.rstrip("/") or "/", run.id)
    return None


def rank(runs: Iterable[Run], metric: str, goal: str) -> list[Run]:
    """The finished runs that have ``metric``, best first as compare ranks them
    (:func:`runtime.records.ranked`: by the best value each reached; ties: the newest first). One-line refusals: no run has the metric, none of those that have it finished."""
    goal = goal_of(goal)
    runs = list(runs)
    have = [r for r in runs if r.best(metric, goal) is not None]
    if not have:
        known = sorted({m for r in runs for m in r.history})
        raise UsageError(f"no run has the metric {metric!r}; the metrics the runs have: {', '.join(known) or 'none yet'}")
    finished = [r for r in have if r.state == "finished"]
    if not finished:
        states = Counter(r.state or "unknown" for r in have)
        said = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        raise UsageError(f"no finished run has the metric {metric!r} ({len(have)} run{'s' if len(have) != 1 else ''} "
                         f"{'have' if len(have) != 1 else 'has'} it: {said}); promote takes finished runs only")
    return ranked(finished, metric, goal)


def pick(runs: Iterable[Run], metric: str, goal: str, models_root: str | None = None, *,
         available: Callable[[str], bool] | None = None) -> Candidate:
    """The best finished run by the best value of ``metric`` it reached (ties: the newest), with its
    model folder (:func:`rank`). ``available`` (when the folders can be seen) leaves out a run whose
    folder is missing, with a note, and takes the next. One-line refusals: no run has the metric,
    none of those that have it finished, none has a model folder."""
    goal = goal_of(goal)
    ranked = rank(runs, metric, goal)
    notes: list[str] = []
    for r in ranked:
        value, step = r.best(metric, goal)  # type: ignore[misc]
        folder = model_folder(r, models_root)
        if folder is None:
            why = (f"its record's model_dir {r.model_dir!r} is not an absolute path" if r.model_dir else
                   "its record names no model folder (model_dir) and the models root is not known")
            notes.append(f"note: run {r.id} ({metric} {num(value)}) left out: {why}")
            continue
        if available is not None and not available(folder):
            notes.append(f"note: run {r.id} ({metric} {num(value)}) left out: its model folder {folder} does not exist "
                         "(a run saves its model in $MLSHIFT_MODEL_DIR)")
            continue
        return Candidate(r, metric, goal, value, step, folder, notes)
    raise UsageError(f"none of the {len(ranked)} finished run(s) with the metric {metric!r} has a model folder to serve: "
                     + notes[0].removeprefix("note: "))


# --------------------------------------------------------------------------- what is served
@dataclass
class Served:
    """What the serving Deployment serves now, and the promotion that put it there (if it did)."""

    deployment: str
    container: str
    model: str | None  # its RUNTIME_MODEL
    promoted: dict[str, Any] | None  # the annotation, when it is about what is served now
    why_not: str = ""  # why there is no such promotion (no annotation, unreadable, deployed since)


def serving_container(deployment: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The container of the serving Deployment that takes its model from RUNTIME_MODEL."""
    containers = ((((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []
    ours = [c for c in containers if any(e.get("name") == MODEL_ENV for e in c.get("env") or [])]
    if len(ours) == 1:
        return ours[0]
    if not ours:
        raise UsageError(f"deployment {name} does not take its model from {MODEL_ENV}: it is not a model_server "
                         "deployed by this version of mlshift (deploy it again, then promote)")
    raise UsageError(f"deployment {name} has {len(ours)} containers with {MODEL_ENV}; promote changes one")


def _readable_record(data: Mapping[str, Any]) -> bool:
    """An annotation's metric, value and goal are what promote writes (someone may have edited it)."""
    value, goal = data.get("value"), data.get("goal")
    return ((value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)))
            and (goal is None or goal in ("min", "max", "minimize", "maximize"))
            and (data.get("metric") is None or isinstance(data.get("metric"), str)))


def read_served(deployment: Mapping[str, Any], name: str) -> Served:
    container = serving_container(deployment, name)
    entry = next(e for e in container.get("env") or [] if e.get("name") == MODEL_ENV)
    # Kubernetes expands $(VAR) in env values and makes $$ one $: a value is written with $ doubled
    model = entry.get("value").replace("$$", "$") if isinstance(entry.get("value"), str) else None
    raw = ((deployment.get("metadata") or {}).get("annotations") or {}).get(PROMOTED_ANNOTATION)
    served = Served(name, container.get("name", ""), model, None)
    if raw is None:
        served.why_not = f"nothing was promoted to {name} yet (no {PROMOTED_ANNOTATION} annotation)"
        return served
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not _readable_record(data):
        served.why_not = f"{name}'s {PROMOTED_ANNOTATION} annotation is not readable"
        return served
    if data["model"] != model:
        served.why_not = (f"{name} serves {model or 'another model'}, not the model promoted to it ({data['model']}): "
                          "it was deployed again since")
        return served
    served.promoted = data
    return served


def is_better(value: float, metric: str, goal: str, served: Served, model: str | None = None) -> tuple[bool, str]:
    """Whether a candidate with ``value`` of ``metric`` beats what ``served`` serves, and why (one line)."""
    goal = goal_of(goal)
    if model is not None and served.model == model:
        return False, "that is the best run's model already"
    p = served.promoted
    if p is None:
        return True, f"{served.why_not}: the best run counts as better"
    if p.get("metric") is None:
        return False, (f"the model {served.deployment} serves was chosen by hand (promote --model), not by a metric; "
                       "--if-better leaves it (promote without --if-better to replace it)")
    if p.get("metric") != metric or goal_of(p.get("goal")) != goal:
        return True, f"the served model was promoted by {p.get('metric')}, not {metric}: the best run counts as better"
    old = p.get("value")
    if not isinstance(old, (int, float)) or isinstance(old, bool) or not math.isfinite(old):
        return True, f"the served model's {metric} is not known: the best run counts as better"
    better = value < old if goal == "min" else value > old
    sign = "<" if value < old else ">" if value > old else "="
    verdict = "better" if better else ("equal" if value == old else "worse")
    return better, (f"{metric} {num(value)} {sign} {num(old)} of the served run {p.get('run') or '?'} "
                    f"({'lower' if goal == 'min' else 'higher'} is better): {verdict}")


# --------------------------------------------------------------------------- the change
def promotion_record(model: str, *, run: str | None, metric: str | None, value: float | None, goal: str | None,
                     previous: str | None, now: float | None = None) -> dict[str, Any]:
    """The annotation's content: what was promoted, by which measure, when, and what it replaced."""
    at = dt.datetime.fromtimestamp(now if now is not None else dt.datetime.now(dt.timezone.utc).timestamp(), dt.timezone.utc)
    return {"model": model, "run": run, "metric": metric, "value": value, "goal": goal_of(goal) if metric else None,
            "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "previous": previous}


def check_mount(deployment: Mapping[str, Any], name: str, container: Mapping[str, Any], folder: str,
                claim: str | None) -> None:
    """Refuse (one line) unless ``container`` mounts the volume ``folder`` is on: a mount whose path
    holds the folder, from the claim ``claim`` (when known)."""
    if not folder.startswith("/"):
        raise UsageError(f"the model folder {folder!r} is not an absolute path in the container")
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    mounts = sorted((m for m in container.get("volumeMounts") or [] if _under(folder, m.get("mountPath", ""))),
                    key=lambda m: len(m.get("mountPath", "")), reverse=True)
    volume = f"the claim {claim}" if claim else "the volume"
    fix = (f"use the model store (resources.storage.models) in {name}'s config.yaml and the training deployment's, "
           "deploy them, then promote")
    if not mounts:
        raise UsageError(f"deployment {name} does not mount {volume} that holds {folder}, so it could not read it: {fix}")
    mount = mounts[0]
    got = ((volumes.get(mount.get("name")) or {}).get("persistentVolumeClaim") or {}).get("claimName")
    if claim and got != claim:
        what = f"the claim {got}" if got else "a volume that is not a claim"
        raise UsageError(f"deployment {name} mounts {mount.get('mountPath')} from {what}, not {volume} that holds "
                         f"{folder}: {fix}")


def patch_body(deployment: Mapping[str, Any], name: str, model: str, record: Mapping[str, Any],
               claim: str | None) -> dict[str, Any]:
    """The strategic-merge patch of the serving Deployment: the annotation and the container's
    RUNTIME_MODEL (containers and env entries are merged by name). Refused when the Deployment
    does not mount the volume the model folder is on. ``model`` is a folder (an absolute path), or
    a hub id (what an undo may put back)."""
    container = serving_container(deployment, name)
    if model.startswith("/"):  # a folder on a volume (a hub id needs none)
        check_mount(deployment, name, container, model, claim)
    entry: dict[str, Any] = {"name": MODEL_ENV, "value": model.replace("$", "$$")}  # as it is through $(VAR) expansion
    if any(e.get("name") == MODEL_ENV and "valueFrom" in e for e in container.get("env") or []):
        entry["valueFrom"] = None  # a value replaces a reference: the reference is removed
    return {"metadata": {"annotations": {PROMOTED_ANNOTATION: json.dumps(dict(record), separators=(",", ":"))}},
            "spec": {"template": {"spec": {"containers": [{"name": container["name"], "env": [entry]}]}}}}


def undo_hint(script: str, target: str, previous: str | None) -> str | None:
    """The command that puts the previous model back."""
    if not previous:
        return None
    import shlex

    return f"{script} --to {target} --model {shlex.quote(previous)}"


# --------------------------------------------------------------------------- the decision
PROMOTE, KEEP, SAME = "promote", "keep", "same"


@dataclass
class Decision:
    """What a promotion does to the serving Deployment, decided before anything changes: the
    caller reads (the runs, the Deployment) before, and patches, says and writes after.

    ``action``: ``promote`` (patch with ``patch``), ``keep`` (under --if-better the candidate is not
    better: nothing changes) or ``same`` (it serves that model already: nothing changes)."""

    target: str
    model: str  # the model to serve: the best run's folder, or the one chosen by hand
    candidate: Candidate | None  # the best run; None for a model chosen by hand
    served: Served
    better: bool
    why: str  # one line: why it is better or not
    action: str
    patch: dict[str, Any] | None = None  # the strategic-merge patch of the Deployment (promote only)
    lines: list[str] = field(default_factory=list)  # what to say before the change, or instead of it
    promoted: str = ""  # what to say once the patch is made
    undo_line: str | None = None  # what to say last: the command that puts the previous model back

    @property
    def record(self) -> dict[str, Any] | None:
        """The promotion record the patch writes (the annotation's content); None unless ``promote``."""
        if self.patch is None:
            return None
        return json.loads(self.patch["metadata"]["annotations"][PROMOTED_ANNOTATION])

    @property
    def notes(self) -> list[str]:
        """Better runs left out, and why (said before the lines)."""
        return self.candidate.notes if self.candidate else []


def best_line(best: Candidate, title: str) -> str:
    """The line that names the best run of ``title`` (e.g. ``sweep <id>``) and its model."""
    params = ", ".join(f"{k}={v}" for k, v in best.run.params.items())
    return (f"Best of {title} by {best.metric} ({'lowest' if best.goal == 'min' else 'highest'} is best): {best.run.id}"
            + (f" ({params})" if params else "") + f", {best.metric} {num(best.value)} at step {best.step}; "
            f"its model: {best.model}")


def decide(deployment: Mapping[str, Any], target: str, runs: Iterable[Run] = (), *, metric: str | None = None,
           goal: str | None = None, models_root: str | None = None, available: Callable[[str], bool] | None = None,
           model: str | None = None, if_better: bool = False, app: str, store: Store | None = None,
           workspace_claim: str | None = None, title: str = "the runs", where: str,
           script: str = "scripts/promote.sh", checkout: str | None = None, now: float | None = None) -> Decision:
    """The promotion to the serving Deployment ``target`` (``deployment``: it as the API returns it):

    - the best run of ``runs`` by ``metric`` and ``goal`` (:func:`pick`, with ``models_root`` and
      ``available``), compared with what is served (:func:`read_served`, :func:`is_better`);
      or ``model``, a folder or hub id chosen by hand (no metric, no comparison);
    - ``keep`` when ``if_better`` and it is not better, ``same`` when it is served already, else
      ``promote``: the record, the patch (refused when the Deployment does not mount the volume the
      folder is on: the claim of ``app``'s model ``store`` or its workspace, ``workspace_claim``)
      and the undo command (``script``, run from the checkout of ``checkout`` when given);
    - the lines to say: ``title`` names the runs, ``where`` the namespace.

    Pure: no I/O. One-line refusals (:class:`UsageError`): those of :func:`pick`,
    :func:`serving_container` and :func:`patch_body`."""
    served = read_served(deployment, target)
    best: Candidate | None = None
    lines: list[str] = []
    if model is None:
        if not metric:
            raise ValueError("decide: give the runs and a metric, or a model")
        best = pick(runs, metric, goal_of(goal), models_root, available=available)
        model = best.model
        better, why = is_better(best.value, best.metric, best.goal, served, model)
        lines += [best_line(best, title), f"Served by {target} in {where}: {served.model or '?'}; {why}"]
    else:
        better, why = True, "a model chosen by hand (no metric)"
    decision = Decision(target, model, best, served, better, why, PROMOTE, lines=lines)
    if if_better and not better:
        decision.action = KEEP
        lines.append(f"Not promoted (--if-better): {target} keeps {served.model or 'its model'}.")
        return decision
    if served.model == model:
        decision.action = SAME
        lines.append(f"Nothing to do: {target} already serves {model}.")
        return decision
    record = promotion_record(model, run=best.run.id if best else None, metric=best.metric if best else None,
                              value=best.value if best else None, goal=best.goal if best else None,
                              previous=served.model, now=now)
    decision.patch = patch_body(deployment, target, model, record, folder_claim(model, app, store, workspace_claim))
    what = f"run {best.run.id} ({best.metric} {num(best.value)}) to {target}" if best else f"to {target} by hand (no metric)"
    decision.promoted = (f"Promoted {what}: {MODEL_ENV}={model}; its pods roll out now "
                         f"(the annotation {PROMOTED_ANNOTATION} records it).")
    undo = undo_hint(script, target, served.model)
    if undo:
        decision.undo_line = f"Undo{f' (from the checkout of {checkout})' if checkout else ''}: {undo}"
    return decision


# --------------------------------------------------------------------------- config.yaml, in a pod
@dataclass(frozen=True)
class Store:
    """The model store: the claim every deployment of the namespace shares, and where it is mounted."""

    claim: str = STORE_CLAIM
    mount: str = STORE_MOUNT


def model_store(data: Mapping[str, Any]) -> Store | None:
    """resources.storage.models of a config.yaml's data, when it is on."""
    resources = data.get("resources") if isinstance(data.get("resources"), dict) else {}
    storage = resources.get("storage") if isinstance(resources.get("storage"), dict) else {}
    models = storage.get("models")
    if not isinstance(models, dict) or not models.get("enabled"):
        return None
    claim = models.get("claim") or STORE_CLAIM
    mount = models.get("mount") or STORE_MOUNT
    return Store(str(claim), str(mount))


def models_root(app: str, store: Store | None, environ: Mapping[str, str] = os.environ) -> str:
    """The application's models root: MLSHIFT_MODELS_ROOT (its pods have it), else
    ``<store>/<app>`` with the model store, ``/workspace/<app>/models`` without."""
    given = (environ.get(MODELS_ROOT_ENV) or "").strip()
    if given:
        return given
    return f"{store.mount.rstrip('/')}/{app}" if store else f"{WORKSPACE}/{app}/models"


def folder_claim(folder: str, app: str, store: Store | None, workspace_claim: str | None = None) -> str | None:
    """The claim that holds ``folder``: the model store's, or the application's workspace volume
    (``workspace_claim``; by default ``<app>-workspace``: an application name has at most 63
    characters, so the wizard never shortens that name, see wizard/blueprint.py object_name);
    None when neither holds it."""
    if store and _under(folder, store.mount):
        return store.claim
    if _under(folder, WORKSPACE):
        return workspace_claim or f"{app}-workspace"
    return None


@dataclass(frozen=True)
class PodPlan:
    """What ``python -m runtime promote`` works with, from config.yaml and the flags."""

    app: str
    target: str
    metric: str
    goal: str
    store: Store | None


def pod_plan(data: Mapping[str, Any], path: Path, *, metric: str | None, goal: str | None) -> PodPlan:
    """experiment.promote (its metric and goal default to experiment.sweep's), the application
    name and the model store, from a config.yaml's data; one-line errors."""
    app = (data.get("application") or {}).get("name") if isinstance(data.get("application"), dict) else None
    if not app:
        raise UsageError(f"{path}: application.name is not set")
    experiment = data.get("experiment") if isinstance(data.get("experiment"), dict) else {}
    raw = experiment.get("promote") or {}
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: experiment.promote is a {type(raw).__name__}, not a section of keys")
    settings: PromoteSettings = checked(PromoteSettings, raw, where=f"{path}: experiment.promote.")
    if not settings.to:
        raise UsageError(f"{path}: experiment.promote.to is not set: no serving deployment to promote to")
    sweep = experiment.get("sweep") if isinstance(experiment.get("sweep"), dict) else {}
    metric, goal = metric_and_goal(metric, goal, settings, sweep.get("metric"), sweep.get("goal"))
    if not metric:
        raise UsageError(f"{path}: no metric to rank the runs by: set experiment.promote.metric (or "
                         "experiment.sweep.metric), or pass --metric NAME")
    return PodPlan(str(app), settings.to, str(metric), goal,
                   model_store(data))


# --------------------------------------------------------------------------- the Kubernetes API, from a pod
class KubeApi:
    """GET and PATCH of Deployments with the pod's ServiceAccount: its token, CA and namespace from
    ``sa_dir``, the API server from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT."""

    def __init__(self, sa_dir: Path = Path(SERVICE_ACCOUNT_DIR), environ: Mapping[str, str] = os.environ,
                 timeout: float = API_TIMEOUT):
        host = (environ.get("KUBERNETES_SERVICE_HOST") or "").strip()
        port = (environ.get("KUBERNETES_SERVICE_PORT") or "443").strip()
        if not host:
            raise UsageError("KUBERNETES_SERVICE_HOST is not set: python -m runtime promote runs in a pod "
                             "(from a checkout, use scripts/promote.sh)")
        self.sa_dir = Path(sa_dir)
        if not (self.sa_dir / "token").is_file():
            raise UsageError(f"no ServiceAccount token in {self.sa_dir}: the pod needs one "
                             "(automountServiceAccountToken, or a projected token there)")
        try:
            self.namespace = (self.sa_dir / "namespace").read_text(encoding="utf-8").strip()
        except OSError:
            self.namespace = (environ.get("POD_NAMESPACE") or "").strip()
        if not self.namespace:
            raise UsageError(f"no namespace: neither {self.sa_dir}/namespace nor POD_NAMESPACE says it")
        ca = self.sa_dir / "ca.crt"
        try:
            self.tls = ssl.create_default_context(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot read the cluster's CA {ca}: {getattr(exc, 'strerror', None) or exc}") from None
        self.base = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
        self.timeout = timeout

    def _token(self) -> str:
        # read at each request: a projected token is renewed in place
        return (self.sa_dir / "token").read_text(encoding="utf-8").strip()

    def _request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                 what: str = "") -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            token = self._token()
        except OSError as exc:
            raise UsageError(f"cannot read the ServiceAccount token in {self.sa_dir}: {exc.strerror or exc}") from None
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.tls) as resp:
                return json.loads(resp.read().decode("utf-8") or "{}")
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc, what) from None
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ApiError(f"cannot reach the Kubernetes API at {self.base} to {what}: {_one_line(reason)}") from None
        except ValueError:
            raise ApiError(f"the Kubernetes API answered something that is not JSON to {method} {path}") from None

    def _refusal(self, exc: urllib.error.HTTPError, what: str) -> ApiError:
        try:
            message = json.loads(exc.read().decode("utf-8", "replace")).get("message") or ""
        except (ValueError, AttributeError, OSError):
            message = ""
        said = f": {_one_line(message)}" if message else ""
        if exc.code == 401:
            return ApiError(f"the Kubernetes API refused the pod's ServiceAccount token (401 Unauthorized) to {what}{said}")
        if exc.code == 403:
            return ApiError(f"the pod's ServiceAccount may not {what} (403 Forbidden){said}")
        if exc.code == 404:
            return ApiError(f"cannot {what}: it does not exist (404 Not Found; deploy the serving deployment first, "
                            "or check experiment.promote.to)")
        return ApiError(f"the Kubernetes API answered {exc.code} {exc.reason} to {what}{said}")

    def _path(self, name: str) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}"

    def get_deployment(self, name: str) -> dict[str, Any]:
        return self._request("GET", self._path(name), what=f"get deployment {name} in {self.namespace}")

    def patch_deployment(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("PATCH", self._path(name), dict(body), PATCH_TYPE,
                             what=f"patch deployment {name} in {self.namespace}")


def _one_line(text: Any) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else str(text)


# --------------------------------------------------------------------------- python -m runtime promote
def run_in_pod(config: Path, *, metric: str | None, goal: str | None, if_better: bool, dry_run: bool,
               results: Path | None, sa_dir: Path, environ: Mapping[str, str] = os.environ,
               say: Callable[[str], None] = print) -> int:
    """Pick the best run from the records on the volume, compare it with what the serving
    Deployment serves, and patch it (see the module's docstring)."""
    from runtime.records import read_records
    from runtime.settings import read_config_yaml

    data = read_config_yaml(config)
    plan = pod_plan(data, config, metric=metric, goal=goal)
    folder = results or Path(f"{WORKSPACE}/{plan.app}/results")
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder: no run has written its record yet (is the workspace volume mounted?)")
    runs, notes = read_records(folder)
    for note in notes:
        say(note)
    if not runs:
        raise UsageError(f"no run records in {folder} (results/<run id>/run.json)")
    root = models_root(plan.app, plan.store, environ)
    visible = plan.store.mount if plan.store and _under(root, plan.store.mount) else (
        WORKSPACE if _under(root, WORKSPACE) else root)
    available = (lambda f: Path(f).is_dir()) if Path(visible).is_dir() else None
    if available is None:
        say(f"note: {visible} is not mounted here: whether the model folder exists is not checked")
    rank(runs, plan.metric, plan.goal)  # the refusals (no run has the metric, none finished) before the API is asked
    api = KubeApi(sa_dir, environ)
    decision = decide(api.get_deployment(plan.target), plan.target, runs, metric=plan.metric, goal=plan.goal,
                      models_root=root, available=available, if_better=if_better, app=plan.app, store=plan.store,
                      title=f"{len(runs)} run(s) in {folder}", where=api.namespace, checkout=plan.app)
    for line in decision.notes + decision.lines:
        say(line)
    if decision.action != PROMOTE:
        return 0
    if dry_run:
        say(f"Would patch deployment {plan.target} in {api.namespace} ({PATCH_TYPE}):")
        say(json.dumps(decision.patch, indent=1))
        return 0
    api.patch_deployment(plan.target, decision.patch)  # type: ignore[arg-type] - set when it promotes
    say(decision.promoted)
    if decision.undo_line:
        say(decision.undo_line)
    return 0
