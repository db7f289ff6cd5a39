"""What a config turns into on the cluster, as facts: names, labels, conditions and computed values.

A :class:`Blueprint` is what the manifest templates (``templates/manifests/``) are filled in
with. The templates spell every object out, field by field; what they take from here are the
names (the claim, the ConfigMap, the Services), the conditions (serves? a job? GPUs?), and the
values worked out from the config: the command, the environment, the resources, the probes.

User text reaches a manifest through the ``to_yaml``/``block`` filters and a container's
arguments as list items, never through a shell; ``$`` is doubled in user arguments so that
Kubernetes' ``$(VAR)`` expansion leaves them byte for byte.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from runtime.pod import API_KEYS_DIR_ENV, CONFIG_MOUNT, CONFIG_PATH_IN_POD, MODEL_ENV, SERVICE_ACCOUNT_DIR

from .clusters import ClusterProfile, profile
from .config import Config
from .paths import API_KEY_DATA_KEY, API_KEYS_MOUNT, PACKAGE, WORKSPACE_MOUNT

TOOL = "mlshift"
LABEL_PREFIX = "mlshift.io"
JOB_NAME_SUFFIX_LEN = 19  # "-YYMMDD-HHMMSS-abcd", added per submission
# Names. Each object's name is object_name(application name, suffix, the limit of its kind):
DNS_LABEL_MAX = 63  # Services (a DNS label), label values (a Job's name: job-name), a host's first label
DNS_SUBDOMAIN_MAX = 253  # ConfigMap, PersistentVolumeClaim, Route, Deployment, ImageStream, BuildConfig
NAME_HASH_LEN = 8  # hex digits of the hash a shortened name carries
POD_SUFFIX_LEN = 6  # "-" and the 5 random characters of a Job's pod names
INDEX_SUFFIX_LEN = len("-63")  # "-<index>" of a multi-node job's pods (deployment.num_nodes is at most 64)
# A Job's name: its pods are <job>-<index>-<random>, their host names <job>-<index> (DNS labels),
# and the controller labels them job-name: <job> (a label value). The same room for every Job
# of an application, single or multi-node, so that its submissions' names start alike.
JOB_NAME_MAX = DNS_LABEL_MAX - POD_SUFFIX_LEN - INDEX_SUFFIX_LEN
# Without inference.route.host OpenShift names the Route's host <route>-<namespace>.<apps domain>,
# and that first label has at most 63 characters. When config.yaml names no namespace (the
# current `oc project` is used), the Route's name leaves room for one of this many characters.
ROUTE_NAMESPACE_ROOM = 24
RENDEZVOUS_PORT = 29500
RENDEZVOUS_REFS = frozenset({"$(NNODES)", "$(NODE_RANK)", "$(MASTER_ADDR)", "$(MASTER_PORT)"})
IDLE_COMMAND = [
    "/bin/sh",
    "-c",
    'echo "Pod ready for manual work: oc rsh, jupyter.sh or vscode.sh"; '
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
]
# Installs the requirements at start when the image was not built with them; the file and
# the application's words are positional parameters, so no user text is parsed by the shell.
REQUIREMENTS_WRAPPER = 'if [ -n "$1" ]; then python3 -m pip install --quiet --user -r "$1" || exit 1; fi; shift; exec "$@"'
# experiment.tracking.mode auto in a pod whose manifest is written before the cluster is asked (a
# Deployment's): W&B is online when the Secret gave WANDB_API_KEY, else offline; then the command.
WANDB_AUTO_WRAPPER = ('if [ -z "${WANDB_MODE:-}" ]; then if [ -n "${WANDB_API_KEY:-}" ]; then WANDB_MODE=online; '
                      'else WANDB_MODE=offline; fi; export WANDB_MODE; fi; exec "$@"')
# Runs (issue 14): a job's Python entry point starts through the launcher, which the ConfigMap
# carries (wizard/launch.py: standard library only, so it runs in any image with Python).
LAUNCHER_FILE = PACKAGE / "launch.py"
LAUNCH_PATH_IN_POD = f"{CONFIG_MOUNT}/launch.py"
MODEL_REF = f"$({MODEL_ENV})"  # the served model in vLLM's command line, expanded by Kubernetes
RUN_LABEL = f"{LABEL_PREFIX}/submission"  # a submitted Job's pods carry their submission id (ops.base.SUBMISSION_LABEL)
# A scheduled run's eval step after a training the launcher did not start (custom_command: nothing
# marks its models complete): wait $1 seconds (the watcher's quiet period), then run the rest as it is.
AFTER_QUIET_WRAPPER = 'sleep "$1"; shift; exec "$@"'
# Schedules (application.execution.schedule): a CronJob names each Job it starts <cronjob>-<minutes
# since 1970>, and Kubernetes (1.27+) labels the Job's pods with it: a scheduled run's id.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
SCHEDULE_LABEL = f"{LABEL_PREFIX}/schedule"  # a scheduled Job and its pods: the CronJob that started them
ARGUMENTS_ANNOTATION = f"{LABEL_PREFIX}/arguments"  # a Job's arguments as JSON, which list-jobs shows (ops.base.ARGS_ANNOTATION)
CRONJOB_NAME_MAX = 52  # Kubernetes' limit for a CronJob's name: its Jobs add "-" and 8 to 11 digits
SCHEDULE_DEADLINE_SECONDS = 3600  # a run that cannot start within this long of its time is skipped
SCHEDULE_HISTORY = 7  # finished Jobs (and their logs) a CronJob keeps, of each outcome
SERVICE_ACCOUNT_TOKEN_MOUNT = SERVICE_ACCOUNT_DIR  # where clients look for it
PROMOTE_TOKEN_SECONDS = 3600  # the promote step's token's life; the kubelet renews it while the pod runs
PROMOTE_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
# What the promote step's container is given of the pod's environment: no Secrets, no run's tracking.
PROMOTE_ENV = frozenset({"HOME", "PYTHONUNBUFFERED", "PYTHONPATH", "MLSHIFT_APP", "MLSHIFT_CONFIG", "MLSHIFT_MODELS_ROOT",
                         "MLSHIFT_RUN", "POD_NAME", "POD_NAMESPACE"})
# Why a manifest Blueprint.manifests renders is left out of kustomization.yaml (what `oc apply -k` applies).
NOT_LISTED_WHY = {
    "job": "a template that `submit` instantiates per run",
    "model-store": "the namespace's model store, shared with its other deployments: deploy creates it only when it "
                   "is missing, and `oc delete -k` must not remove it",
}


# The pod's and the container's security context (OpenShift's restricted-v2: non-root with no
# fixed user id, no privilege escalation, no capabilities, RuntimeDefault seccomp), for every pod we
# make: the manifests' (templates/manifests/_pod.yaml.j2, through Blueprint) and the short-lived
# ones of deploy and compare (ops/deploy.py, ops/tracking.py).
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def object_name(name: str, suffix: str = "", limit: int = DNS_LABEL_MAX) -> str:
    """The name of one of an application's objects: ``<name>-<suffix>`` (``<name>`` without a
    suffix) when it has at most ``limit`` characters (what the object's kind allows); otherwise,
    as Helm charts do, the name cut short and a stable hash of it: ``<name cut>-<hash>-<suffix>``.

    The hash is of the application name alone: every shortened name of one application carries
    the same one, two names that begin alike get different ones, and the Jobs of one application
    keep one prefix (so they still sort by submission time). Every object name comes from here.
    """
    full = f"{name}-{suffix}" if suffix else name
    if len(full) <= limit:
        return full
    tail = "-" + hashlib.sha256(name.encode()).hexdigest()[:NAME_HASH_LEN] + (f"-{suffix}" if suffix else "")
    head = name[: max(0, limit - len(tail))].rstrip("-")
    if not head:
        raise ValueError(f"no name of {name!r} with {suffix!r} fits in {limit} characters")
    return head + tail


def route_name_limit(namespace: str | None) -> int:
    """The longest Route name whose generated host <route>-<namespace> has a first label of at
    most 63 characters (a namespace of ROUTE_NAMESPACE_ROOM characters when it is not known)."""
    return DNS_LABEL_MAX - 1 - (len(namespace) if namespace else ROUTE_NAMESPACE_ROOM)


def route_host_problem(name: str, namespace: str) -> str | None:
    """Why no Route name of ``name`` fits in the host OpenShift generates in ``namespace``, or None."""
    limit = route_name_limit(namespace)
    shortest = min(len(f"{name}-api"), 1 + 1 + NAME_HASH_LEN + len("-api"))  # "<n>-<hash>-api"
    if shortest <= limit:
        return None
    return (f"the namespace {namespace!r} ({len(namespace)} characters) leaves no room for the Route's name in the host "
            f"OpenShift gives it (<route>-<namespace>, at most {DNS_LABEL_MAX} characters before the first dot); "
            "set inference.route.host, or disable the Route (inference.route.enabled: false)")


def k8s_escape(word: str) -> str:
    """Keep a word as it is through Kubernetes' $(VAR) expansion of command and args."""
    return word.replace("$", "$$")


def param_text(value: Any) -> str:
    """A sweep parameter's value as text: in its argument and in a trial's name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def trial_identity(config: Config, sweep_id: str, index: int, params: dict[str, Any] | None, *,
                   agent: bool = False) -> dict[str, str]:
    """The run variables of trial ``index`` of a sweep (the shared contract of issue 14): its run
    id ``<sweep id>-<index, 3 digits at least>``, its name ``<app>-<k1>=<v1>,...``, its group (the
    sweep), its record folder, its model folder (MLSHIFT_MODEL_DIR, see :func:`models_root`), its
    parameters as JSON and, with W&B tracking, the W&B names.

    ``agent``: a W&B sweep's agent chooses the parameters (bayes): they are not known here, the
    name is ``<app>-<index>``, and W&B assigns the run id (no WANDB_RUN_ID, no MLSHIFT_PARAMS).
    """
    import json

    run = f"{sweep_id}-{index:03d}"
    if params:
        name = config.name + "-" + ",".join(f"{k}={param_text(v)}" for k, v in params.items())
    else:
        name = f"{config.name}-{index:03d}"
    env = {"MLSHIFT_RUN": run, "MLSHIFT_RUN_NAME": name, "MLSHIFT_RUN_GROUP": sweep_id,
           "MLSHIFT_RESULTS": f"{WORKSPACE_MOUNT}/{config.name}/results/{run}/",
           "MLSHIFT_MODEL_DIR": f"{models_root(config)}/{run}"}
    if not agent:
        env["MLSHIFT_PARAMS"] = json.dumps(params or {}, ensure_ascii=False)
    tr = config.experiment.tracking
    if tr.enabled and tr.backend == "wandb":
        env.update(WANDB_RUN_GROUP=sweep_id, WANDB_JOB_TYPE="sweep-trial", WANDB_NAME=name)
        if not agent:
            env["WANDB_RUN_ID"] = run  # stable: a retried pod resumes its run
        env["WANDB_RESUME"] = "allow"
    return env


def models_root(config: Config) -> str:
    """Where an application's runs save their models, one folder per run (MLSHIFT_MODEL_DIR is
    ``<models root>/<run id>``): ``<mount>/<name>`` on the model store, else ``/workspace/<name>/models``."""
    store = config.resources.storage.models
    if store.enabled:
        return f"{store.mount.rstrip('/')}/{config.name}"
    return f"{WORKSPACE_MOUNT}/{config.name}/models"


def results_dir(app: str, run_id: str) -> str:
    """A run's record folder on the volume: run.json, metrics.jsonl, stdout.log (see wizard/launch.py)."""
    return f"{WORKSPACE_MOUNT}/{app}/results/{run_id}/"


