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

import math
import posixpath
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .clusters import ClusterProfile, profile
from .config import Config
from .paths import CONFIG_MOUNT, CONFIG_PATH_IN_POD, WORKSPACE_MOUNT

TOOL = "mlshift"
LABEL_PREFIX = "mlshift.io"
JOB_NAME_SUFFIX_LEN = 19  # "-YYMMDD-HHMMSS-abcd", added per submission
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


# The pod's and the container's security context, as templates/manifests/_pod.yaml.j2 spells
# them out for the application's pods; the short-lived sync pod (ops/deploy.py) uses these.
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def k8s_escape(word: str) -> str:
    """Keep a word as it is through Kubernetes' $(VAR) expansion of command and args."""
    return word.replace("$", "$$")


@dataclass
class Blueprint:
    """The facts one config turns into on the cluster; the manifest templates are filled in with them."""

    config: Config
    folder: str  # the name of the deployment's folder (deployments/<folder>/)
    profile: ClusterProfile = field(init=False)

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
        return f"{self.name}-workspace"

    @property
    def config_map(self) -> str:
        return f"{self.name}-config"

    @property
    def headless_service(self) -> str:
        return f"{self.name}-nodes"

    @property
    def route_name(self) -> str:
        return f"{self.name}-api"

    def labels(self, component: str) -> dict[str, str]:
        return {
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
        return img.name or img.base or ""

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
        return self.config.application.runtime.working_dir or f"{WORKSPACE_MOUNT}/{self.name}"

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
    def user_argv(self) -> list[str]:
        return self.config.application.execution.argv()

    def _argv_parts(self, extra_args: list[str] | None) -> tuple[list[str], list[str]]:
        """(the words this tool puts first, the user's arguments)."""
        app = self.config.application
        args = self.user_argv if extra_args is None else list(extra_args)
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
        ours = RENDEZVOUS_REFS if (self.launcher == "torchrun" and self.multi_node) else frozenset()
        words = [w if w in ours else k8s_escape(w) for w in prefix] + [k8s_escape(w) for w in args]
        req = app.requirements
        if req and not self.build and not self.config.uses_runtime:
            return ["/bin/sh", "-c", REQUIREMENTS_WRAPPER, "mlshift-start", k8s_escape(self._in_workdir(req)), *words]
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
        if tr.enabled:
            if tr.backend == "wandb":
                env += [{"name": "WANDB_PROJECT", "value": tr.project},
                        {"name": "WANDB_DIR", "value": f"{WORKSPACE_MOUNT}/wandb"},
                        {"name": "WANDB_MODE", "value": tr.mode}]
                if tr.entity:
                    env.append({"name": "WANDB_ENTITY", "value": tr.entity})
                if tr.tags:
                    env.append({"name": "WANDB_TAGS", "value": ",".join(tr.tags)})
                if cfg.secrets.wandb and tr.mode == "online":
                    env.append(self._secret_env("WANDB_API_KEY", cfg.secrets.wandb, "WANDB_API_KEY"))
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
        tr = cfg.experiment.tracking
        if tr.enabled and tr.backend == "wandb" and tr.mode == "online" and cfg.secrets.wandb:
            out.append({"name": cfg.secrets.wandb, "key": "WANDB_API_KEY", "purpose": "Weights & Biases API key", "required": "yes"})
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
