"""W&B tracking on the cluster: the mode of experiment.tracking.mode auto, decided at deploy and
submit, and sync-runs, which uploads the runs tracked offline.

``auto`` is online when the W&B Secret (secrets.wandb) exists and offline otherwise. deploy asks
in the request that checks the other Secrets; submit asks once per submission (one ``oc get
secret``) and writes the decision into the Jobs it creates (WANDB_MODE, the API key from the
Secret, and the run's config.yaml). ``online`` set explicitly without the Secret is refused,
with the command that creates it.

sync-runs uploads from a short-lived pod of the application's image, which has wandb (the
Containerfile installs it when tracking is on) and mounts the volume where the offline runs are:
nothing is downloaded, the API key stays in the cluster's Secret, and the same wandb that wrote
the runs reads them. It needs the Secret and the cluster's way out to the W&B server; a cluster
without one: download ``/workspace/<name>/wandb`` (``sync-workspace.sh down --remote ...``) and
run ``wandb sync`` here. A run is sent once: ``wandb sync`` marks each synced run (a
``.wandb.synced`` file beside its data, on the volume), and runs so marked are skipped before
wandb is called. Runs whose Job is still running are left for next time.
"""

from __future__ import annotations

import json
from typing import Any

from ..blueprint import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT, results_dir, wandb_dir
from ..config import Config
from ..errors import UserError
from .base import SUBMISSION_LABEL, SWEEP_LABEL, Operation, warn

SYNC_RUNS_LIMIT = 3600  # seconds the uploading pod may live


def _secret_command(ctx: Operation, secret: str) -> str:
    ns = f" -n {ctx.oc.namespace}" if ctx.oc.namespace else ""
    return f"oc create secret generic {secret} --from-literal=WANDB_API_KEY=...{ns}"


def _wandb_on(config: Config) -> bool:
    tr = config.experiment.tracking
    return tr.enabled and tr.backend == "wandb"


def _check_explicit_online(ctx: Operation, config: Config) -> None:
    if _wandb_on(config) and config.experiment.tracking.mode == "online" and not config.secrets.wandb:
        raise UserError("experiment.tracking.mode: online needs the W&B API key, but secrets.wandb names no Secret",
                        hint="set secrets.wandb (a Secret with key WANDB_API_KEY), or experiment.tracking.mode: auto or offline")


def mode_line(ctx: Operation, config: Config, secret_exists: bool) -> tuple[str, bool]:
    """(what W&B does, whether it is a note) for mode auto, said once at deploy and submit."""
    secret = config.secrets.wandb
    if secret and secret_exists:
        return f"W&B tracking: online (experiment.tracking.mode auto: the Secret {secret} exists)", False
    where = f" in {ctx.oc.namespace}" if ctx.oc.namespace else ""
    why = f"no Secret {secret}{where}" if secret else "secrets.wandb names no Secret"
    fix = f"; to track online, create it: {_secret_command(ctx, secret)}" if secret else ""
    return (f"note: W&B tracking: offline (experiment.tracking.mode auto: {why}); runs stay on the volume in "
            f"{wandb_dir(config.name)} until {ctx.script('sync-runs.sh')} uploads them{fix}"), True


def _say(ctx: Operation, line: tuple[str, bool]) -> None:
    text, is_note = line
    if is_note:
        warn(text if not ctx.dry_run else "# " + text)
    else:
        ctx.say(text)


def stock_image_note(ctx: Operation) -> None:
    """An image run as it is gets no wandb from mlshift: say what then happens."""
    if _wandb_on(ctx.config) and not ctx.blueprint.build:
        warn(f"note: W&B tracking is on and the image {ctx.blueprint.image} is run as it is (image.build: false): mlshift "
             "cannot install wandb in it; without wandb a run is recorded in its results/ folder only (the launcher says so)")


def at_deploy(ctx: Operation, found: set[str]) -> None:
    """deploy: say what mode auto becomes (the Secrets were looked up in one request, ``found``)."""
    config = ctx.config
    if not _wandb_on(config):
        return
    _check_explicit_online(ctx, config)
    if config.experiment.tracking.mode == "auto" and not ctx.dry_run:
        text, note = mode_line(ctx, config, bool(config.secrets.wandb) and config.secrets.wandb in found)
        if not ctx.blueprint.is_job:
            text += " (the pods decide when they start: they are online once the Secret exists)"
        _say(ctx, (text, note))
    stock_image_note(ctx)