def wandb_dir(app: str) -> str:
    """WANDB_DIR of an application's runs: offline runs stay there on the volume (in wandb's own
    ``wandb/`` folder under it) until sync-runs uploads them."""
    return f"{WORKSPACE_MOUNT}/{app}/wandb/"


def run_identity(config: Config, run_id: str, group: str | None = None) -> dict[str, str]:
    """The run variables of one submitted run (the shared contract of issue 14; a sweep's trials:
    :func:`trial_identity`): its run id (the submission id), its name (the application's), its
    group (``group``, else the run id), its record folder, its model folder, no parameters and, with W&B tracking,
    the W&B names (job type ``train``; WANDB_RUN_ID is the run id: a retried pod resumes its run).
    ``run_id`` may be ``$(MLSHIFT_RUN)``, which Kubernetes expands (Blueprint.run_env)."""
    group = group or run_id
    env = {"MLSHIFT_RUN": run_id, "MLSHIFT_RUN_NAME": config.name, "MLSHIFT_RUN_GROUP": group,
           "MLSHIFT_RESULTS": results_dir(config.name, run_id), "MLSHIFT_PARAMS": "{}",
           "MLSHIFT_MODEL_DIR": f"{models_root(config)}/{run_id}"}
    tr = config.experiment.tracking
    if tr.enabled and tr.backend == "wandb":
        env.update(WANDB_RUN_GROUP=group, WANDB_JOB_TYPE="train", WANDB_NAME=config.name, WANDB_RUN_ID=run_id,
                   WANDB_RESUME="allow")
    return env


def launch_script() -> str:
    """The launcher's text (wizard/launch.py), as the ConfigMap carries it to /etc/mlshift/launch.py."""
    return LAUNCHER_FILE.read_text(encoding="utf-8")


