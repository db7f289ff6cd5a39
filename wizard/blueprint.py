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

from .clusters import ClusterProfile, profile
from .config import Config
from .paths import CONFIG_MOUNT, CONFIG_PATH_IN_POD, PACKAGE, WORKSPACE_MOUNT

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
RUN_LABEL = f"{LABEL_PREFIX}/submission"  # a submitted Job's pods carry their submission id (ops.base.SUBMISSION_LABEL)


# The pod's and the container's security context, as templates/manifests/_pod.yaml.j2 spells
# them out for the application's pods; the short-lived sync pod (ops/deploy.py) uses these.
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
    sweep), its record folder, its parameters as JSON and, with W&B tracking, the W&B names.

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
           "MLSHIFT_RESULTS": f"{WORKSPACE_MOUNT}/{config.name}/results/{run}/"}
    if not agent:
        env["MLSHIFT_PARAMS"] = json.dumps(params or {}, ensure_ascii=False)
    tr = config.experiment.tracking
    if tr.enabled and tr.backend == "wandb":
        env.update(WANDB_RUN_GROUP=sweep_id, WANDB_JOB_TYPE="sweep-trial", WANDB_NAME=name)
        if not agent:
            env["WANDB_RUN_ID"] = run  # stable: a retried pod resumes its run
        env["WANDB_RESUME"] = "allow"
    return env


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
    group (``group``, else the run id), its record folder, no parameters and, with W&B tracking,
    the W&B names (job type ``train``; WANDB_RUN_ID is the run id: a retried pod resumes its run).
    ``run_id`` may be ``$(MLSHIFT_RUN)``, which Kubernetes expands (Blueprint.run_env)."""
    group = group or run_id
    env = {"MLSHIFT_RUN": run_id, "MLSHIFT_RUN_NAME": config.name, "MLSHIFT_RUN_GROUP": group,
           "MLSHIFT_RESULTS": results_dir(config.name, run_id), "MLSHIFT_PARAMS": "{}"}
    tr = config.experiment.tracking
    if tr.enabled and tr.backend == "wandb":
        env.update(WANDB_RUN_GROUP=group, WANDB_JOB_TYPE="train", WANDB_NAME=config.name, WANDB_RUN_ID=run_id,
                   WANDB_RESUME="allow")
    return env


def launch_script() -> str:
    """The launcher's text (wizard/launch.py), as the ConfigMap carries it to /etc/mlshift/launch.py."""
    return LAUNCHER_FILE.read_text(encoding="utf-8")


@dataclass
class Blueprint:
    """The facts one config turns into on the cluster; the manifest templates are filled in with them."""

    config: Config
    folder: str  # the name of the deployment's folder (deployments/<folder>/)
    profile: ClusterProfile = field(init=False)
    # One submitted run's snapshot of workspace/ on the volume (/workspace/.runs/<id>, made by
    # submit): the working directory, the entry file and the requirements file are then there.
    run_dir: str | None = None

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

    @property
    def deployment_annotations(self) -> dict[str, str]:
        if not self.build:
            return {}
        import json

        trigger = [{"from": {"kind": "ImageStreamTag", "name": f"{self.name}:latest"},
                    "fieldPath": f'spec.template.spec.containers[?(@.name=="{self.container_name}")].image'}]
        return {"image.openshift.io/triggers": json.dumps(trigger, separators=(",", ":"))}

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
        words = [w if w in ours else k8s_escape(w) for w in prefix] + [k8s_escape(w) for w in args]
        return self.started(words)

    def started(self, words: list[str]) -> list[str]:
        """The container's command that runs ``words`` (escaped for Kubernetes): behind the
        installer of the requirements when the image was not built with them."""
        req = self.config.application.requirements
        if req and not self.build and not self.config.uses_runtime:
            words = ["/bin/sh", "-c", REQUIREMENTS_WRAPPER, "mlshift-start", k8s_escape(self._in_workdir(req)), *words]
        if self.wandb_on and self.wandb_mode == "auto" and not self.is_job:
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

    @property
    def tolerations(self) -> list[dict[str, Any]]:
        if not self.gpus:
            return []
        return [t.model_dump(exclude_none=True) for t in self.profile.gpu_tolerations]

    @property
    def gpu_product(self) -> str | None:
        """The GPU model the pods are placed on (nodeSelector nvidia.com/gpu.product), if any."""
        product = self.config.resources.gpu_product or self.profile.gpu_product
        return product if (product and self.gpus) else None

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
            {"name": "HF_HOME", "value": f"{cache}/huggingface"},
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
            *([{"name": "MLSHIFT_SNAPSHOT", "value": posixpath.basename(self.run_dir)}] if self.run_dir else []),
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ]
        if cfg.secrets.huggingface:
            env.append(self._secret_env("HF_TOKEN", cfg.secrets.huggingface, "HF_TOKEN", optional=True))
        if cfg.inference.enabled or cfg.application.type == "batch_inference":
            env.append({"name": "PORT", "value": str(inf.port)})
            if inf.api_key_secret:
                env.append(self._secret_env("RUNTIME_API_KEY", inf.api_key_secret, "api-key"))
                env.append(self._secret_env("VLLM_API_KEY", inf.api_key_secret, "api-key"))
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
        values = run_identity(self.config, "$(MLSHIFT_RUN)")
        env: list[dict[str, Any]] = [{"name": "MLSHIFT_RUN", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{RUN_LABEL}']"}}}]
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
        if (cfg.inference.enabled or cfg.application.type == "batch_inference") and cfg.inference.api_key_secret:
            out.append({"name": cfg.inference.api_key_secret, "key": "api-key", "purpose": "bearer key clients must send", "required": "yes"})
        return out

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
        if not self.serves or self.mode == "manual" or not self.config.application.enabled:
            return {}
        inf = self.config.inference
        period = 10
        return {
            "startup": {"httpGet": {"path": inf.health_check, "port": "http"},
                        "periodSeconds": period, "timeoutSeconds": 5,
                        "failureThreshold": math.ceil(inf.startup_timeout / period)},
            "readiness": {"httpGet": {"path": inf.readiness_check, "port": "http"},
                          "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": 3},
            "liveness": {"httpGet": {"path": inf.health_check, "port": "http"},
                         "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5},
        }

    @property
    def replicas(self) -> int:
        if self.mode == "manual" or not self.serves:
            return 1
        return self.config.inference.replicas

    @property
    def strategy(self) -> dict[str, Any]:
        # A rolling update would need a second set of GPUs, or a second node on a RWO volume.
        if self.gpus or self.config.resources.storage.access_mode == "ReadWriteOnce":
            return {"type": "Recreate"}
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}

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
        return out