def at_submit(ctx: Operation, configs: list[Config]) -> None:
    """submit: decide mode auto for the Jobs about to be created (one ``oc get secret``), and
    refuse mode online without its Secret. Each config is set to what was decided, so that the
    Jobs' WANDB_MODE and their config.yaml say it."""
    configs = list({id(c): c for c in configs if _wandb_on(c)}.values())
    for c in configs:
        _check_explicit_online(ctx, c)
    names = sorted({c.secrets.wandb for c in configs if c.experiment.tracking.mode != "offline" and c.secrets.wandb})
    found: set[str] = set()
    if names:
        ans = ctx.oc.call("get", ["secret", *names, "-o", "name", "--ignore-not-found"], what="check the W&B Secret")
        if ctx.dry_run:
            ctx.oc.note("experiment.tracking.mode auto is decided by that answer: online when the Secret exists")
            return
        found = {line.strip().split("/", 1)[-1] for line in ans.out.splitlines() if line.strip()}
    said: set[str] = set()
    for c in configs:
        tr, secret = c.experiment.tracking, c.secrets.wandb
        if tr.mode == "online" and secret not in found:
            raise UserError(f"the Secret {secret} (Weights & Biases API key) is missing, and experiment.tracking.mode is online",
                            hint=f"create it with: {_secret_command(ctx, secret)}; or set experiment.tracking.mode: auto "
                                 "(offline without it) or offline")
        if tr.mode == "auto":
            tr.mode = "online" if secret and secret in found else "offline"
            line = mode_line(ctx, c, tr.mode == "online")
            if line[0] not in said:
                said.add(line[0])
                _say(ctx, line)
    if configs:
        stock_image_note(ctx)


# --------------------------------------------------------------------------- sync-runs
# Run in the uploading pod: python3 -c SYNC_SCRIPT WANDB_DIR RESULTS_DIR OPTIONS_JSON. Finds the
# offline runs (WANDB_DIR/wandb/offline-run-<time>-<run id>), skips those already synced (every
# .wandb file has its .wandb.synced) and those still running, and gives the rest to `wandb sync`.
SYNC_SCRIPT = r'''
import json, os, shutil, subprocess, sys
top, results, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
active, only = opts.get("active") or [], opts.get("only") or []
root = os.path.join(top, "wandb")
names = sorted(d for d in os.listdir(root) if d.startswith("offline-run-")) if os.path.isdir(root) else []

def state(run):
    try:
        with open(os.path.join(results, run, "run.json"), encoding="utf-8") as f:
            return json.load(f).get("state")
    except (OSError, ValueError, AttributeError):
        return None

todo, synced, running = [], [], []
for name in names:
    path = os.path.join(root, name)
    run = name.split("-", 3)[3] if name.count("-") >= 3 else name
    if only and run not in only:
        continue
    files = [f for f in os.listdir(path) if f.endswith(".wandb")]
    if not files:
        continue
    if all(os.path.exists(os.path.join(path, f + ".synced")) for f in files):
        synced.append(run)
    elif any(run == a or run.startswith(a + "-") for a in active) and state(run) in (None, "running"):
        running.append(run)
    else:
        todo.append((run, path))
print(f"Offline runs in {root}: {len(names)}; already synced: {len(synced)}; still running: {len(running)}; to upload: {len(todo)}")
if running:
    print("  still running (uploaded by a later sync-runs): " + ", ".join(sorted(set(running))))
if not todo:
    sys.exit(0)
wandb = shutil.which("wandb")
command = [wandb] if wandb else [sys.executable, "-m", "wandb"]
failed = []
for run, path in todo:
    print(f"Uploading run {run} ({os.path.basename(path)})", flush=True)
    done = subprocess.run(command + ["sync", path])
    files = [f for f in os.listdir(path) if f.endswith(".wandb")]
    if done.returncode != 0 or not all(os.path.exists(os.path.join(path, f + ".synced")) for f in files):
        failed.append(run)
if failed:
    print("Not uploaded: " + ", ".join(failed) + " (see above; sync-runs tries them again next time)", file=sys.stderr)
    sys.exit(1)
print(f"Uploaded {len(todo)} run(s).")
'''