# Stopping a server's pod (docs/rollouts.md; the included server's side: runtime/drain.py).
# Kubernetes drops a terminating pod from the Service's endpoints while it runs the container's
# preStop hook; kube-proxy and the routers (OpenShift's HAProxy reloads its configuration every
# few seconds) follow some seconds later. The hook pauses this long, the server still serving,
# before SIGTERM starts the drain. Every image we run has `sleep`.
PRESTOP_PAUSE_SECONDS = 10
# After the drain (inference.drain_timeout): the cut requests' errors and uvicorn's last wait
# (runtime.drain.CUT_GRACE, 5 s each at most) and the release of the model, before SIGKILL.
STOP_MARGIN_SECONDS = 15
DEFAULT_GRACE_SECONDS = 30  # Kubernetes' own: the pods that run no server (jobs, workspaces)


@dataclass(frozen=True)
class ModelStoreFacts:
    """The model store as the manifests and deploy see it (resources.storage.models, resolved)."""

    claim: str  # the PersistentVolumeClaim, shared by every deployment of the namespace naming it
    mount: str  # where the pods mount it
    size: str  # what deploy asks for when it creates it
    access_mode: str
    storage_class: str | None  # the class it is created in (None: the cluster's default)
    hf_home: str | None  # HF_HOME on the store, or None (the cache stays on the workspace)
    offline: bool  # HF_HUB_OFFLINE=1

    @property
    def labels(self) -> dict[str, str]:
        """Its labels: the tool's, no application's (so that deleting one by its labels leaves it)."""
        return {"app.kubernetes.io/name": "model-store", "app.kubernetes.io/component": "model-store",
                "app.kubernetes.io/part-of": TOOL, "app.kubernetes.io/managed-by": TOOL}


@dataclass(frozen=True)
class Step:
    """A container of a pod other than the application's own (templates/manifests/_pod.yaml.j2,
    ``steps``): one step of a scheduled run, or the eval watcher's one container."""

    name: str  # the container's name (the application's step keeps the application's: app)
    what: str  # what it does, in words: train, evaluate, promote
    command: list[str]  # escaped for Kubernetes' $(VAR) expansion
    env: list[dict[str, Any]] | None = None  # None: the pod's (the application's)
    resources: dict[str, Any] | None = None  # None: the application's
    token: bool = False  # the only container that gets the ServiceAccount's token
    working_dir: str | None = None  # None: the application's
    token_mount = SERVICE_ACCOUNT_TOKEN_MOUNT
    token_seconds = PROMOTE_TOKEN_SECONDS


@dataclass(frozen=True)
class Placement:
    """Where a pod runs and what its GPUs need (templates/manifests/_pod.yaml.j2, ``placement``):
    the application's pods have Blueprint.placement, the eval watcher's Blueprint.eval_placement."""

    gpus: int  # GPUs a container asks for: the pod then gets /dev/shm in memory
    shm_size: str | None  # the size of that /dev/shm
    tolerations: list[dict[str, Any]]
    gpu_product: str | None  # nodeSelector nvidia.com/gpu.product
    affinity: dict[str, Any] | None


