"""deploy, delete, status: the long-running objects of a deployment and the shared ones of jobs."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ..blueprint import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT
from ..errors import UserError
from ..files import check_destinations, write_file
from ..paths import SOURCE_ROOT, WORKSPACE_MOUNT
from . import diagnose, schedule
from .base import Operation, poll_seconds, sleep, warn
from .keys import create_secret
from .oc import explain, first_line

# Objects the pods need before they start (and that jobs share); applied first.
SHARED = ("configmap", "persistentvolumeclaim", "imagestream", "buildconfig", "service-headless")
# What the included runtime needs in the image besides the base (see templates/Containerfile.j2).
RUNTIME_REQUIREMENTS = ("fastapi", "uvicorn", "prometheus-client", "transformers", "tqdm", "pydantic", "pyyaml")
BUILD_STATE = ".mlshift/build.json"
# A small image with tar, for the short-lived pod that copies workspace/ onto the volume.
SYNC_IMAGE = "registry.access.redhat.com/ubi9/ubi:latest"
SYNC_WAIT_STEP = 15  # seconds of each `oc wait` for that pod; between two, why it waits is read and shown


def sync_wait_seconds() -> int:
    """How long the short-lived pod may take to start: 300 s (MLSHIFT_SYNC_TIMEOUT overrides, e.g. in tests)."""
    try:
        return max(1, int(float(os.environ.get("MLSHIFT_SYNC_TIMEOUT", "300"))))
    except ValueError:
        return 300


def manifest_files(ctx: Operation, *, shared: bool | None = None, volumes: bool = True) -> list[Path]:
    """The listed manifests (what `oc apply -k` would apply), shared ones only or the rest."""
    out = []
    for template, listed in ctx.blueprint.manifests:
        if not listed or (shared is not None and (template in SHARED) != shared):
            continue
        if template == "persistentvolumeclaim" and not volumes:
            continue
        out.append(ctx.directory / "manifests" / f"{template}.yaml")
    return out


def apply(ctx: Operation, files: list[Path]) -> dict[str, str]:
    """``oc apply -f`` the files in one request; returns object -> created/configured/unchanged."""
    if not files:
        return {}
    args: list[str] = []
    for f in files:
        args += ["-f", str(f)]
    ans = ctx.oc.call("apply", args, what="apply the manifests")
    result: dict[str, str] = {}
    for line in ans.out.splitlines():
        parts = line.strip().rsplit(" ", 1)
        if len(parts) == 2:
            result[parts[0]] = parts[1]
            ctx.say(f"  {parts[0]} {parts[1]}")
    return result


# --------------------------------------------------------------------------- secrets
def check_secrets(ctx: Operation) -> None:
    from .tracking import at_deploy

    wanted = ctx.blueprint.secrets
    keys = ctx.blueprint.api_keys_secret  # not among them: created below when it is missing
    if not wanted and not keys:
        at_deploy(ctx, set())  # W&B tracking without a Secret to look for: offline, said
        return
    names = list(dict.fromkeys([s["name"] for s in wanted] + ([keys] if keys else [])))
    ans = ctx.oc.call("get", ["secret", *names, "-o", "name", "--ignore-not-found"], what="check the Secrets")
    if ctx.dry_run:
        if keys:
            ctx.oc.note(f"only when the Secret {keys} is missing: create it with a random API key (on stdin, never shown)")
            create_secret(ctx)
        return
    found = {line.strip().split("/", 1)[-1] for line in ans.out.splitlines() if line.strip()}
    ns = f" -n {ctx.oc.namespace}" if ctx.oc.namespace else ""
    missing_required = []
    wandb_auto = ctx.blueprint.wandb_on and ctx.blueprint.wandb_mode == "auto"
    for s in wanted:
        if s["name"] in found or (wandb_auto and s["key"] == "WANDB_API_KEY"):  # mode auto: said by at_deploy
            continue
        cmd = f"oc create secret generic {s['name']} --from-literal={s['key']}=...{ns}"
        if s["required"] == "no":
            warn(f"note: optional Secret {s['name']} ({s['purpose']}) is missing; create it if needed: {cmd}")
        else:
            missing_required.append((s, cmd))
    if missing_required:
        first, cmd = missing_required[0]
        more = f" (and {len(missing_required) - 1} more: " + "; ".join(c for _, c in missing_required[1:]) + ")" if len(missing_required) > 1 else ""
        fallback = "; or set experiment.tracking.mode: auto (W&B offline without it)" if first["key"] == "WANDB_API_KEY" else ""
        raise UserError(f"the Secret {first['name']} ({first['purpose']}) is missing{more}",
                        hint=f"create it with: {cmd}{fallback}")
    if keys and keys not in found:
        create_secret(ctx)
    at_deploy(ctx, found)


# --------------------------------------------------------------------------- image build
def build_context(ctx: Operation, dest: Path) -> None:
    """The binary build's folder: Containerfile, the requirements it copies, and mlshift/."""
    shutil.copy2(ctx.directory / "Containerfile", dest / "Containerfile")
    req = ctx.config.application.requirements
    if req:
        src = ctx.directory / "workspace" / req
        if not src.is_file():
            raise UserError(f"application.requirements names workspace/{req}, which does not exist",
                            hint="put the file there or clear application.requirements")
        (dest / "workspace" / req).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / "workspace" / req)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for pkg in ("wizard", "runtime"):
        if (SOURCE_ROOT / pkg).is_dir():
            shutil.copytree(SOURCE_ROOT / pkg, dest / "mlshift" / pkg, ignore=ignore)
    (dest / "mlshift" / "requirements-runtime.txt").write_text("\n".join(RUNTIME_REQUIREMENTS) + "\n", encoding="utf-8")


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def read_build_state(path: Path) -> dict[str, str]:
    """Namespace -> digest of the last build context; {} for a file that is missing or not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def build(ctx: Operation, when: str) -> None:
    name = ctx.name
    if ctx.dry_run:
        ctx.oc.note("the build context is a temporary folder: Containerfile, the requirements file, "
                    "mlshift/{wizard,runtime} and mlshift/requirements-runtime.txt")
        if when == "auto":
            ctx.oc.call("get", ["imagestreamtag", f"{name}:latest", "-o", "name", "--ignore-not-found"])
        if when != "never":
            ctx.oc.stream("start-build", [name, "--from-dir=<build context>", "--follow", "--wait"])
        return
    if when == "never":
        return
    state_file = ctx.directory / BUILD_STATE
    with tempfile.TemporaryDirectory(prefix=f"mlshift-build-{name}-") as tmp:
        context = Path(tmp)
        build_context(ctx, context)
        digest = tree_hash(context)
        key = ctx.oc.namespace or ""
        if when == "auto":
            last = read_build_state(state_file).get(key)
            exists = ctx.oc.call("get", ["imagestreamtag", f"{name}:latest", "-o", "name", "--ignore-not-found"],
                                 what="look up the image").out.strip()
            if exists and last == digest:
                ctx.say(f"Image {name}:latest is up to date (deploy --build always rebuilds it).")
                return
        ctx.say(f"Building image {name}:latest on the cluster (binary build; the log follows)...")
        rc = ctx.oc.stream("start-build", [name, f"--from-dir={context}", "--follow", "--wait"], check=False)
        if rc != 0:
            raise UserError(f"the image build of {name} failed (exit code {rc})",
                            hint=f"read the log above or `oc logs bc/{name}`; fix Containerfile or the requirements and re-run deploy.sh")
    state = read_build_state(state_file)
    state[key] = digest
    write_file(ctx.directory, BUILD_STATE, json.dumps(state, indent=1) + "\n", 0o644)


# --------------------------------------------------------------------------- workspace upload
def runs_from_workspace(ctx: Operation) -> bool:
    app = ctx.config.application
    return app.enabled and app.type in ("single_file", "directory") and ctx.blueprint.working_dir.startswith(WORKSPACE_MOUNT + "/")


def workspace_has_files(ctx: Operation) -> bool:
    ws = ctx.directory / "workspace"
    return ws.is_dir() and any(p.name != ".gitkeep" for p in ws.iterdir())


def sync_pod_manifest(ctx: Operation) -> dict[str, Any]:
    blueprint = ctx.blueprint
    meta: dict[str, Any] = {"name": f"{ctx.name}-sync", "labels": blueprint.labels("sync")}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY_CONTEXT,
            "activeDeadlineSeconds": 3600,  # never outlives an interrupted sync by long
            "containers": [{
                "name": "sync", "image": SYNC_IMAGE,
                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                "securityContext": CONTAINER_SECURITY_CONTEXT,
                "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE_MOUNT}],
            }],
            "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": blueprint.workspace_claim}}],
        },
    }


class VolumePod:
    """A pod with the workspace volume mounted: the application's own, or a short-lived one
    (by default the small sync pod; ``manifest`` and ``purpose`` for another, e.g. sync-runs')."""

    def __init__(self, ctx: Operation, pod: str | None, *, hint: str | None = None,
                 manifest: dict[str, Any] | None = None, purpose: str = "to reach the workspace volume"):
        self.ctx, self.pod, self.temporary = ctx, pod, pod is None
        self.hint = hint  # one more way out, added to the error when the short-lived pod does not start
        self.manifest, self.purpose = manifest, purpose

    def __enter__(self) -> str:
        if self.pod:
            return self.pod
        ctx = self.ctx
        manifest = self.manifest or sync_pod_manifest(ctx)
        name = manifest["metadata"]["name"]
        ctx.say(f"Starting {name} {self.purpose}...")
        ctx.oc.call("delete", ["pod", name, "--ignore-not-found", "--wait=true"], what="remove an old short-lived pod")
        ctx.oc.call("create", ["-f", "-"], stdin=yaml.safe_dump(manifest, sort_keys=False),
                    what="start a pod for the workspace volume")
        self._wait_ready(name)
        self.pod = name
        return name

    def _wait_ready(self, name: str) -> None:
        """Until the short-lived pod is ready: `oc wait` a little at a time and, between two, why it
        waits (read from its status and events, e.g. a ReadWriteOnce volume held on another
        node), shown when it changes. Stops at once on a problem that waiting will not fix."""
        ctx = self.ctx
        limit = sync_wait_seconds()
        start = time.monotonic()
        shown = ""
        while True:
            step = limit if ctx.dry_run else max(1, min(SYNC_WAIT_STEP, int(limit - (time.monotonic() - start))))
            ans = ctx.oc.call("wait", ["--for=condition=Ready", f"pod/{name}", f"--timeout={step}s"], check=False,
                              timeout=step + 60)
            if ans.ok:
                return
            pod = ctx.oc.get_json(["pod", name], what="look at the sync pod")
            problems = diagnose.pod_problems(pod, ctx.events(), image=SYNC_IMAGE) if pod else []
            why = problems[0] if problems else None
            waited = int(time.monotonic() - start)
            if (why and why.fatal) or waited >= limit:
                self.__exit__(None, None, None)
                text = why.summary if why else (first_line(ans.err) or "not ready")
                hint = why.hint if why else "check the volume with status.sh"
                within = "" if why and why.fatal else f" within {waited}s"
                raise UserError(f"the pod for the workspace volume did not start{within}: {text}",
                                hint=hint + (f"; {self.hint}" if self.hint else ""))
            line = why.summary if why else f"{name} {diagnose.phase(pod)}"
            if line != shown:
                ctx.say(f"  [{waited:>4}s] the pod for the workspace volume waits: {line}" + (f" ({why.hint})" if why else ""))
                shown = line

    def __exit__(self, *exc: Any) -> None:
        if self.temporary:
            name = (self.manifest or {}).get("metadata", {}).get("name") or f"{self.ctx.name}-sync"
            self.ctx.oc.call("delete", ["pod", name, "--ignore-not-found", "--wait=false"], check=False)


def running_pod(ctx: Operation) -> str | None:
    """A running pod of the application (it has the volume), or None."""
    if ctx.blueprint.is_job or ctx.dry_run:
        if ctx.dry_run and not ctx.blueprint.is_job:
            ctx.oc.call("get", ["pods", "-l", ctx.selector(), "-o", "json"])
        return None
    for pod in ctx.pods():
        if (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            return pod["metadata"]["name"]
    return None


def copy_to_volume(ctx: Operation, pod: str | None, local: Path, remote: str) -> None:
    """Copy a local folder's contents to a folder on the workspace volume (rsync semantics)."""
    with VolumePod(ctx, pod) as target:
        container = ["-c", ctx.blueprint.container_name] if pod else []
        ctx.say(f"Uploading {ctx.rel(local)}/ to {target}:{remote} ...")
        ctx.oc.call("exec", [target, *container, "--", "mkdir", "-p", remote], what="create the folder in the pod")
        ctx.oc.stream("rsync", [f"{local}/", f"{target}:{remote}", *container, "--no-perms=true"], what=f"upload {ctx.rel(local)}/")


def copy_from_volume(ctx: Operation, pod: str | None, remote: str, local: Path) -> None:
    with VolumePod(ctx, pod) as target:
        container = ["-c", ctx.blueprint.container_name] if pod else []
        ctx.oc.stream("rsync", [f"{target}:{remote}", str(local), *container, "--no-perms=true"], what=f"download {remote}")


def upload_workspace(ctx: Operation, pod: str | None) -> None:
    copy_to_volume(ctx, pod, ctx.directory / "workspace", ctx.blueprint.working_dir)


# --------------------------------------------------------------------------- the model store
def model_store_object(ctx: Operation) -> dict[str, Any] | None:
    """The namespace's model store as the cluster has it (one `oc get`), or None when it is missing."""
    store = ctx.blueprint.model_store
    assert store is not None
    ans = ctx.oc.call("get", ["persistentvolumeclaim", store.claim, "-o", "json", "--ignore-not-found"],
                      what="look up the model store")
    data = ans.json() or {}
    if data.get("kind") == "List":  # how some oc versions answer --ignore-not-found for a missing object
        data = next(iter(data.get("items") or []), {})
    return data or None


def describe_claim(pvc: dict[str, Any]) -> str:
    """``200Gi, ReadWriteMany, class cephfs`` of a PersistentVolumeClaim as the cluster has it."""
    spec, st = pvc.get("spec") or {}, pvc.get("status") or {}
    size = (st.get("capacity") or {}).get("storage") or ((spec.get("resources") or {}).get("requests") or {}).get("storage") or "?"
    modes = ", ".join(st.get("accessModes") or spec.get("accessModes") or []) or "?"
    cls = spec.get("storageClassName")
    return f"{size}, {modes}" + (f", class {cls}" if cls else "")


def ensure_model_store(ctx: Operation) -> None:
    """Create the namespace's model store from manifests/model-store.yaml when it is missing; one
    that exists is used as it is (other deployments share it: deploy never changes it)."""
    store = ctx.blueprint.model_store
    if store is None:
        return
    manifest = ctx.directory / "manifests" / "model-store.yaml"
    found = model_store_object(ctx)
    if ctx.dry_run:
        ctx.oc.note(f"only when the model store {store.claim} is missing:")
        ctx.oc.call("create", ["-f", str(manifest)])
        return
    if found is not None:
        ctx.say(f"Model store {store.claim}: exists ({describe_claim(found)}); used as it is")
        labels = (found.get("metadata") or {}).get("labels") or {}
        modes = (found.get("status") or {}).get("accessModes") or (found.get("spec") or {}).get("accessModes") or []
        if labels.get("app.kubernetes.io/component") != "model-store":
            warn(f"note: {store.claim} was not created as a model store (no label app.kubernetes.io/component=model-store); "
                 "the pods mount it as it is")
        if modes and store.access_mode not in modes:
            warn(f"note: config.yaml asks for a {store.access_mode} model store, and {store.claim} is {', '.join(modes)}: "
                 f"it is used as it is (another claim name, resources.storage.models.claim, makes a new store)")
        return
    ans = ctx.oc.call("create", ["-f", str(manifest)], check=False, what="create the model store")
    if not ans.ok and "AlreadyExists" in ans.err:  # another deploy made it meanwhile
        ctx.say(f"Model store {store.claim}: created meanwhile by another deploy; used as it is")
        return
    if not ans.ok:
        raise explain(ans, what="create the model store", namespace=ctx.oc.namespace)
    cls = f", class {store.storage_class}" if store.storage_class else ""
    ctx.say(f"Model store {store.claim}: created ({store.size}, {store.access_mode}{cls}); the deployments of {ctx.where} "
            f"that name it share it, and delete never removes it")


def prune_unasked(ctx: Operation) -> None:
    """Delete what runs beside the jobs that config.yaml no longer asks for, in one request (none
    when it asks for all of it): the schedule's objects it does not ask for (schedule.unasked) and
    the eval watcher's Deployment. Found by their labels (this application's, of component
    ``schedule`` or ``eval``, made by mlshift), never by their names: a Deployment named
    <name>-eval may be another application's.

    A CronJob goes with ``--cascade=orphan`` (the runs it started go on, and expire as submitted
    ones do); that request then names the eval watcher's ReplicaSets and pods beside its
    Deployment, which orphaning would otherwise leave running. When Roles are refused (a project
    member without the admin role, who cannot have made them), a second request for the rest."""
    blueprint = ctx.blueprint
    parts = [(schedule.COMPONENT, schedule.unasked(blueprint)), ("eval", [] if blueprint.eval_watcher else ["deployments"])]
    parts = [(component, kinds) for component, kinds in parts if kinds]
    if not parts:
        return
    kinds = [kind for _, part in parts for kind in part]
    orphan = "cronjobs" in kinds
    if orphan and "deployments" in kinds:
        kinds += ["replicasets", "pods"]
    components = [component for component, _ in parts]
    component = f"={components[0]}" if len(components) == 1 else f" in ({','.join(components)})"
    selector = f"{ctx.instance_selector},app.kubernetes.io/component{component},app.kubernetes.io/managed-by=mlshift"
    flags = ["-l", selector, "--ignore-not-found", "--wait=false", *(["--cascade=orphan"] if orphan else [])]
    what = "remove what config.yaml no longer asks for"
    ctx.oc.note("what runs beside the jobs that config.yaml no longer asks for (there is none unless an earlier deploy made it):")
    ans = ctx.oc.call("delete", [",".join(kinds), *flags], check=False, what=what)
    rest = [k for k in kinds if k not in schedule.MEMBERS_MAY_NOT]
    if not ans.ok and rest != kinds and "forbidden" in ans.err.lower():
        kinds = rest  # a project member without the admin role (who cannot have made them): the rest
        ans = ctx.oc.call("delete", [",".join(kinds), *flags], check=False, what=what)
    if not ans.ok:  # a note, never an error: deploy goes on
        why = next(iter(ans.err.strip().splitlines()), "oc failed")
        warn(f"note: could not {what} ({why}); see `oc get {','.join(kinds)} -l {shlex.quote(selector)}`")
        return
    for line in ans.out.splitlines():
        if line.strip():
            ctx.say(f"  {line.strip()} (config.yaml no longer asks for it)")


def check_eval_prompts(ctx: Operation) -> None:
    """The eval watcher's prompts are in workspace/ (deploy uploads them) and the watcher can read
    them: they are read here with its own reader (runtime.watch.read_prompts), so that a bad file is
    refused now, with the line the watcher would stop on, not found by a watcher pod that restarts
    on it."""
    ew = ctx.config.experiment.eval_watcher
    if not ctx.blueprint.eval_watcher:
        return
    path = ctx.directory / "workspace" / ew.prompts
    if not path.is_file():
        raise UserError(f"experiment.eval_watcher.prompts names workspace/{ew.prompts}, which does not exist",
                        hint='put the fixed prompts there, one JSON object per line such as {"id": "p1", "prompt": "..."}, '
                             "or name another file in experiment.eval_watcher.prompts")
    from runtime.errors import UsageError
    from runtime.watch import read_prompts

    try:
        read_prompts(path)
    except UsageError as exc:
        raise UserError(f"experiment.eval_watcher.prompts names workspace/{ew.prompts}, which the eval watcher cannot "
                        f"read: {exc}", hint='one JSON object per line such as {"id": "p1", "prompt": "..."}') from None


# --------------------------------------------------------------------------- deploy
def deploy(ctx: Operation, args) -> int:
    blueprint = ctx.blueprint
    if blueprint.build:
        check_destinations(ctx.directory, [BUILD_STATE])  # where the build is recorded; before anything happens
    if not args.no_upload:
        check_eval_prompts(ctx)
    ctx.say(f"Deploying {ctx.name} ({blueprint.mode}) to {blueprint.namespace or 'the current project'}")
    ctx.check_session()
    check_secrets(ctx)
    ctx.say("Applying the shared objects:" if blueprint.is_job else "Applying the configuration, volume and image objects:")
    changed = apply(ctx, manifest_files(ctx, shared=True))
    ensure_model_store(ctx)
    if blueprint.build:
        build(ctx, args.build)
    uploaded_live = False
    if runs_from_workspace(ctx) and not args.no_upload and workspace_has_files(ctx):
        pod = running_pod(ctx)
        upload_workspace(ctx, pod)
        uploaded_live = pod is not None
    elif runs_from_workspace(ctx) and not workspace_has_files(ctx):
        warn(f"note: workspace/ is empty; put your code there ({ctx.config.application.source.path or 'the entry point'}) and re-run deploy.sh")
    elif blueprint.eval_watcher and not args.no_upload:  # its prompts are read from there
        copy_to_volume(ctx, None, ctx.directory / "workspace", blueprint.workspace_folder)
    if blueprint.is_job:
        rest = manifest_files(ctx, shared=False)  # what runs beside the jobs: the eval watcher, the schedule
        if rest:
            ctx.say("Applying what runs beside the jobs:")
            apply(ctx, rest)
        prune_unasked(ctx)  # a schedule, its promote step or the eval watcher taken out of config.yaml stops
        ctx.say(f"\nReady for jobs. Submit one with: {ctx.script('submit-job.sh')}")
        if blueprint.eval_watcher:
            where = (f"; it starts on the node of the first job (the {' and '.join(blueprint.volumes_read_write_once)} "
                     "is ReadWriteOnce)" if blueprint.eval_affinity else "")
            ctx.say(f"The eval watcher {blueprint.eval_name} evaluates each model the runs save in {blueprint.models_root}: "
                    f"{blueprint.eval_output}/eval/index.html compares them{where}.")
        schedule.say_ready(ctx)
        return 0
    if blueprint.model_from_env:  # a model promoted on the cluster that config.yaml does not know
        from .promote import promoted_note

        if note := promoted_note(ctx):
            warn(note)
    ctx.say("Applying the application:")
    changed.update(apply(ctx, manifest_files(ctx, shared=False)))
    config_changed = any(k.startswith("configmap/") and v == "configured" for k, v in changed.items())
    deployment_same = any(k.startswith("deployment.apps/") and v == "unchanged" for k, v in changed.items())
    if ctx.dry_run or ((config_changed or uploaded_live) and deployment_same):
        if not ctx.dry_run:
            ctx.say("config.yaml or workspace/ changed: restarting the pods so that they use it")
        else:
            ctx.oc.note("only when the ConfigMap or workspace/ changed and the Deployment did not:")
        ctx.oc.call("rollout", ["restart", f"deployment/{ctx.name}"], what="restart the pods")
    if args.no_wait:
        ctx.say(f"Not waiting; follow it with {ctx.script('status.sh')}")
        return 0
    wait_rollout(ctx, args.timeout or (ctx.config.inference.startup_timeout + 600 if blueprint.serves else 900))
    reach(ctx)
    return 0


def wait_rollout(ctx: Operation, timeout: int) -> None:
    name, blueprint = ctx.name, ctx.blueprint
    cleanup = f"it stays deployed; remove it with {ctx.script('delete.sh')}"
    if ctx.dry_run:
        ctx.oc.note(f"then poll until the Deployment is ready (at most {timeout}s):")
        ctx.oc.call("get", ["deployment", name, "-o", "json"])
        ctx.oc.call("get", ["pods", "-l", ctx.selector(), "-o", "json"])
        ctx.oc.call("get", ["events", "-o", "json"])
        return
    start = time.monotonic()
    tty = sys.stdout.isatty()
    last = ""
    while True:
        dep = ctx.oc.get_json(["deployment", name], what="read the Deployment")
        spec, st = dep.get("spec") or {}, dep.get("status") or {}
        want = int(spec.get("replicas", 1))
        ready = int(st.get("readyReplicas") or 0)
        updated = int(st.get("updatedReplicas") or 0)
        fresh = int(st.get("observedGeneration") or 0) >= int((dep.get("metadata") or {}).get("generation") or 0)
        elapsed = int(time.monotonic() - start)
        if fresh and updated >= want and int(st.get("availableReplicas") or 0) >= want and int(st.get("replicas") or 0) <= want:
            line = f"[{elapsed:>4}s] {ready}/{want} ready"
            print(("\r" + line.ljust(100) + "\n") if tty else line, flush=True)
            return
        pods = [p for p in ctx.pods() if not p["metadata"].get("deletionTimestamp")]
        events = ctx.events()
        detail = ""
        if not pods:
            failures = [m for m in diagnose.creation_failures(events, _replicaset_names(events, name)) if m]
            if failures:
                q = diagnose.quota_line(failures[-1])
                if tty:
                    print()
                raise UserError(q or f"the pods cannot be created: {failures[-1]}",
                                hint=("ask for less (resources.*) or free the quota (oc describe quota); " if q else "") + cleanup)
            detail = "no pod yet"
        else:
            problems = [pr for p in pods for pr in diagnose.pod_problems(p, events, image=blueprint.image)]
            fatal = [pr for pr in problems if pr.fatal]
            if fatal:
                if tty:
                    print()
                raise UserError(f"{fatal[0].pod}: {fatal[0].summary}", hint=f"{fatal[0].hint}; {cleanup}")
            detail = problems[0].summary if problems else ", ".join(f"{p['metadata']['name']} {diagnose.phase(p)}" for p in pods)
        line = f"[{elapsed:>4}s] {ready}/{want} ready; {detail}"
        if tty:
            print("\r" + line[:150].ljust(150), end="", flush=True)
        elif line.split("] ", 1)[1] != last:
            print(line, flush=True)
            last = line.split("] ", 1)[1]
        if elapsed >= timeout:
            if tty:
                print()
            raise UserError(f"{name} is not ready after {timeout}s: {detail}",
                            hint=f"it keeps trying: {ctx.script('status.sh')} shows why, {ctx.script('logs.sh')} -f what it does; "
                                 f"deploy --timeout waits longer; {cleanup}")
        sleep(poll_seconds())


def _replicaset_names(events: Any, name: str) -> list[str]:
    items = events.get("items", []) if isinstance(events, dict) else []
    return [(e.get("involvedObject") or {}).get("name", "") for e in items
            if (e.get("involvedObject") or {}).get("kind") == "ReplicaSet"
            and (e.get("involvedObject") or {}).get("name", "").startswith(name + "-")]


def route_url(ctx: Operation) -> str | None:
    if not ctx.blueprint.route:
        return None
    route = ctx.oc.get_json(["route", ctx.blueprint.route_name], what="read the Route",
                            dry_answer={"spec": {"host": "<route host>"}})
    host = (route.get("spec") or {}).get("host")
    return f"https://{host}" if host else None


def reach(ctx: Operation) -> None:
    blueprint = ctx.blueprint
    if blueprint.serves:
        url = route_url(ctx)
        endpoint = ctx.config.inference.endpoint
        if url:
            ctx.say(f"\nReady: {url}{endpoint}")
        else:
            ctx.say(f"\nReady. Reach it with {ctx.script('port-forward.sh')} (then http://127.0.0.1:{blueprint.port}{endpoint})")
        ctx.say(f"Try it: {ctx.script('test-inference.sh')}")
        if blueprint.api_keys_secret:
            ctx.say(f"Clients send the API key as 'Authorization: Bearer KEY'; {ctx.script('api-key.sh')} prints it")
        elif blueprint.route:
            ctx.say("The Route is open (inference.route.public): anyone who can reach the router can use the model")
    elif blueprint.mode == "manual":
        ctx.say(f"\nReady. Work in it: {ctx.script('shell.sh')}, {ctx.script('jupyter.sh')} or {ctx.script('vscode.sh')}")
    else:
        ctx.say(f"\nRunning. Follow it: {ctx.script('logs.sh')} -f")


# --------------------------------------------------------------------------- delete
def delete(ctx: Operation, args) -> int:
    ctx.check_session()
    if args.volumes and not args.yes and not ctx.dry_run:
        if not sys.stdin.isatty():
            raise UserError("--volumes deletes the workspace volume and everything on it", hint="add --yes to confirm")
        answer = input(f"Delete the volume {ctx.blueprint.workspace_claim} and all files on it? Type {ctx.name} to confirm: ")
        if answer.strip() != ctx.name:
            ctx.say("Nothing deleted.")
            return 1
    files = manifest_files(ctx, volumes=args.volumes)
    if files:
        fargs: list[str] = []
        for f in files:
            fargs += ["-f", str(f)]
        ans = ctx.oc.call("delete", [*fargs, "--ignore-not-found", "--wait=false"], what="delete the objects")
        for line in ans.out.splitlines():
            if line.strip():
                ctx.say(f"  {line.strip()}")
    ctx.oc.call("delete", ["pods", "-l", f"{ctx.instance_selector},app.kubernetes.io/component=sync", "--ignore-not-found"],
                what="delete a leftover sync pod")
    if args.jobs:
        ans = ctx.oc.call("delete", ["jobs", "-l", ctx.selector("job"), "--ignore-not-found", "--wait=false"],
                          what="delete the jobs")
        for line in ans.out.splitlines():
            if line.strip():
                ctx.say(f"  {line.strip()}")
    elif ctx.blueprint.is_job:
        ctx.say("Submitted jobs are kept (they finish and expire on their own); add --jobs to delete them too."
                + (f" The runs the CronJob {ctx.blueprint.cronjob_name} started go with it." if ctx.blueprint.schedule else ""))
    if not args.volumes:
        ctx.say(f"The workspace volume {ctx.blueprint.workspace_claim} is kept; add --volumes to delete it and its files.")
    if ctx.blueprint.model_store:
        claim = ctx.blueprint.model_store.claim
        ctx.say(f"The model store {claim} is kept, with --volumes too: the deployments of {ctx.where} share it "
                f"(when none uses it any more: oc delete pvc {claim}).")
    if ctx.blueprint.api_keys_secret:
        ctx.say(f"The API key Secret {ctx.blueprint.api_keys_secret} is kept (clients' keys stay valid for the next deploy); "
                f"remove it with: oc delete secret {ctx.blueprint.api_keys_secret}")
    ctx.say(f"Deleted {ctx.name} from {ctx.where}." if not ctx.dry_run else "")
    return 0


# --------------------------------------------------------------------------- status
def _age(ts: str | None) -> str:
    import datetime as dt

    then = schedule.when(ts)
    return "" if then is None else schedule.span(max(0.0, (dt.datetime.now(dt.timezone.utc) - then).total_seconds()))


def status(ctx: Operation, args) -> int:
    blueprint = ctx.blueprint
    ctx.check_session()
    data = ctx.oc.get_json(["deployments,pods,jobs,cronjobs,routes,persistentvolumeclaims", "-l", ctx.instance_selector],
                           what="read the application's objects")
    events = ctx.events()
    builds = ctx.oc.get_json(["builds", "-l", f"buildconfig={ctx.name}"], what="read the builds") if blueprint.build else {}
    store = model_store_object(ctx) if blueprint.model_store else None
    if ctx.dry_run:
        return 0
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in data.get("items", []):
        by_kind.setdefault(item.get("kind", ""), []).append(item)
    gpus = f", {ctx.config.resources.gpus} GPU(s) per pod" if ctx.config.resources.gpus else ""
    ctx.say(f"{ctx.name} in {ctx.where}: {blueprint.mode}{gpus}")
    if not by_kind:
        ctx.say(f"  nothing deployed (deploy with {ctx.script('deploy.sh')})")
        return 0
    for pvc in by_kind.get("PersistentVolumeClaim", []):
        st = pvc.get("status") or {}
        size = (st.get("capacity") or {}).get("storage") or ((pvc.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "")
        ctx.say(f"Volume {pvc['metadata']['name']}: {st.get('phase', '?')} {size}")
        if st.get("phase") == "Pending":
            for e in diagnose.events_for(events, pvc["metadata"]["name"])[-1:]:
                ctx.say(f"  why: {e.get('message', '').strip()}")
    if blueprint.model_store:
        claim = blueprint.model_store.claim
        if store is None:
            ctx.say(f"Model store {claim}: missing ({ctx.script('deploy.sh')} creates it)")
        else:
            ctx.say(f"Model store {claim}: {(store.get('status') or {}).get('phase', '?')} {describe_claim(store)}; "
                    f"shared, this application's models in {blueprint.models_root}")
    items = (builds or {}).get("items", [])
    if items:
        last = sorted(items, key=lambda b: b["metadata"].get("creationTimestamp", ""))[-1]
        st = last.get("status") or {}
        ctx.say(f"Image build {last['metadata']['name']}: {st.get('phase', '?')}" + (f" ({st.get('message')})" if st.get("message") and st.get("phase") != "Complete" else ""))
    for dep in by_kind.get("Deployment", []):
        st = dep.get("status") or {}
        ctx.say(f"Deployment {dep['metadata']['name']}: {int(st.get('readyReplicas') or 0)}/{(dep.get('spec') or {}).get('replicas', 1)} ready")
    for cronjob in by_kind.get("CronJob", []):  # application.execution.schedule: its last and next run
        for line in schedule.status_lines(cronjob):
            ctx.say(line)
    pods = by_kind.get("Pod", [])
    if pods:
        ctx.say("Pods:")
        rows = [("NAME", "STATE", "RESTARTS", "AGE", "NODE")]
        for p in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            rows.append((p["metadata"]["name"], diagnose.phase(p), str(diagnose.restarts(p)),
                         _age(p["metadata"].get("creationTimestamp")), (p.get("spec") or {}).get("nodeName", "")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            ctx.say("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for p in pods:
            for pr in diagnose.pod_problems(p, events, image=blueprint.image):
                ctx.say(f"  {pr.pod}: {pr.summary}")
                ctx.say(f"    next: {pr.hint}")
    elif by_kind.get("Deployment"):
        failures = diagnose.creation_failures(events, _replicaset_names(events, ctx.name))
        if failures:
            ctx.say(f"  no pods: {diagnose.quota_line(failures[-1]) or failures[-1]}")
    jobs = by_kind.get("Job", [])
    if jobs:
        from .jobs import SweepView, group_jobs, job_state, read_trial_tables, say_trials

        entries = group_jobs(jobs)  # a sweep's Job(s) as one line
        ctx.say(f"Jobs ({len(entries)}; the 10 newest, all with {ctx.script('list-jobs.sh')}):")
        for entry in entries[-10:]:
            if isinstance(entry, SweepView):
                ctx.say(f"  {entry.name}  {entry.state()}  sweep {entry.sweep_id}: {entry.line()}")
            else:
                ctx.say(f"  {entry['metadata']['name']}  {job_state(entry)}")
        views = [e for e in entries[-10:] if isinstance(e, SweepView)]
        if getattr(args, "trials", False) and views:
            say_trials(ctx, views, pods, read_trial_tables(ctx))
    for r in by_kind.get("Route", []):
        host = (r.get("spec") or {}).get("host")
        if host:
            ctx.say(f"URL: https://{host}{ctx.config.inference.endpoint}")
    return 0