def sync_pod_name(ctx: Operation) -> str:
    return f"{ctx.name}-sync-runs"[:63].rstrip("-")


def sync_runs_pod(ctx: Operation) -> dict[str, Any]:
    """The uploading pod: the application's image (wandb in it), the volume, the API key."""
    blueprint, config = ctx.blueprint, ctx.config
    env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                                 {"name": "WANDB_DIR", "value": wandb_dir(ctx.name)}]
    tr = config.experiment.tracking
    if tr.base_url:
        env.append({"name": "WANDB_BASE_URL", "value": tr.base_url})
    if tr.entity:
        env.append({"name": "WANDB_ENTITY", "value": tr.entity})
    if config.secrets.wandb:
        env.append({"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": config.secrets.wandb, "key": "WANDB_API_KEY"}}})
    meta: dict[str, Any] = {"name": sync_pod_name(ctx), "labels": blueprint.labels("sync-runs")}
    if blueprint.pod_annotations:
        meta["annotations"] = blueprint.pod_annotations
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "activeDeadlineSeconds": SYNC_RUNS_LIMIT,
        "containers": [{
            "name": "sync", "image": blueprint.image,
            "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
            "env": env,
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            "securityContext": CONTAINER_SECURITY_CONTEXT,
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
        }],
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": blueprint.workspace_claim}}],
    }
    if blueprint.image_pull_secrets:
        spec["imagePullSecrets"] = blueprint.image_pull_secrets
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def active_runs(ctx: Operation) -> list[str]:
    """The submission and sweep ids of this application's Jobs that are still running."""
    from .jobs import job_state

    data = ctx.oc.get_json(["jobs", "-l", ctx.selector("job")], what="list the jobs")
    out: set[str] = set()
    for job in data.get("items", []):
        if not job_state(job).startswith(("Succeeded", "Failed")):
            labels = (job.get("metadata") or {}).get("labels") or {}
            out.update(v for k, v in labels.items() if k in (SUBMISSION_LABEL, SWEEP_LABEL) and v)
    return sorted(out)


def sync_runs(ctx: Operation, args) -> int:
    from .deploy import VolumePod

    config = ctx.config
    secret = config.secrets.wandb
    if not secret:
        raise UserError("sync-runs uploads with the W&B API key of the Secret secrets.wandb names, and it names none",
                        hint="set secrets.wandb in config.yaml (a Secret with key WANDB_API_KEY)")
    if not _wandb_on(config):
        warn("note: W&B tracking is off in config.yaml; uploading the offline runs already on the volume")
    ctx.check_session()
    ans = ctx.oc.call("get", ["secret", secret, "-o", "name", "--ignore-not-found"], what="check the W&B Secret")
    if not ctx.dry_run and not ans.out.strip():
        raise UserError(f"the Secret {secret} (the W&B API key the upload uses) is missing",
                        hint=f"create it with: {_secret_command(ctx, secret)}; or, without it on the cluster, download the runs "
                             f"({ctx.script('sync-workspace.sh')} down --remote {wandb_dir(ctx.name)}) and run `wandb sync` here")
    active = active_runs(ctx)
    options = json.dumps({"active": active, "only": list(args.runs or [])}, separators=(",", ":"))
    words = ["python3", "-c", SYNC_SCRIPT, wandb_dir(ctx.name).rstrip("/"), results_dir(ctx.name, "").rstrip("/"), options]

    with VolumePod(ctx, None, manifest=sync_runs_pod(ctx), purpose=f"(image {ctx.blueprint.image}) to upload the offline runs") as pod:
        rc = ctx.oc.stream("exec", [pod, "--", *words], check=False)
    if ctx.dry_run:
        return 0
    if rc != 0:
        raise UserError(f"some runs were not uploaded (exit code {rc})",
                        hint="read the lines above; a run not uploaded is tried again by the next sync-runs")
    return 0