@dataclass
class Blueprint:
    """The facts one config turns into on the cluster; the manifest templates are filled in with them."""

    config: Config
    folder: str  # the name of the deployment's folder (deployments/<folder>/)
    profile: ClusterProfile = field(init=False)
    # One submitted run's snapshot of workspace/ on the volume (/workspace/.runs/<id>, made by
    # submit): the working directory, the entry file and the requirements file are then there.
    run_dir: str | None = None
    # The pods of the CronJob (application.execution.schedule): their run id is their Job's name
    # (run_env), and W&B's mode auto is decided as they start (no submit decides it).
    scheduled: bool = False

    workspace_mount = WORKSPACE_MOUNT  # where the workspace volume is mounted in the container
    config_mount = CONFIG_MOUNT  # where config.yaml is mounted (CONFIG_PATH_IN_POD)

    def __post_init__(self) -> None:
        self.profile = profile(self.config.deployment.cluster)

    # ------------------------------------------------------------------ names and labels
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def namespace(self) -> str | None:
        return self.config.deployment.namespace

    @property
    def workspace_claim(self) -> str:
        return object_name(self.name, "workspace", DNS_SUBDOMAIN_MAX)

    @property
    def config_map(self) -> str:
        return object_name(self.name, "config", DNS_SUBDOMAIN_MAX)

    @property
    def headless_service(self) -> str:
        return object_name(self.name, "nodes", DNS_LABEL_MAX)

    @property
    def route_name(self) -> str:
        """The Route's name; without inference.route.host it leaves room in the generated host
        (<route>-<namespace>) for the namespace (see route_name_limit)."""
        host = self.config.inference.route.host
        return object_name(self.name, "api", DNS_SUBDOMAIN_MAX if host else route_name_limit(self.namespace))

    def job_name(self, submission: str) -> str:
        """The Job of one submission: ``<name>-<submission id>``, shortened to fit JOB_NAME_MAX."""
        return object_name(self.name, submission, JOB_NAME_MAX)

    @property
    def job_prefix(self) -> str:
        """What the name of every submission's Job starts with, before ``-<submission id>``."""
        return object_name(self.name, "", JOB_NAME_MAX - JOB_NAME_SUFFIX_LEN)

    @property
    def shortened_names(self) -> list[tuple[str, str, str]]:
        """(object, ``<name>-<suffix>``, the name it has) for each name shortened to fit its kind."""
        names = [("ConfigMap", f"{self.name}-config", self.config_map),
                 ("PersistentVolumeClaim", f"{self.name}-workspace", self.workspace_claim)]
        if self.is_job:
            names.append(("Job of each submission", f"{self.name}-<submission id>", f"{self.job_prefix}-<submission id>"))
        if self.is_job and self.multi_node:
            names.append(("headless Service", f"{self.name}-nodes", self.headless_service))
        if self.route:
            names.append(("Route", f"{self.name}-api", self.route_name))
        if self.eval_watcher:
            names.append(("eval watcher Deployment", f"{self.name}-eval", self.eval_name))
        if self.schedule:
            names.append(("CronJob", self.name, self.cronjob_name))
        return [n for n in names if n[1] != n[2]]

    def labels(self, component: str) -> dict[str, str]:
        return {
            "app": self.name,  # what `oc get jobs -l app=NAME` looks for (the seeds' habit); selectors leave it out
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": self.name,
            "app.kubernetes.io/managed-by": TOOL,
        }

    def selector(self, component: str) -> dict[str, str]:
        return {"app.kubernetes.io/instance": self.name, "app.kubernetes.io/component": component}

    @property
    def component(self) -> str:
        mode = self.config.application.execution.mode
        if mode == "job":
            return "job"
        return "server" if self.config.serves else ("workspace" if mode == "manual" else "app")

    # ------------------------------------------------------------------ what is rendered
    @property
    def mode(self) -> str:
        return self.config.application.execution.mode

    @property
    def is_job(self) -> bool:
        return self.mode == "job"

    @property
    def serves(self) -> bool:
        return self.config.serves

    @property
    def route(self) -> bool:
        return self.serves and self.config.inference.route.enabled

    @property
    def hpa(self) -> bool:
        return self.serves and self.config.inference.autoscaling.enabled

    @property
    def service_monitor(self) -> bool:
        return self.config.monitoring.service_monitor

    @property
    def build(self) -> bool:
        return self.config.image.build

    @property
    def multi_node(self) -> bool:
        return self.config.multi_node

    # ------------------------------------------------------------------ image
    @property
    def image(self) -> str:
        img = self.config.image
        if img.build:
            return f"{self.name}:latest"  # resolved through the ImageStream's local lookup
        return img.name or img.base or ""  # run as it is (vLLM's own image for the included server on vLLM)

    @property
    def image_pull_secrets(self) -> list[dict[str, str]]:
        secret = self.config.image.pull_secret
        return [{"name": secret}] if secret else []

    @property
    def pod_annotations(self) -> dict[str, str]:
        # Lets a Job or Deployment pod refer to the ImageStream tag by its short name.
        return {"alpha.image.policy.openshift.io/resolve-names": "*"} if self.build else {}

    def image_trigger(self, container: str) -> dict[str, str]:
        """A Deployment's annotation that rolls ``container`` out on each new build of the image
        (none when the image is not built on the cluster)."""
        if not self.build:
            return {}
        import json

        trigger = [{"from": {"kind": "ImageStreamTag", "name": f"{self.name}:latest"},
                    "fieldPath": f'spec.template.spec.containers[?(@.name=="{container}")].image'}]
        return {"image.openshift.io/triggers": json.dumps(trigger, separators=(",", ":"))}

    @property
    def deployment_annotations(self) -> dict[str, str]:
        return self.image_trigger(self.container_name)

    @property
    def container_name(self) -> str:
        return "app"

    # ------------------------------------------------------------------ command
    @property
    def working_dir(self) -> str:
        """Where the application runs: its run's snapshot when it has one, else the configured folder."""
        return self.run_dir or self.configured_working_dir

    @property
    def configured_working_dir(self) -> str:
        """application.runtime.working_dir, or /workspace/<name>: where deploy copies workspace/."""
        return self.config.application.runtime.working_dir or f"{WORKSPACE_MOUNT}/{self.name}"

    @property
    def code_from_workspace(self) -> bool:
        """The application runs code from workspace/ (a single file or a directory) in a folder on
        the volume: what submit snapshots for each run."""
        app = self.config.application
        return (app.enabled and app.type in ("single_file", "directory")
                and self.configured_working_dir.startswith(WORKSPACE_MOUNT + "/"))

    def _in_workdir(self, path: str) -> str:
        if path.startswith("/"):
            return posixpath.normpath(path)
        return posixpath.normpath(posixpath.join(self.working_dir, path))

    @property
    def entry_file(self) -> str | None:
        app = self.config.application
        if app.type == "single_file" and app.source.path:
            return self._in_workdir(posixpath.basename(app.source.path.rstrip("/")))
        if app.type == "directory" and app.source.entry_point:
            return self._in_workdir(app.source.entry_point)
        return None

    @property
    def launcher(self) -> str:
        explicit = self.config.application.execution.launcher
        if explicit:
            return explicit
        return "torchrun" if self.multi_node else "python"

    @property
    def uses_launcher(self) -> bool:
        """A job's Python entry point starts through the launcher (/etc/mlshift/launch.py, from the
        ConfigMap): it starts the W&B run when tracking is on and writes the run's record folder."""
        app = self.config.application
        return self.is_job and app.enabled and app.type in ("single_file", "directory") and bool(self.entry_file)

    @property
    def launch_script(self) -> str:
        return launch_script()

    @property
    def user_argv(self) -> list[str]:
        return self.config.application.execution.argv()

    def _argv_parts(self, extra_args: list[str] | None) -> tuple[list[str], list[str]]:
        """(the words this tool puts first, the user's arguments)."""
        app = self.config.application
        args = self.user_argv if extra_args is None else list(extra_args)
        if self.config.stock_vllm:
            return self.vllm_command, args  # vLLM's own server; the user's arguments are vLLM's
        if app.type == "model_server":
            return ["python3", "-m", "runtime", "serve", "--config", CONFIG_PATH_IN_POD], args
        if app.type == "batch_inference":
            return ["python3", "-m", "runtime", "batch", "--config", CONFIG_PATH_IN_POD], args
        if app.type == "custom_command":
            return shlex.split(app.source.command or ""), args
        entry = self.entry_file or ""
        if self.launcher == "torchrun":
            dist = ["--nproc-per-node", str(max(1, self.gpus))]
            if self.multi_node:
                dist += ["--nnodes", "$(NNODES)", "--node-rank", "$(NODE_RANK)",
                         "--master-addr", "$(MASTER_ADDR)", "--master-port", "$(MASTER_PORT)"]
            return ["torchrun", *dist, entry], args
        return ["python3", entry], args

    @cached_property
    def vllm_command(self) -> list[str]:
        """``vllm serve MODEL ...``: vLLM's server with the arguments the included runtime would
        give it (runtime/engine_vllm.py maps them, one place); the API key stays in the
        environment (VLLM_API_KEY, from the Secret), never on the command line."""
        from runtime.engine_vllm import cli_command
        from runtime.settings import EngineSettings, ServeSettings

        inf = self.config.inference
        return cli_command(ServeSettings.model_validate({k: getattr(inf, k) for k in EngineSettings.model_fields}))

    def app_argv(self, extra_args: list[str] | None = None) -> list[str]:
        """The application's words as the process sees them (what ``run-app`` executes too)."""
        prefix, args = self._argv_parts(extra_args)
        return prefix + args

    @cached_property
    def container_command(self) -> list[str]:
        return self.command_for(None)

    def command_for(self, extra_args: list[str] | None) -> list[str]:
        """The container's command, escaped for Kubernetes, with other arguments if given."""
        app = self.config.application
        if not app.enabled or self.mode == "manual":
            return list(IDLE_COMMAND)
        prefix, args = self._argv_parts(extra_args)
        if self.uses_launcher:  # python3|torchrun ... /etc/mlshift/launch.py ENTRY ARGS
            prefix = [*prefix[:-1], LAUNCH_PATH_IN_POD, prefix[-1]]
        ours = RENDEZVOUS_REFS if (self.launcher == "torchrun" and self.multi_node) else frozenset()
        if self.config.stock_vllm and self.model_from_env:  # vllm serve $(RUNTIME_MODEL) ...: the model promote sets
            prefix = [*prefix[:2], MODEL_REF, *prefix[3:]]
            ours = ours | {MODEL_REF}
        words = [w if w in ours else k8s_escape(w) for w in prefix] + [k8s_escape(w) for w in args]
        return self.started(words)

    @property
    def model_from_env(self) -> bool:
        """The server takes its model from RUNTIME_MODEL, which the pods have (config.yaml's model)
        and promote changes on the Deployment: the included server, on either engine (vLLM's own
        image: its command's model argument is ``$(RUNTIME_MODEL)``)."""
        return self.runs_server and self.config.application.type == "model_server"

    def started(self, words: list[str]) -> list[str]:
        """The container's command that runs ``words`` (escaped for Kubernetes): behind the
        installer of the requirements when the image was not built with them."""
        req = self.config.application.requirements
        if req and not self.build and not self.config.uses_runtime:
            words = ["/bin/sh", "-c", REQUIREMENTS_WRAPPER, "mlshift-start", k8s_escape(self._in_workdir(req)), *words]
        if self.wandb_on and self.wandb_mode == "auto" and (not self.is_job or self.scheduled):  # not decided by a submit
            words = ["/bin/sh", "-c", WANDB_AUTO_WRAPPER, "mlshift-wandb", *words]
        return words

    # ------------------------------------------------------------------ resources
    @property
    def gpus(self) -> int:
        return self.config.resources.gpus

    @property
    def resources(self) -> dict[str, Any]:
        r = self.config.resources
        amounts: dict[str, Any] = {"cpu": r.cpu, "memory": r.memory}
        if r.gpus:
            amounts[self.profile.gpu_resource] = r.gpus
        return {"requests": dict(amounts), "limits": dict(amounts)}

    def _placement(self, gpus: int, shm_size: str | None, affinity: dict[str, Any] | None) -> Placement:
        """A pod's placement for ``gpus`` GPUs: the cluster profile's GPU tolerations and the GPU
        model (config.yaml's, else the profile's) only when it asks for GPUs."""
        product = self.config.resources.gpu_product or self.profile.gpu_product
        tolerations = [t.model_dump(exclude_none=True) for t in self.profile.gpu_tolerations] if gpus else []
        return Placement(gpus, shm_size, tolerations, product if (product and gpus) else None, affinity)

    @property
    def pod_security_context(self) -> dict[str, Any]:
        return POD_SECURITY_CONTEXT

    @property
    def container_security_context(self) -> dict[str, Any]:
        return CONTAINER_SECURITY_CONTEXT

    @property
    def placement(self) -> Placement:
        """The application's pods' placement: the resources section's GPUs, /dev/shm and GPU model."""
        return self._placement(self.gpus, self.config.resources.shm_size, self.pod_affinity)

    # ------------------------------------------------------------------ the model store
    @property
    def model_store(self) -> "ModelStoreFacts | None":
        """The namespace's model store this deployment mounts (resources.storage.models), or None."""
        store = self.config.resources.storage.models
        if not store.enabled:
            return None
        return ModelStoreFacts(claim=store.claim, mount=store.mount, size=store.size, access_mode=store.access_mode,
                               storage_class=store.storage_class or self.profile.storage_class,
                               hf_home=f"{store.mount}/.cache/huggingface" if store.hf_cache else None,
                               offline=store.offline)

    @property
    def models_root(self) -> str:
        """Where this application's runs save their models (MLSHIFT_MODELS_ROOT): one folder per run."""
        return models_root(self.config)

    @property
    def hf_home(self) -> str:
        """HF_HOME: on the model store when it keeps the hub's cache, else on the workspace volume."""
        store = self.model_store
        return store.hf_home if store and store.hf_home else f"{WORKSPACE_MOUNT}/.cache/huggingface"

    @property
    def volumes_read_write_once(self) -> list[str]:
        """The volumes the pods mount that attach to one node at a time: "workspace", "model store"."""
        out = []
        if self.config.resources.storage.access_mode == "ReadWriteOnce":
            out.append("workspace")
        if self.model_store and self.model_store.access_mode == "ReadWriteOnce":
            out.append("model store")
        return out

    # ------------------------------------------------------------------ the eval watcher
    @property
    def eval_watcher(self) -> bool:
        return self.config.experiment.eval_watcher.enabled

    @property
    def image_runs_torch(self) -> bool:
        """The image runs the transformers engine (the included server or batch runner on it, or the
        eval watcher): the build installs torch when the base has none (a CPU base)."""
        c = self.config
        return (c.uses_runtime and c.inference.engine == "transformers") or self.eval_watcher

    @property
    def eval_name(self) -> str:
        """The eval watcher's Deployment: ``<name>-eval``."""
        return object_name(self.name, "eval", DNS_LABEL_MAX)

    @property
    def eval_prompts(self) -> str:
        """The prompts file in the pod: deploy uploads workspace/ to /workspace/<name> (the folder
        it runs from, for a single file or a directory) when the eval watcher is on."""
        return posixpath.join(self.workspace_folder, self.config.experiment.eval_watcher.prompts)

    @property
    def workspace_folder(self) -> str:
        """Where deploy copies workspace/: the working directory when it is on the volume, else /workspace/<name>."""
        wd = self.configured_working_dir
        return wd if wd.startswith(WORKSPACE_MOUNT + "/") else f"{WORKSPACE_MOUNT}/{self.name}"

    @property
    def eval_output(self) -> str:
        """``--output`` of the watcher: it writes ``eval/`` there (/workspace/<name>/results/eval/)."""
        return f"{WORKSPACE_MOUNT}/{self.name}/results"

    @property
    def eval_command(self) -> list[str]:
        """The watcher's argv (``python3 -m runtime watch``) over the models root; add ``--once`` to
        evaluate what is complete and exit. No shell, no ``$``: it is a container's command as it is."""
        ew = self.config.experiment.eval_watcher
        return ["python3", "-m", "runtime", "watch", "--checkpoints", self.models_root, "--prompts", self.eval_prompts,
                "--every", str(ew.every), "--max-tokens", str(ew.max_tokens), "--output", self.eval_output]

    @property
    def eval_resources(self) -> dict[str, Any]:
        ew = self.config.experiment.eval_watcher
        amounts: dict[str, Any] = {"cpu": ew.cpu, "memory": ew.memory}
        if ew.gpus:
            amounts[self.profile.gpu_resource] = ew.gpus
        return {"requests": dict(amounts), "limits": dict(amounts)}

    @property
    def eval_env(self) -> list[dict[str, Any]]:
        """The watcher's environment: the pods' own caches, the models root, the hub's token; no run
        variables (it is no run) and no tracking (its results stay on the volume)."""
        keep = {"HOME", "PYTHONUNBUFFERED", "PYTHONPATH", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TORCH_HOME",
                "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "PIP_CACHE_DIR", "MPLCONFIGDIR", "DO_NOT_TRACK",
                "MLSHIFT_APP", "MLSHIFT_MODELS_ROOT", "POD_NAME", "POD_NAMESPACE", "HF_TOKEN"}
        return [e for e in self.env if e["name"] in keep]

    @property
    def eval_affinity(self) -> dict[str, Any] | None:
        """On a ReadWriteOnce workspace or store the watcher must run where the training pods run
        (the volume is attached to that node): required pod affinity to this application's job
        pods by hostname. It is scheduled once a job runs, and stays (IgnoredDuringExecution)."""
        if not self.volumes_read_write_once:
            return None
        return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": self.selector("job")}, "topologyKey": "kubernetes.io/hostname"}]}}

    @property
    def eval_placement(self) -> Placement:
        """The watcher's placement: its own GPUs (experiment.eval_watcher.gpus), a 2Gi /dev/shm with
        them, and on a ReadWriteOnce volume the training pods' node (eval_affinity)."""
        return self._placement(self.config.experiment.eval_watcher.gpus, "2Gi", self.eval_affinity)

    @property
    def eval_container(self) -> Step:
        """The watcher's one container (``watch``): its command, environment and resources, run from
        the folder deploy uploads workspace/ to (its prompts are there)."""
        return Step("watch", "watch", self.eval_command, env=self.eval_env, resources=self.eval_resources,
                    working_dir=self.workspace_folder)

    @property
    def eval_deployment_annotations(self) -> dict[str, str]:
        return self.image_trigger(self.eval_container.name)

    @property
    def storage_class(self) -> str | None:
        return self.config.resources.storage.storage_class or self.profile.storage_class

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> list[dict[str, Any]]:
        cfg, inf, tr = self.config, self.config.inference, self.config.experiment.tracking
        cache = f"{WORKSPACE_MOUNT}/.cache"
        env: list[dict[str, Any]] = [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "PYTHONPATH", "value": "/opt/mlshift"},
            {"name": "XDG_CACHE_HOME", "value": cache},
            {"name": "HF_HOME", "value": self.hf_home},
            *([{"name": "HF_HUB_OFFLINE", "value": "1"}] if self.model_store and self.model_store.offline else []),
            {"name": "TORCH_HOME", "value": f"{cache}/torch"},
            {"name": "VLLM_CACHE_ROOT", "value": f"{cache}/vllm"},
            {"name": "TRITON_CACHE_DIR", "value": "/tmp/triton"},
            {"name": "TORCHINDUCTOR_CACHE_DIR", "value": "/tmp/torchinductor"},
            {"name": "PIP_CACHE_DIR", "value": "/tmp/pip"},
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            {"name": "DO_NOT_TRACK", "value": "1"},
            {"name": "MLSHIFT_APP", "value": self.name},
            {"name": "MLSHIFT_CONFIG", "value": CONFIG_PATH_IN_POD},
            {"name": "MLSHIFT_MODELS_ROOT", "value": self.models_root},
            *([{"name": "MLSHIFT_SNAPSHOT", "value": posixpath.basename(self.run_dir)}] if self.run_dir else []),
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ]
        if cfg.secrets.huggingface:
            env.append(self._secret_env("HF_TOKEN", cfg.secrets.huggingface, "HF_TOKEN", optional=True))
        if cfg.inference.enabled or cfg.application.type == "batch_inference":
            env.append({"name": "PORT", "value": str(inf.port)})
        if self.model_from_env:  # the served model: config.yaml's, until promote sets another
            env.append({"name": MODEL_ENV, "value": k8s_escape(inf.model or "")})
        if self.api_keys_secret and self.api_keys_mounted:
            env.append({"name": API_KEYS_DIR_ENV, "value": API_KEYS_MOUNT})
        elif self.api_keys_secret:
            env.append(self._secret_env("VLLM_API_KEY", self.api_keys_secret, API_KEY_DATA_KEY))
        env += self.run_env  # a job's run variables: MLSHIFT_RUN first, the others refer to it
        if tr.enabled:
            if tr.backend == "wandb":
                mode = self.wandb_mode
                env += [{"name": "MLSHIFT_TRACKING", "value": "wandb"},
                        {"name": "WANDB_PROJECT", "value": tr.project}]
                if tr.entity:
                    env.append({"name": "WANDB_ENTITY", "value": tr.entity})
                if tr.tags:
                    env.append({"name": "WANDB_TAGS", "value": ",".join(tr.tags)})
                env.append({"name": "WANDB_DIR", "value": wandb_dir(self.name)})
                if mode != "auto":  # auto, not decided yet: the launcher (or the pod's start) decides from WANDB_API_KEY
                    env.append({"name": "WANDB_MODE", "value": mode})
                if tr.base_url:
                    env.append({"name": "WANDB_BASE_URL", "value": tr.base_url})
                if cfg.secrets.wandb and mode != "offline":
                    env.append(self._secret_env("WANDB_API_KEY", cfg.secrets.wandb, "WANDB_API_KEY", optional=mode == "auto"))
            elif tr.backend == "mlflow":
                env += [{"name": "MLFLOW_TRACKING_URI", "value": tr.uri or ""},
                        {"name": "MLFLOW_EXPERIMENT_NAME", "value": tr.project}]
            else:
                env.append({"name": "TENSORBOARD_LOGDIR", "value": f"{WORKSPACE_MOUNT}/tensorboard/{self.name}"})
        if self.multi_node:
            env += [
                {"name": "JOB_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}},
                {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                {"name": "NNODES", "value": str(cfg.deployment.num_nodes)},
                {"name": "NPROC_PER_NODE", "value": str(max(1, self.gpus))},
                {"name": "MASTER_ADDR", "value": f"$(JOB_NAME)-0.{self.headless_service}"},
                {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
            ]
        return env

    @property
    def wandb_on(self) -> bool:
        tr = self.config.experiment.tracking
        return tr.enabled and tr.backend == "wandb"

    @property
    def wandb_mode(self) -> str:
        """online, offline, or auto while not decided (a manifest written before the cluster is
        asked). submit decides auto for the Jobs it creates (ops/tracking.py); offline without secrets.wandb."""
        mode = self.config.experiment.tracking.mode
        return "offline" if (mode == "auto" and not self.config.secrets.wandb) else mode

    @property
    def run_env(self) -> list[dict[str, Any]]:
        """A submitted Job's run variables (:func:`run_identity`): MLSHIFT_RUN is its submission id,
        read from its pods' label; the others refer to it. None for the pods of a Deployment."""
        if not self.is_job:
            return []
        # A scheduled run (the CronJob's pods): its id is its Job's name, its group the schedule's.
        values = run_identity(self.config, "$(MLSHIFT_RUN)", self.schedule_group if self.scheduled else None)
        label = JOB_NAME_LABEL if self.scheduled else RUN_LABEL
        env: list[dict[str, Any]] = [{"name": "MLSHIFT_RUN", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}}]
        return env + [{"name": k, "value": v} for k, v in values.items() if k != "MLSHIFT_RUN"]

    @staticmethod
    def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": secret, "key": key}
        if optional:
            ref["optional"] = True
        return {"name": name, "valueFrom": {"secretKeyRef": ref}}

    @property
    def secrets(self) -> list[dict[str, str]]:
        """The Secrets the pods reference, with how to create each (values never written here)."""
        cfg, out = self.config, []
        if cfg.secrets.huggingface:
            out.append({"name": cfg.secrets.huggingface, "key": "HF_TOKEN", "purpose": "Hugging Face token for gated models", "required": "no"})
        mode = self.wandb_mode
        if self.wandb_on and mode != "offline" and cfg.secrets.wandb:
            out.append({"name": cfg.secrets.wandb, "key": "WANDB_API_KEY", "required": "yes" if mode == "online" else "no",
                        "purpose": "Weights & Biases API key" + ("" if mode == "online" else "; without it runs are tracked offline")})
        return out  # the key Secret (api_keys_secret) is not among them: deploy creates it

    # ------------------------------------------------------------------ API keys
    @property
    def api_keys_secret(self) -> str | None:
        """The Secret of the API keys the server asks clients for (inference.api_key_secret), when
        it serves; deploy creates it with a random key ``api-key`` when it is missing."""
        return self.config.inference.api_key_secret if self.serves else None

    @property
    def api_keys_mounted(self) -> bool:
        """The keys reach the pod as files, one per data key of the Secret (API_KEYS_MOUNT, named by
        RUNTIME_API_KEYS_DIR; a changed Secret reaches the files without a restart): for the
        included transformers server and the user's own server. vLLM takes one key, from its
        environment (VLLM_API_KEY, the data key ``api-key``), read once at start."""
        return bool(self.api_keys_secret) and not self.config.runs_vllm

    @property
    def api_keys_mount(self) -> str:
        return API_KEYS_MOUNT

    @property
    def route_path(self) -> str | None:
        """The path the Route passes (inference.route.path; None when it passes every path)."""
        path = self.config.inference.route.path
        return path if path and path.rstrip("/") else None

    # ------------------------------------------------------------------ serving
    @property
    def port(self) -> int:
        return self.config.inference.port

    @property
    def http_port(self) -> int | None:
        """The container's port named ``http``, when it listens (not in a job's pods)."""
        return self.port if (self.config.inference.enabled and not self.is_job) else None

    @property
    def probes(self) -> dict[str, dict[str, Any]]:
        """The bodies of the startup, readiness and liveness probes; none when nothing serves.

        Startup covers the model load; liveness and readiness only start after it.
        """
        if not self.runs_server:
            return {}
        inf = self.config.inference
        period = 10
        return {
            "startup": {"httpGet": {"path": inf.health_check, "port": "http"},
                        "periodSeconds": period, "timeoutSeconds": 5,
                        "failureThreshold": math.ceil(inf.startup_timeout / period)},
            # Every 5 s, out after two failures: a server that drains (503) or stops answering
            # leaves the endpoints within 10 s.
            "readiness": {"httpGet": {"path": inf.readiness_check, "port": "http"},
                          "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2},
            "liveness": {"httpGet": {"path": inf.health_check, "port": "http"},
                         "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5},
        }

    @property
    def replicas(self) -> int:
        if self.mode == "manual" or not self.serves:
            return 1
        return self.config.inference.replicas

    @property
    def most_replicas(self) -> int:
        """The most pods the Deployment runs at once: its replicas, or the autoscaler's maximum
        (what the sharing rule, config.pods_sharing_volume, counts too)."""
        auto = self.config.inference.autoscaling
        return max(self.replicas, auto.max_replicas if self.hpa else 0)

    @property
    def strategy(self) -> dict[str, Any]:
        """How a change replaces the pods (docs/rollouts.md).

        One replica: Recreate. The old pod stops (pause, drain) before the new one is created, so
        it has let go of its GPUs and of a ReadWriteOnce volume, which the new one needs (on
        another node, a RWO volume would keep it from starting at all). The server is down from
        the drain until the new pod has loaded the model.

        More than one: RollingUpdate, maxSurge 0 and maxUnavailable 1. One pod at a time is
        stopped and replaced, never one more than the replicas: no spare GPU or node is needed,
        and the others serve meanwhile. A replacement may wait (Pending) until the old pod has
        let its GPUs go; that is the pace of the rollout, drain + load per replica. These
        replicas run on several nodes, so the sharing rule (config.pods_sharing_volume, over the
        same count) has made the workspace volume ReadWriteMany, which a replacement on another
        node can mount; ReadWriteOnce with more than one replica is refused before this point.
        """
        if self.most_replicas > 1:
            return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
        return {"type": "Recreate"}

    @property
    def runs_server(self) -> bool:
        """The Deployment's container is a server (the included one, vLLM's own, or the
        application's): it gets the probes, the preStop pause and a grace period for its drain."""
        return self.serves and self.mode != "manual" and self.config.application.enabled

    @property
    def pre_stop(self) -> dict[str, Any] | None:
        """The server's preStop hook: a pause of PRESTOP_PAUSE_SECONDS before SIGTERM, while the
        routers drop the pod (it still serves meanwhile); none for other pods."""
        if not self.runs_server:
            return None
        return {"exec": {"command": ["sleep", str(PRESTOP_PAUSE_SECONDS)]}}

    @property
    def termination_grace_period(self) -> int:
        """Seconds from the pod's deletion to SIGKILL. A server's: the preStop pause, its drain
        (inference.drain_timeout: the included server's, vLLM's --shutdown-timeout) and a margin
        for what comes after; other pods keep Kubernetes' 30."""
        if not self.runs_server:
            return DEFAULT_GRACE_SECONDS
        return PRESTOP_PAUSE_SECONDS + self.config.inference.drain_timeout + STOP_MARGIN_SECONDS

    @property
    def route_annotations(self) -> dict[str, str]:
        return {"haproxy.router.openshift.io/timeout": self.config.inference.route.timeout}

    # ------------------------------------------------------------------ jobs
    @property
    def job_backoff_limit(self) -> int:
        return 0 if self.multi_node else 1

    @property
    def job_ttl_seconds(self) -> int:
        return 7 * 24 * 3600

    @property
    def rank_affinity(self) -> dict[str, Any] | None:
        """Multi-node: no two ranks on one node (required pod anti-affinity by hostname). A pod
        template cannot name its own Job, so the selector is this application's job pods: two
        runs of it at the same time do not share nodes either."""
        if not self.multi_node:
            return None
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": self.selector("job")}, "topologyKey": "kubernetes.io/hostname"}]}}

    @property
    def pod_affinity(self) -> dict[str, Any] | None:
        """The application's pods' affinity: one rank per node (rank_affinity) and, for the jobs of
        a deployment whose eval watcher shares a ReadWriteOnce volume with them, a preference for
        the watcher's node (where that volume is attached while it runs; a job on another node
        would wait for it)."""
        affinity = dict(self.rank_affinity or {})
        if self.is_job and self.eval_watcher and self.volumes_read_write_once:
            affinity["podAffinity"] = {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": self.selector("eval")},
                                                    "topologyKey": "kubernetes.io/hostname"}}]}
        return affinity or None

    # ------------------------------------------------------------------ schedule
    @property
    def schedule(self) -> str | None:
        """The cron expression of a job deployment's schedule (application.execution.schedule), or None."""
        return self.config.application.execution.schedule if self.is_job else None

    @property
    def schedule_timezone(self) -> str:
        """The CronJob's timeZone: application.execution.timezone, else UTC (whatever the controller's clock)."""
        return self.config.application.execution.timezone or "Etc/UTC"

    @property
    def schedule_words(self) -> str:
        """The schedule in words: "daily at 03:00 UTC", or the expression as given."""
        from .cron import parse

        return parse(self.schedule or "").words(self.config.application.execution.timezone)

    @property
    def cronjob_name(self) -> str:
        return object_name(self.name, "", CRONJOB_NAME_MAX)

    @property
    def schedule_group(self) -> str:
        """The group of every scheduled run (MLSHIFT_RUN_GROUP, W&B's group): compare-experiments.sh
        --sweep <name>-schedule compares them. Never a prefix of their ids (<cronjob>-<digits>)."""
        return f"{self.name}-schedule"

    @property
    def schedule_deadline(self) -> int:
        return SCHEDULE_DEADLINE_SECONDS

    @property
    def schedule_history(self) -> int:
        return SCHEDULE_HISTORY

    @property
    def promote_to(self) -> str | None:
        """The serving deployment a scheduled run promotes to (experiment.promote.to), when scheduled."""
        promote = self.config.experiment.promote
        return promote.to if (self.schedule and promote is not None and promote.to) else None

    @property
    def promote_account(self) -> str | None:
        """The ServiceAccount (and Role, RoleBinding) of the schedule's promote step, or None: it may
        get and patch the one Deployment promote_to names, nothing else."""
        return object_name(self.name, "promote", DNS_SUBDOMAIN_MAX) if self.promote_to else None

    @property
    def promote_rules(self) -> list[dict[str, Any]]:
        return [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [self.promote_to],
                 "verbs": ["get", "patch"]}]

    @cached_property
    def scheduled_run(self) -> "Blueprint":
        """The blueprint of the CronJob's pods: this one, its runs identified by their Job's name."""
        import dataclasses

        return dataclasses.replace(self, scheduled=True)

    @property
    def schedule_labels(self) -> dict[str, str]:
        """The labels a scheduled Job and its pods carry besides the job ones."""
        return {SCHEDULE_LABEL: self.cronjob_name}

    @property
    def schedule_annotations(self) -> dict[str, str]:
        """A scheduled Job's annotations: its arguments, as a submitted Job has them (list-jobs shows them)."""
        import json

        return {ARGUMENTS_ANNOTATION: json.dumps(self.user_argv, ensure_ascii=False)}

    @property
    def schedule_steps(self) -> list[Step]:
        """A scheduled run's steps, in order, in one pod (use scheduled_run's): train (the
        application, as a submitted Job runs it), then evaluate (the eval watcher's command, once,
        with its environment and the training's resources: the pod has them, GPUs and all) when
        experiment.eval_watcher is on, then promote (``python3 -m runtime promote --if-better``,
        small, the only one with the token) when experiment.promote.to is set. A step runs only
        when the one before succeeded.

        The evaluation starts at once: a training started through the launcher (a Python entry
        point) has ended with exit code 0, and the launcher then wrote the watcher's marker file
        in every model folder of the run, so the watcher takes this run's models as complete
        without its quiet period (another run's, being written meanwhile, still waits). A
        custom_command training has no launcher, so nothing marks its models: after it the eval
        step waits the quiet period first."""
        steps = [Step(self.container_name, "train", self.container_command)]
        if self.eval_watcher:
            command = [k8s_escape(w) for w in [*self.eval_command, "--once"]]
            if not self.uses_launcher:  # nothing marks the models: wait until their files count as settled
                from runtime.settings import WatchSettings

                quiet = math.ceil(WatchSettings.model_fields["quiet_seconds"].default)
                command = ["/bin/sh", "-c", AFTER_QUIET_WRAPPER, "mlshift-eval", str(quiet), *command]
            steps.append(Step("eval", "evaluate", command, env=self.eval_env))
        if self.promote_to:
            steps.append(Step("promote", f"promote to {self.promote_to} if better",
                              ["python3", "-m", "runtime", "promote", "--config", CONFIG_PATH_IN_POD, "--if-better"],
                              env=[e for e in self.env if e["name"] in PROMOTE_ENV], resources=PROMOTE_RESOURCES, token=True))
        return steps

    # ------------------------------------------------------------------ what gets rendered
    @property
    def manifests(self) -> list[tuple[str, bool]]:
        """(template name, listed in kustomization) for every manifest this config needs."""
        out: list[tuple[str, bool]] = [("configmap", True), ("persistentvolumeclaim", True)]
        if self.build:
            out += [("imagestream", True), ("buildconfig", True)]
        if self.is_job:
            if self.multi_node:
                out.append(("service-headless", True))
            out.append(("job", False))  # a template: each submission creates its own Job from it
            if self.promote_account:  # before the CronJob, whose pods use it
                out += [("serviceaccount-promote", True), ("role-promote", True), ("rolebinding-promote", True)]
            if self.schedule:
                out.append(("cronjob", True))
        else:
            out.append(("deployment", True))
        if self.serves:
            out.append(("service", True))
        if self.route:
            out.append(("route", True))
        if self.hpa:
            out.append(("horizontalpodautoscaler", True))
        if self.service_monitor:
            out.append(("servicemonitor", True))
        if self.eval_watcher:
            out.append(("eval-watcher", True))
        if self.model_store:
            out.append(("model-store", False))  # shared by the namespace's deployments: deploy creates it when missing
        return out
