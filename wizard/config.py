"""The schema of ``config.yaml``: one pydantic model tree, unknown keys rejected.

This module is the single list of fields. The wizard fills it, the renderer reads it, the JSON
Schema (``python -m wizard schema``) and ``docs/reference.md`` are generated from it.

Values that depend on other answers (memory and shared memory scale with GPUs, tensor
parallel size follows the GPU count, the base image follows the engine) are listed once, in
:data:`DERIVED`, and filled in by :func:`derive` where the file leaves them out; the config
records which paths it filled (:attr:`Config.derived_paths`). ``config.yaml`` as written by the
wizard shows each of them as a comment line at its place, so that reading it back derives them
again from the current answers; the copy sent to the cluster holds every value resolved.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from runtime.pod import CONFIG_MOUNT, STORE_CLAIM, STORE_MOUNT
from runtime.settings import NAME_MAX, NAME_PATTERN, BatchSettings, Engine, EngineSettings, PromoteSettings, choice, squash

from . import quantity
from .paths import WORKSPACE_MOUNT

SCHEMA_VERSION = 1
# NAME_MAX, NAME_RE: a DNS label (runtime.settings, which reads promote's target too); objects whose
# name adds a suffix are shortened to fit (blueprint.object_name)
NAME_RE = NAME_PATTERN
SECRET_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_GPUS_PER_NODE = 16
# vLLM's own image, the one place its release is pinned: the included server on vLLM runs it as
# it is. A deployment moves to another release or registry with image.base (or image.mirror).
VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.31.0"
PYTORCH_IMAGE = "docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
CPU_IMAGE = "docker.io/library/python:3.11-slim"


def check_name(value: str, what: str = "name") -> str:
    if len(value) > NAME_MAX:
        raise ValueError(f"{value!r} is {len(value)} characters; a {what} has at most {NAME_MAX}")
    if not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what}: use lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return value


def check_secret_name(value: str | None) -> str | None:
    if value is not None and (len(value) > 253 or not SECRET_NAME_RE.match(value)):
        raise ValueError(f"{value!r} is not a valid Secret name (lower-case letters, digits, '-' and '.')")
    return value


# A Route's path: "/", or segments that do not start with a dot (so never "." or ".."), an optional "/" at the end.
ROUTE_PATH_RE = re.compile(r"^/(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?)?$")


def route_passes(route_path: str | None, request_path: str) -> bool:
    """Whether the OpenShift router sends ``request_path`` through a Route with ``route_path``: a
    prefix at a segment boundary (``/v1`` passes ``/v1`` and ``/v1/models``, not ``/v1beta``); a
    path ending in ``/`` is a plain prefix; ``/`` (or none) passes everything."""
    if not route_path or not route_path.rstrip("/"):
        return True
    if route_path.endswith("/"):
        return request_path.startswith(route_path)
    return request_path == route_path or request_path.startswith(route_path + "/")


def check_http_path(value: str | None) -> str | None:
    if value is None:
        return value
    if not value.startswith("/") or any(c.isspace() for c in value) or "?" in value:
        raise ValueError(f"{value!r} is not a URL path; it starts with '/' and has no spaces or query")
    return value


SecretName = Annotated[Union[str, None], BeforeValidator(lambda v: v or None), Field()]
Memory = Annotated[str, BeforeValidator(quantity.memory)]
Cpu = Annotated[str, BeforeValidator(quantity.cpu)]
Scalar = Union[bool, int, float, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


# --------------------------------------------------------------------------- deployment
class Deployment(Strict):
    """Where and how wide the deployment runs."""

    cluster: str = Field("default", description="Cluster profile (see `clusters.yaml`): GPU toleration, storage class, GPU product.")
    namespace: str | None = Field(None, description="OpenShift project; empty means the current `oc project`.")
    mode: Annotated[Literal["single-node", "multi-node"], choice("single-node", "multi-node")] = Field(
        "single-node", description="`multi-node` runs an Indexed Job across `num_nodes` pods with torchrun rendezvous."
    )
    num_nodes: int | None = Field(None, ge=1, le=64, description="Pods (nodes) for a multi-node job.")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if len(v) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", v):
            raise ValueError(f"{v!r} is not a valid namespace (lower-case letters, digits and '-', at most 63)")
        return v

    @model_validator(mode="after")
    def _nodes(self) -> "Deployment":
        if self.mode == "multi-node" and (self.num_nodes is None or self.num_nodes < 2):
            raise ValueError("num_nodes: a multi-node deployment needs num_nodes of 2 or more")
        if self.mode == "single-node" and self.num_nodes not in (None, 1):
            raise ValueError(f"num_nodes: {self.num_nodes} nodes needs mode: multi-node")
        return self


# --------------------------------------------------------------------------- application
AppType = Literal["single_file", "directory", "custom_command", "model_server", "batch_inference"]
APP_TYPES: tuple[str, ...] = AppType.__args__  # type: ignore[attr-defined]
TRAINING_TYPES = ("single_file", "directory", "custom_command")  # the user's own programs: what a job trains
ExecMode = Literal["auto_start", "job", "manual"]
EXEC_MODES: tuple[str, ...] = ExecMode.__args__  # type: ignore[attr-defined]


class Source(Strict):
    """What to run: a file, a folder and its entry point, or a command line."""

    path: str | None = Field(None, description="The Python file (single_file) or folder (directory), relative to the deployment's `workspace/`.")
    entry_point: str | None = Field(None, description="The file to run inside the folder (directory).")
    command: str | None = Field(None, description="The command line to run (custom_command), split like a shell would, run without a shell.")

    @field_validator("path", "entry_point")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "\n" in v or "\x00" in v:
            raise ValueError("a path cannot contain newlines")
        if not v.startswith("/") and ".." in v.replace("\\", "/").split("/"):
            raise ValueError(f"{v!r} leaves the workspace; give a path inside it")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            words = shlex.split(v)
        except ValueError as exc:
            raise ValueError(f"cannot split the command into words ({exc})") from None
        if not words:
            raise ValueError("the command is empty")
        return v


class Execution(Strict):
    """When the application runs and with which arguments."""

    mode: Annotated[ExecMode, choice(*EXEC_MODES)] = Field(
        "auto_start",
        description="`auto_start`: run when the pod starts and keep running; `job`: a Job per submission; `manual`: an idle pod to exec into.",
    )
    arguments: Union[str, list[str]] = Field(
        "", description="Arguments for the application: a string split like a shell would, or a list kept word for word."
    )
    launcher: Annotated[Literal["python", "torchrun"], choice("python", "torchrun")] | None = Field(
        None, description="How Python applications start; empty means torchrun for multi-node or several GPUs with torchrun in the arguments, else python."
    )
    schedule: str | None = Field(
        None, description="Job mode: start a run on a schedule (a CronJob, created by deploy): cron's five fields "
                          "(minute hour day-of-month month day-of-week, e.g. `0 3 * * *` daily at 03:00) or @hourly, @daily, "
                          "@weekly, @monthly, @yearly. Each run trains (the application, with the configured arguments), "
                          "then evaluates (experiment.eval_watcher) and promotes (experiment.promote.to) when those are set. "
                          "One run at a time: a run still going when the next is due makes it wait, at most an hour, then "
                          "it is skipped (concurrencyPolicy Forbid). Empty: runs start only when submitted.")
    timezone: str | None = Field(
        None, description="IANA time zone the schedule's times are in, e.g. Europe/Berlin (the CronJob's timeZone); empty: UTC.")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is None or not str(v).strip():
            return None
        from .cron import parse

        return parse(v).text

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        if not v:
            return None
        from .cron import check_zone

        return check_zone(v)

    @field_validator("arguments")
    @classmethod
    def _arguments(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, str):
            try:
                shlex.split(v)
            except ValueError as exc:
                raise ValueError(f"cannot split the arguments into words ({exc}); give a list to keep them word for word") from None
        return v

    def argv(self) -> list[str]:
        if isinstance(self.arguments, list):
            return list(self.arguments)
        return shlex.split(self.arguments)


class AppRuntime(Strict):
    working_dir: str | None = Field(None, description="Working directory in the container; default `/workspace/<name>` on the workspace volume.")

    @field_validator("working_dir")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or "\n" in v):
            raise ValueError(f"{v!r} must be an absolute path in the container")
        return v


class Application(Strict):
    """The user's application, or one of the included runtime's own."""

    enabled: bool = Field(True, description="False gives pods with the resources but no application (as in manual mode).")
    type: Annotated[AppType, choice(*APP_TYPES)] = Field(
        "single_file",
        description="`single_file`, `directory`, `custom_command`, or the included runtime: `model_server` (OpenAI-compatible server) and `batch_inference`.",
    )
    name: str | None = Field(None, description="Name of every object; defaults to the deployment's folder name.")
    source: Source = Field(default_factory=Source)
    execution: Execution = Field(default_factory=Execution)
    runtime: AppRuntime = Field(default_factory=AppRuntime)
    requirements: str | None = Field(None, description="A requirements file in `workspace/`, installed into the image.")

    @model_validator(mode="before")
    @classmethod
    def _seed_custom_command(cls, data: Any) -> Any:
        # The original examples put a custom command in source.path; keep accepting that.
        if isinstance(data, dict) and squash(str(data.get("type", ""))) == "customcommand":
            src = data.get("source")
            if isinstance(src, dict) and "command" not in src and isinstance(src.get("path"), str):
                src = dict(src)
                src["command"] = src.pop("path")
                data = {**data, "source": src}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "application name")

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$", v) or ".." in v.split("/"):
            raise ValueError(f"{v!r} is not a file in workspace/ (letters, digits, '.', '_', '-', '/')")
        return v

    @model_validator(mode="after")
    def _source(self) -> "Application":
        if not self.enabled:
            return self
        t, s = self.type, self.source
        # single_file without a path runs main.py: filled in by derive(), see DERIVED
        if t == "directory" and (not s.path or not s.entry_point):
            missing = "source.path" if not s.path else "source.entry_point"
            raise ValueError(f"{missing}: a directory application needs source.path and source.entry_point")
        if t == "custom_command" and not s.command:
            raise ValueError("source.command: a custom_command application needs the command to run")
        return self


# --------------------------------------------------------------------------- resources
# Where a pod's own volumes are mounted (the model store may not cover or hide them), and the
# system folders it may not replace.
POD_MOUNTS = (WORKSPACE_MOUNT, CONFIG_MOUNT, "/tmp", "/dev/shm", "/opt/mlshift")
SYSTEM_DIRS = frozenset("/ /bin /boot /dev /etc /home /lib /lib64 /opt /proc /root /run /sbin /srv /sys /usr /var".split())


class ModelStore(Strict):
    """A volume of models that the deployments of a namespace share: one claim, created by the
    first deploy that names it, never deleted by one. Each application keeps its models in
    ``<mount>/<application name>``; a model downloaded from the hub lands in its cache once."""

    enabled: bool = Field(False, description="Mount the namespace's model store in every pod of this deployment; its runs save their models "
                                             "there (MLSHIFT_MODEL_DIR) and any deployment naming the same claim can serve them.")
    claim: str = Field(STORE_CLAIM, description="The store's PersistentVolumeClaim, one per namespace: every deployment naming it shares it. "
                                                     "deploy creates it when it is missing; delete never removes it.")
    size: Memory = Field("200Gi", description="Size of the store when deploy creates it; a store that exists is used as it is.")
    storage_class: str | None = Field(None, description="StorageClass of the store; empty means the cluster profile's rwx_storage_class "
                                                        "(ReadWriteMany), else its storage_class, then the cluster default.")
    access_mode: Annotated[Literal["ReadWriteOnce", "ReadWriteMany"], choice("ReadWriteOnce", "ReadWriteMany")] = Field(
        "ReadWriteOnce", description="ReadWriteMany lets pods on several nodes (of every deployment using it) share the store; "
                                     "ReadWriteOnce keeps them all on one node. Default ReadWriteMany where the cluster profile has an rwx_storage_class."
    )
    mount: str = Field(STORE_MOUNT, description="Where the pods mount the store; this application's models are in `<mount>/<application name>` "
                                              "(MLSHIFT_MODELS_ROOT).")
    hf_cache: bool = Field(True, description="Keep the Hugging Face cache on the store (HF_HOME=`<mount>/.cache/huggingface`), "
                                             "so that a model is downloaded once per namespace.")
    offline: bool = Field(False, description="HF_HUB_OFFLINE=1: never reach the hub, use the models on the store; set it once they are there.")

    @field_validator("claim")
    @classmethod
    def _claim(cls, v: str) -> str:
        if len(v) > 253 or not SECRET_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid claim name (lower-case letters, digits, '-' and '.', at most 253)")
        return v

    @field_validator("mount")
    @classmethod
    def _mount(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() or c == "\x00" for c in v) or ".." in v.split("/"):
            raise ValueError(f"{v!r} is not an absolute path in the container such as /models")
        v = "/" + posixpath.normpath(v).lstrip("/")  # normpath keeps a leading "//" (POSIX lets it mean something else)
        if v in SYSTEM_DIRS:
            raise ValueError(f"{v!r} is a system folder of the image; mount the store in a folder of its own such as /models")
        for taken in POD_MOUNTS:
            if v == taken or v.startswith(taken + "/") or taken.startswith(v + "/"):
                raise ValueError(f"{v!r} overlaps {taken}, where the pods have another volume; use a folder of its own such as /models")
        return v


class Storage(Strict):
    size: Memory = Field("50Gi", description="Size of the workspace volume mounted at /workspace.")
    storage_class: str | None = Field(None, description="StorageClass of the workspace volume; empty means the cluster profile's, then the cluster default.")
    access_mode: Annotated[Literal["ReadWriteOnce", "ReadWriteMany"], choice("ReadWriteOnce", "ReadWriteMany")] = Field(
        "ReadWriteOnce", description="ReadWriteMany is needed when pods on several nodes share the workspace."
    )
    models: ModelStore = Field(default_factory=ModelStore)


class Resources(Strict):
    """What each pod asks for. Memory, CPU and shared memory scale with GPUs unless set."""

    gpus: int = Field(0, ge=0, le=MAX_GPUS_PER_NODE, description="GPUs per pod (per node for multi-node).")
    gpu_product: str | None = Field(None, description="Node label `nvidia.com/gpu.product` to select, e.g. NVIDIA-A100-SXM4-80GB.")
    cpu: Cpu | None = Field(None, description="CPU cores per pod; default 4 per GPU, at least 2.")
    memory: Memory | None = Field(None, description="Memory per pod; default 32Gi per GPU, at least 16Gi.")
    shm_size: Memory | None = Field(None, description="Size of /dev/shm (memory-backed); default 8Gi per GPU, 1Gi without GPUs.")
    storage: Storage = Field(default_factory=Storage)

    @model_validator(mode="after")
    def _memory(self) -> "Resources":
        # Only a memory the user gave can be too little (the derived one never is); shm_size
        # against memory is checked in Config._rules, after derive() has filled both in.
        if self.memory is not None:
            if quantity.memory_bytes(self.memory) < 256 * 2**20:
                raise ValueError(f"memory: {self.memory} is too little for a Python process; ask for at least 256Mi")
            if self.gpus and quantity.memory_bytes(self.memory) < 4 * 2**30:
                raise ValueError(f"memory: {self.memory} is too little for a GPU pod; ask for at least 4Gi")
        return self


# --------------------------------------------------------------------------- image
class Image(Strict):
    """The container image: built on the cluster from a base image, or one run as it is."""

    build: bool | None = Field(
        None,
        description="Build an image on the cluster (BuildConfig) from `base` with the requirements and the included runtime. "
                    "Default true, except for the included server on vLLM without requirements: it runs vLLM's own image as it is.",
    )
    base: str | None = Field(None, description="Base image; default follows the engine: vLLM's image for vLLM, a CUDA PyTorch image for GPUs, Python otherwise.")
    name: str | None = Field(None, description="Image to run as it is when `build` is false (default: `base`); for the included runtime, one that has it (built from this deployment's Containerfile).")
    mirror: str | None = Field(None, description="Registry (host[:port][/path]) to pull the default images from instead of docker.io, e.g. a disconnected cluster's mirror; a `base` you give is used as given.")
    pull_secret: str | None = Field(None, description="Secret (type kubernetes.io/dockerconfigjson) the pods pull the image with (`imagePullSecrets`), and the build its base image; empty for none.")
    pull_policy: Annotated[Literal["IfNotPresent", "Always", "Never"], choice("IfNotPresent", "Always", "Never")] = "IfNotPresent"

    @field_validator("base", "name")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", v):
            raise ValueError(f"{v!r} is not an image reference such as quay.io/org/image:tag")
        return v

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, v: str | None) -> str | None:
        if not v:
            return None
        v = v.rstrip("/")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?(/[A-Za-z0-9][A-Za-z0-9._-]*)*$", v):
            raise ValueError(f"{v!r} is not a registry such as registry.example.com:5000 or quay.io/my-mirror")
        return v

    @field_validator("pull_secret")
    @classmethod
    def _pull_secret(cls, v: str | None) -> str | None:
        return check_secret_name(v or None)


def mirrored(ref: str, mirror: str | None) -> str:
    """``ref`` (docker.io/org/image:tag) pulled from ``mirror`` instead: mirror/org/image:tag."""
    return f"{mirror}/{ref.split('/', 1)[1]}" if mirror else ref


# --------------------------------------------------------------------------- inference
class Route(Strict):
    enabled: bool = Field(True, description="Expose the server through an OpenShift Route (edge TLS, HTTP redirected).")
    public: bool = Field(False, description="An open Route: anyone who can reach the router can use the model, without a key. "
                                            "False (the default): a Route needs a key Secret (inference.api_key_secret).")
    host: str | None = Field(None, description="Host name; empty lets OpenShift choose one.")
    path: str | None = Field(None, description="Only requests under this path (at a segment boundary) pass the Route; the rest "
                                               "(metrics, docs, admin endpoints) stays inside the cluster. Default: the first segment "
                                               "of inference.endpoint (`/v1`); `/` passes every path.")
    timeout: str = Field("10m", description="Router timeout for one request (haproxy units: s, m, h); long enough for LLM generations.")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not ROUTE_PATH_RE.match(v):
            raise ValueError(f"{v!r} is not a Route path such as /v1: '/' then segments of letters, digits, "
                             "'-', '_', '.' and '~' (none of them '.' or '..')")
        return v

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> str:
        if isinstance(v, int) and not isinstance(v, bool):
            v = f"{v}s"
        if not isinstance(v, str) or not re.match(r"^\d+(us|ms|s|m|h|d)$", v):
            raise ValueError(f"{v!r} is not a timeout such as 600s or 10m")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v and not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", v):
            raise ValueError(f"{v!r} is not a host name")
        return v or None


class Autoscaling(Strict):
    enabled: bool = Field(False, description="Add a HorizontalPodAutoscaler between min_replicas and max_replicas.")
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(4, ge=1, le=100)
    target_cpu_utilization: int = Field(80, ge=1, le=100, description="Average CPU utilisation (percent of requests) to scale at.")

    @model_validator(mode="after")
    def _range(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: {self.max_replicas} is below min_replicas {self.min_replicas}")
        return self


class _InferenceSwitch(Strict):
    # Declared apart so that the section opens with it; the engine settings follow, then the rest.
    enabled: bool = Field(False, description="The application serves requests: Service, probes, Route.")


class Inference(EngineSettings, _InferenceSwitch):
    """Serving: the engine settings of the included runtime, then the probes, Route and replicas.

    The engine settings (engine ... extra_args) are declared once, in ``runtime/settings.py``.
    """

    engine: Annotated[Engine, choice("vllm", "transformers")] = Field(
        "vllm", description="Engine of the included runtime: `vllm` (GPU) or `transformers` (our own server, GPU or CPU)."
    )
    protocol: Annotated[Literal["http"], choice("http")] = "http"
    endpoint: str = Field("/v1/completions", validation_alias=AliasChoices("endpoint", "path"),
                          description="The main endpoint, used by test-inference and benchmark-inference (`path` is read as this too).")
    health_check: str = Field("/health", description="Liveness path: the process is up.")
    readiness_check: str | None = Field(None, description="Readiness path: the model is loaded; default the health path for vLLM and custom servers, /ready for the included transformers server.")
    metrics: str | None = Field("/metrics", description="Prometheus metrics path; empty for none.")
    replicas: int = Field(1, ge=0, le=100)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    route: Route = Field(default_factory=Route)
    api_key_secret: str | None = Field(
        None, description="Secret whose data keys are the API keys clients send (`Authorization: Bearer KEY` or `X-API-Key: KEY`), "
                          "one key per data key; `api-key` is the one the scripts send and vLLM checks. Default `<name>-api-keys` "
                          "for a server with a Route (unless inference.route.public), none without one; deploy creates it "
                          "with a random key when it is missing.")
    startup_timeout: int = Field(1800, ge=30, le=86400, description="Seconds a model may take to load before the pod is restarted.")

    @field_validator("endpoint", "health_check", "readiness_check", "metrics")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return check_http_path(v or None)

    @field_validator("api_key_secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return check_secret_name(v or None)


class Batch(BatchSettings, Strict):
    """Input and output of the included batch-inference runner (type batch_inference)."""

    input: str = Field("/workspace/data/input.jsonl", description="JSON Lines file or folder of them, with `id` and `prompt` or `messages`.")
    output: str = Field("/workspace/results/output.jsonl", description="JSON Lines output; re-running resumes where it stopped.")


# --------------------------------------------------------------------------- monitoring, experiments
class Monitoring(Strict):
    type: Annotated[Literal["inference", "training", "none"], choice("inference", "training", "none")] | None = Field(
        None, description="What the application is (inference, training or none), recorded in the config the pods read; nothing in mlshift acts on it yet. Default follows the application."
    )
    metrics: list[str] = Field(default_factory=list, description="Metrics compare-experiments shows beside experiment.sweep.metric (--metric replaces both); they come from the runs' records and W&B.")
    service_monitor: bool = Field(False, description="Create a ServiceMonitor so the cluster's user-workload Prometheus scrapes the server.")


class Tracking(Strict):
    enabled: bool = False
    backend: Annotated[Literal["wandb", "mlflow", "tensorboard"], choice("wandb", "mlflow", "tensorboard")] = "wandb"
    project: str | None = Field(None, description="W&B project or MLflow experiment; default the application name.")
    entity: str | None = Field(None, description="W&B team or user.")
    tags: list[str] = Field(default_factory=list)
    uri: str | None = Field(None, description="MLflow tracking URI (mlflow backend).")
    mode: Annotated[Literal["auto", "online", "offline"], choice("auto", "online", "offline")] = Field(
        "auto", description="W&B mode: auto is online when the W&B Secret (secrets.wandb) exists and offline otherwise, "
                            "decided at deploy and submit; offline runs stay on the volume until sync-runs uploads them."
    )
    base_url: str | None = Field(None, description="URL of a self-hosted W&B server (WANDB_BASE_URL); empty for wandb.ai.")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL, e.g. https://wandb.example.com")
        return v or None


MAX_SWEEP_RUNS = 10_000  # trials one sweep may run (the indexes of its Job)


class Sweep(Strict):
    method: Annotated[Literal["grid", "random", "bayes"], choice("grid", "random", "bayes")] = "grid"
    parameters: dict[str, list[Scalar]] = Field(default_factory=dict, description="Argument name to the values to try.")
    max_runs: int | None = Field(None, ge=1, le=MAX_SWEEP_RUNS,
                                 description="Most runs (random and bayes need it; grid caps its product).")
    metric: str | None = Field(None, description="Metric to compare runs by.")
    goal: Annotated[Literal["minimize", "maximize"], choice("minimize", "maximize")] = "minimize"
    flag_format: str = Field("--{name}={value}", description="How one parameter becomes an argument; `{name}` and `{value}` are replaced.")
    seed: int | None = Field(None, description="Seed of a random sweep's draw (run-sweep.sh --seed replaces it); empty: a new draw each time, its seed shown at submit.")
    retries: int = Field(1, ge=0, le=10, description="Times one failed trial is tried again (per trial on Kubernetes 1.29+; older clusters: the trials share one budget, see the cluster profile's kubernetes_version).")
    max_failed_trials: int | None = Field(None, ge=0, le=MAX_SWEEP_RUNS,
                                          description="Stop the whole sweep when more trials than this have failed (Kubernetes 1.29+); empty: every trial runs whatever the others do.")

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        for name, values in v.items():
            if not re.match(r"^[A-Za-z_][-A-Za-z0-9_.]*$", name):
                raise ValueError(f"{name!r} is not a parameter name (letters, digits, '_', '-', '.')")
            if not values:
                raise ValueError(f"{name}: give at least one value")
        return v

    @field_validator("flag_format")
    @classmethod
    def _fmt(cls, v: str) -> str:
        if "{value}" not in v:
            raise ValueError("flag_format must contain {value}")
        return v

    @property
    def size(self) -> int:
        """Combinations in the grid: the product of the value counts, computed without listing them."""
        return math.prod(len(values) for values in self.parameters.values())

    def oversize(self) -> str | None:
        """Why an uncapped grid is too large to run (more than MAX_SWEEP_RUNS trials), or None.

        The message names the parameter with the most values, the first one to trim.
        """
        if self.method != "grid" or self.max_runs is not None or self.size <= MAX_SWEEP_RUNS:
            return None
        key = max(self.parameters, key=lambda name: len(self.parameters[name]))
        return (f"the grid has {self.size:,} combinations, more than the {MAX_SWEEP_RUNS:,} trials one sweep may run; "
                f"{key!r} contributes most ({len(self.parameters[key])} values): give fewer values, "
                f"set experiment.sweep.max_runs, or use method: random")


class EvalWatcher(Strict):
    """``<name>-eval``: a Deployment that evaluates every model the runs save (their checkpoints and
    final models, under the models root) on fixed prompts as it appears (``python -m runtime watch``)."""

    enabled: bool = Field(False, description="Run the eval watcher beside a training deployment (execution.mode job, the user's own "
                                             "application); it writes `/workspace/<name>/results/eval/`: a JSON Lines file per model "
                                             "and index.html, which compares them prompt by prompt.")
    prompts: str = Field("eval-prompts.jsonl", description="JSON Lines file in `workspace/` (deploy uploads it): one prompt per line, "
                                                           "with `id` and `prompt` or `messages`.")
    every: int = Field(60, ge=1, le=86400, description="Seconds between two looks at the models root.")
    max_tokens: int = Field(64, ge=1, le=1_000_000, description="Tokens generated per prompt (greedy, so that the models compare).")
    gpus: int = Field(0, ge=0, le=MAX_GPUS_PER_NODE, description="GPUs of the watcher's pod; 0 evaluates on CPU (small models).")
    cpu: Cpu | None = Field(None, description="CPU cores of the watcher's pod; default 2, 4 per GPU.")
    memory: Memory | None = Field(None, description="Memory of the watcher's pod; default 8Gi, 32Gi per GPU.")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$", v) or ".." in v.split("/") or v.endswith("/"):
            raise ValueError(f"{v!r} is not a file in workspace/ (letters, digits, '.', '_', '-', '/')")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and quantity.memory_bytes(v) < 2**30:
            raise ValueError(f"{v} is too little to load a model; ask for at least 1Gi")
        return v


class Experiment(Strict):
    tracking: Tracking = Field(default_factory=Tracking)
    sweep: Sweep | None = None
    parallelism: int = Field(1, ge=1, le=1000, description="Runs of a sweep at once.")
    eval_watcher: EvalWatcher = Field(default_factory=EvalWatcher)
    # Declared once, in runtime/settings.py: python -m runtime promote reads it in a pod.
    promote: PromoteSettings | None = Field(None, description="Promotion of the best run's model to a serving deployment "
                                                              "(promote.sh, and a schedule's promote step).")


class Secrets(Strict):
    """Names of OpenShift Secrets; their values never appear in any file written here."""

    huggingface: str | None = Field("hf-token", description="Secret with key `HF_TOKEN` for gated models; optional at run time.")
    wandb: str | None = Field("wandb-api-key", description="Secret with key `WANDB_API_KEY`, used when W&B tracking is on.")

    @field_validator("huggingface", "wandb")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return check_secret_name(v or None)


# --------------------------------------------------------------------------- the whole file
VLLM_MARKERS = ("vllm.entrypoints", "vllm serve", "vllm ")
# Top-level keys of the earlier guides (seed 001) -> (section, key) they are read as.
LEGACY_KEYS: dict[str, tuple[str, str]] = {"experiment_tracking": ("experiment", "tracking")}


class Config(Strict):
    """A deployment's config.yaml."""

    version: int = Field(SCHEMA_VERSION, description="Version of this file's schema.")
    deployment: Deployment = Field(default_factory=Deployment)
    application: Application = Field(default_factory=Application)
    resources: Resources = Field(default_factory=Resources)
    image: Image = Field(default_factory=Image)
    inference: Inference = Field(default_factory=Inference)
    batch: Batch = Field(default_factory=Batch)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    experiment: Experiment = Field(default_factory=Experiment)
    secrets: Secrets = Field(default_factory=Secrets)

    # The dotted paths derive() filled in (see DERIVED): the values that follow other answers.
    _derived: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        """Spellings of the earlier guides read as today's keys (LEGACY_KEYS), silently; the
        wizard writes today's. A key given both ways keeps today's spelling's value."""
        if not isinstance(data, dict) or not any(old in data for old in LEGACY_KEYS):
            return data
        data = dict(data)
        for old, (section, key) in LEGACY_KEYS.items():
            if old not in data:
                continue
            target = data.get(section)
            target = {} if target is None else target
            if not isinstance(target, dict):
                continue  # the section's own error is the one to show
            value, current = data.pop(old), target.get(key)
            if value is None:
                continue  # an empty section says nothing
            if isinstance(value, dict) and isinstance(current, dict):
                value = {**value, **current}
            elif current is not None:
                value = current
            data[section] = {**target, key: value}
        return data

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"this tool reads version {SCHEMA_VERSION} files, not {v}")
        return v

    # ---- facts derived from the answers, used by the wizard and the renderer
    @property
    def name(self) -> str:
        assert self.application.name, "application.name is filled in before use"
        return self.application.name

    @property
    def uses_runtime(self) -> bool:
        return self.application.type in ("model_server", "batch_inference")

    @property
    def serves(self) -> bool:
        return self.inference.enabled and self.application.execution.mode != "job"

    @property
    def runs_vllm(self) -> bool:
        if self.uses_runtime:
            return self.inference.engine == "vllm"
        cmd = (self.application.source.command or "") if self.application.type == "custom_command" else ""
        return any(m in cmd + " " for m in VLLM_MARKERS)

    @property
    def stock_vllm(self) -> bool:
        """The included server on vLLM without a build: the pods run vLLM's own image as it is,
        vLLM's server its command (arguments rendered from config.yaml), nothing of ours inside."""
        return self.application.type == "model_server" and self.inference.engine == "vllm" and not self.image.build

    @property
    def multi_node(self) -> bool:
        return self.deployment.mode == "multi-node"

    @property
    def derived_paths(self) -> frozenset[str]:
        """Dotted paths whose value was derived from other answers, not given (see DERIVED)."""
        return self._derived

    def __eq__(self, other: object) -> bool:
        # Equal values make equal configs, whether a value was given or derived.
        if not isinstance(other, Config):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @model_validator(mode="after")
    def _derive(self) -> "Config":
        self._derived = derive(self)
        return self

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> "Config":
        """Rules across fields, on the values given and derived; they only check, never fill in.

        ``context={"checks": False}`` skips them: the wizard uses it to learn a derived value
        while other answers are still incomplete."""
        if info.context and info.context.get("checks") is False:
            return self
        app, inf, res, mode = self.application, self.inference, self.resources, self.application.execution.mode
        errors: list[str] = []

        def fail(path: str, msg: str) -> None:
            errors.append(f"{path}: {msg}")

        if quantity.memory_bytes(res.shm_size) > quantity.memory_bytes(res.memory):
            fail("resources.shm_size", f"{res.shm_size} is more than the pod's memory ({res.memory}); /dev/shm counts against it")
        if self.multi_node and mode != "job":
            fail("application.execution.mode", f"multi-node runs as a job; {mode} runs on one node (use mode: job, or deployment.mode: single-node)")
        if not app.enabled and mode == "job":
            fail("application.enabled", "a job needs an application to run; enable it or use execution.mode: manual")
        if inf.enabled and mode == "job":
            fail("inference.enabled", "a job runs to completion and cannot serve requests or have a Route; use execution.mode: auto_start (or type batch_inference for offline inference)")
        if app.type == "model_server":
            if mode == "job":
                pass  # reported above through inference, or below
            if not inf.enabled:
                fail("inference.enabled", "the model_server application serves requests; set inference.enabled: true")
            if not inf.model:
                fail("inference.model", "the model_server application needs a model (hub id or path)")
        if app.type == "batch_inference":
            if mode == "auto_start":
                fail("application.execution.mode", "batch_inference runs to completion; use job (or manual to run it by hand)")
            if not inf.model:
                fail("inference.model", "batch_inference needs a model (hub id or path)")
        if self.uses_runtime and inf.engine == "vllm" and res.gpus == 0:
            fail("inference.engine", "vLLM needs a GPU; set resources.gpus to 1 or more, or use engine: transformers")
        if inf.rate_limit.limited and not (app.type == "model_server" and inf.engine == "transformers"):
            # A limit nothing enforces would look like protection; the included transformers server is what enforces it.
            fail("inference.rate_limit", "vLLM's server has no rate limits; use engine: transformers, or remove inference.rate_limit"
                 if app.type == "model_server" else
                 f"only the included server (application.type model_server, engine transformers) enforces rate limits, not {app.type}; "
                 "remove inference.rate_limit")
        tp = inf.tensor_parallel_size or 1
        if tp > max(1, res.gpus):
            fail("inference.tensor_parallel_size", f"{tp} is more than the {res.gpus} GPU(s) in resources.gpus")
        if self.uses_runtime and inf.engine == "transformers" and tp > 1:
            fail("inference.tensor_parallel_size", "the transformers engine runs on one device; use engine: vllm to split a model over GPUs")
        if (sharing := pods_sharing_volume(self)).shared and res.storage.access_mode == "ReadWriteOnce":
            fail("resources.storage.access_mode", sharing.refusal(self))
        if self.serves and inf.route.enabled and not inf.route.host and self.deployment.namespace and app.name:
            from .blueprint import route_host_problem  # the names are the blueprint's (imported late: it imports this module)

            if problem := route_host_problem(app.name, self.deployment.namespace):
                fail("inference.route.host", problem)
        if self.serves and inf.route.enabled and inf.route.public and inf.api_key_secret:
            fail("inference.route.public", f"true opens the Route to anyone without a key, but inference.api_key_secret names "
                                           f"one ({inf.api_key_secret}); remove one of the two")
        if self.serves and inf.route.enabled and not route_passes(inf.route.path, inf.endpoint):
            fail("inference.route.path", f"{inf.route.path} does not pass inference.endpoint {inf.endpoint}, so clients could not "
                                         f"reach it through the Route; leave route.path out (it follows the endpoint) or widen it")
        if self.serves and inf.autoscaling.enabled and res.gpus:
            pass  # allowed: CPU utilisation is a rough but real signal; documented in docs/modes/auto_start.md
        if self.monitoring.service_monitor and not (self.serves and inf.metrics):
            fail("monitoring.service_monitor", "a ServiceMonitor needs a served application with inference.metrics set")
        sweep = self.experiment.sweep
        if sweep is not None and sweep.parameters:
            if mode != "job":
                fail("experiment.sweep", "a sweep submits jobs; use execution.mode: job")
            if sweep.method in ("random", "bayes") and sweep.max_runs is None:
                fail("experiment.sweep.max_runs", f"a {sweep.method} sweep needs max_runs")
            if problem := sweep.oversize():
                fail("experiment.sweep.parameters", problem)
        promote = self.experiment.promote
        if promote is not None and promote.to and promote.to == app.name:
            fail("experiment.promote.to", f"{promote.to} is this deployment; name the serving deployment (a model_server) "
                                          "that the best run's model goes to")
        execution = app.execution
        if execution.schedule and mode != "job":
            fail("application.execution.schedule", f"a schedule starts runs that end, as Jobs: it needs execution.mode: job, "
                                                   f"not {mode} (whose pod runs all the time)")
        if execution.timezone and not execution.schedule:
            fail("application.execution.timezone", f"{execution.timezone} is the time zone of a schedule, and "
                                                   "application.execution.schedule is empty; set the schedule or remove the time zone")
        scheduled_steps = [what for what, on in (("evaluate (experiment.eval_watcher)", self.experiment.eval_watcher.enabled),
                                                 ("promote (experiment.promote.to)", bool(promote and promote.to))) if on]
        if execution.schedule and mode == "job" and self.multi_node and scheduled_steps:
            fail("application.execution.schedule", f"a scheduled run's steps after training ({' and '.join(scheduled_steps)}) "
                                                   "run in the training pod, and a multi-node run has one per node, so each would; "
                                                   "schedule a single-node deployment, or leave those steps out of this one")
        if (execution.schedule and mode == "job" and promote and promote.to and not self.image.build
                and not self.image.name):
            fail("image.build", f"false runs {self.image.base} as it is, and the schedule's promote step runs the included "
                                "runtime (python -m runtime promote), which is not in it: set image.build: true, or image.name "
                                "to an image built from this deployment's Containerfile")
        tr = self.experiment.tracking
        if tr.enabled and tr.backend == "mlflow" and not tr.uri:
            fail("experiment.tracking.uri", "the mlflow backend needs the tracking server's URI")
        img = self.image
        if self.uses_runtime and not img.build and not self.stock_vllm and not img.name:
            fail("image.build", f"false runs {img.base} as it is, and the included runtime ({app.type} on {inf.engine}) is not in it: "
                                "set image.build: true, or image.name to an image built from this deployment's Containerfile "
                                "(e.g. the ImageStream tag an earlier deploy built)")
        if self.uses_runtime and not img.build and app.requirements:
            fail("application.requirements", "requirements are installed when the image is built; with image.build: false "
                                             "nothing installs them (set image.build: true, or remove requirements)")
        store, ew = res.storage.models, self.experiment.eval_watcher
        if store.enabled and store.access_mode == "ReadWriteOnce" and (sharing := pods_sharing_volume(self)).shared:
            fail("resources.storage.models.access_mode", sharing.refusal(self))
        if ew.enabled and (mode != "job" or app.type not in TRAINING_TYPES):
            fail("experiment.eval_watcher.enabled", f"the eval watcher evaluates the models a training job saves: it needs "
                                                    f"execution.mode: job and an application of type single_file, directory or "
                                                    f"custom_command, not {app.type} in mode {mode}")
        elif ew.enabled and not img.build and not img.name:
            fail("image.build", f"false runs {img.base} as it is, and the eval watcher runs the included runtime (python -m runtime "
                                "watch), which is not in it: set image.build: true, or image.name to an image built from this "
                                "deployment's Containerfile")
        if errors:
            raise ValueError("\n".join(errors))
        return self


# --------------------------------------------------------------------------- a volume several pods use at once
@dataclass(frozen=True)
class VolumeSharing:
    """The pods that use the workspace volume at the same time (see :func:`pods_sharing_volume`)."""

    pods: int  # how many mount it at once
    why: str  # what makes them that many, for a message: "3 replicas on several nodes"
    otherwise: str  # the way out that keeps one pod at a time: "one replica"

    @property
    def shared(self) -> bool:
        """Several pods use it at once: it must be ReadWriteMany."""
        return self.pods > 1

    def refusal(self, c: "Config") -> str:
        """Why a ReadWriteOnce volume cannot do, and the ways out, in one line."""
        rwx = rwx_storage_class(c)
        if rwx is None:
            cls = (f"a storage_class that offers it (the cluster profile {c.deployment.cluster!r} "
                   "names no rwx_storage_class)")
        else:
            cls = f"a storage_class that offers it (leave both out to get the profile's {rwx})"
        return (f"{self.why} cannot share a ReadWriteOnce volume: it attaches to one node at a time and the other "
                f"pods wait for it; set access_mode: ReadWriteMany with {cls}, or use {self.otherwise}")


def pods_sharing_volume(c: "Config") -> VolumeSharing:
    """The pods that use the workspace volume at the same time, and why: the replicas of a served
    application (the most autoscaling allows); for jobs, the pods of one run (deployment.num_nodes
    of a multi-node job) times the runs of a sweep that go at once (experiment.parallelism, at
    most the sweep's runs). More than one needs ReadWriteMany: a ReadWriteOnce volume attaches to
    one node, and a pod on another node waits until it is free (for ever, when rank 0 of a
    multi-node job holds it while it waits for the other ranks).

    The one place that answers "which pods share the volume at once": the rules refuse
    ReadWriteOnce then, and DERIVED makes it ReadWriteMany where the cluster profile has a class."""
    inf, exp, mode = c.inference, c.experiment, c.application.execution.mode
    if c.serves:
        n = max(inf.replicas, inf.autoscaling.max_replicas if inf.autoscaling.enabled else 0)
        return VolumeSharing(n, f"{n} replicas on several nodes", "one replica")
    if mode != "job":
        return VolumeSharing(1, "one pod", "")
    nodes = (c.deployment.num_nodes or 1) if c.multi_node else 1
    sweep, runs = exp.sweep, 1
    if sweep is not None and sweep.parameters and exp.parallelism > 1:
        runs = min(exp.parallelism, sweep.size, sweep.max_runs or sweep.size)
    if runs > 1 and nodes > 1:
        return VolumeSharing(runs * nodes, f"{runs} sweep runs at once (experiment.parallelism) of {nodes} pods each "
                                           "(deployment.num_nodes)", "experiment.parallelism: 1 and deployment.mode: single-node")
    if runs > 1:
        return VolumeSharing(runs, f"{runs} sweep runs at once (experiment.parallelism)", "experiment.parallelism: 1")
    if nodes > 1:
        return VolumeSharing(nodes, f"the {nodes} pods of a multi-node run (deployment.num_nodes)",
                             "deployment.mode: single-node")
    return VolumeSharing(1, "one pod", "")


def rwx_storage_class(c: "Config") -> str | None:
    """The cluster profile's class for volumes several nodes mount at once (None: none known,
    or the profile is unknown, which is reported where the profile is read)."""
    from .clusters import profiles  # imported late: clusters reads YAML through the loader, which imports this module

    found = profiles().get(c.deployment.cluster)
    return found.rwx_storage_class if found is not None else None


def _shared_access_mode(c: "Config") -> str | None:
    # ReadWriteMany when pods share the volume at once and the profile has a class for it, unless
    # the user chose the storage class (it may not offer ReadWriteMany: the rules then ask).
    if pods_sharing_volume(c).shared and rwx_storage_class(c) and not given(c, "resources.storage.storage_class"):
        return "ReadWriteMany"
    return None


def _shared_storage_class(c: "Config") -> str | None:
    # The profile's ReadWriteMany class for a ReadWriteMany volume (chosen or derived): its
    # default class (often block storage) may offer only ReadWriteOnce.
    return rwx_storage_class(c) if c.resources.storage.access_mode == "ReadWriteMany" else None


def _store_access_mode(c: Config) -> str:
    # The model store is shared by the namespace's deployments, whatever this one runs: ReadWriteMany
    # wherever the profile has a class for it, unless the user chose the class. Derived whether the
    # store is on or not, so that turning it on later (or changing the profile) still follows.
    if rwx_storage_class(c) and not given(c, "resources.storage.models.storage_class"):
        return "ReadWriteMany"
    return "ReadWriteOnce"


def _store_storage_class(c: Config) -> str | None:
    return rwx_storage_class(c) if c.resources.storage.models.access_mode == "ReadWriteMany" else None


def _eval_cpu(c: Config) -> str | None:
    ew = c.experiment.eval_watcher
    return str(max(2, 4 * ew.gpus)) if ew.enabled else None


def _eval_memory(c: Config) -> str | None:
    ew = c.experiment.eval_watcher
    return f"{32 * ew.gpus if ew.gpus else 8}Gi" if ew.enabled else None


# --------------------------------------------------------------------------- derived values
@dataclass(frozen=True)
class Derived:
    """A value that follows other answers unless the user gives one."""

    path: str  # dotted path in config.yaml
    follows: str  # what it follows, as config.yaml's comment line says it
    value: Callable[[Config], Any]  # its value on a config (None: nothing to fill in, it stays empty)


def _shm_size(c: Config) -> str:
    g, memory = c.resources.gpus, c.resources.memory
    size = min((8 * g if g else 1) * 2**30, quantity.memory_bytes(memory) // 2)
    return f"{size // 2**30}Gi" if size % 2**30 == 0 else f"{max(1, size // 2**20)}Mi"


def _monitoring_type(c: Config) -> str:
    if c.inference.enabled or c.application.type == "batch_inference":
        return "inference"
    return "training" if c.application.execution.mode == "job" else "none"


def _first_segment(endpoint: str) -> str:
    # /v1/completions -> /v1: what the Route passes unless inference.route.path says otherwise.
    segment = endpoint.strip("/").split("/", 1)[0]
    return f"/{segment}" if segment and not segment.startswith(".") else "/"


def _api_key_secret(c: Config) -> str | None:
    # Closed by default: a server reachable through a Route asks for a key, unless the Route is public.
    route = c.inference.route
    if c.serves and route.enabled and not route.public and c.application.name:
        return f"{c.application.name}-api-keys"
    return None


# In order: a value may use those above it (shm_size uses memory).
DERIVED: tuple[Derived, ...] = (
    Derived("application.source.path", "application.type",
            lambda c: "main.py" if c.application.enabled and c.application.type == "single_file" else None),
    Derived("resources.cpu", "resources.gpus", lambda c: str(max(2, 4 * c.resources.gpus))),
    Derived("resources.memory", "resources.gpus", lambda c: f"{max(16, 32 * c.resources.gpus)}Gi"),
    Derived("resources.shm_size", "resources.gpus and memory", _shm_size),
    Derived("inference.tensor_parallel_size", "resources.gpus",
            lambda c: max(1, c.resources.gpus) if c.uses_runtime and c.inference.engine == "vllm" else None),
    Derived("inference.readiness_check", "inference.engine and health_check",
            lambda c: "/ready" if c.uses_runtime and c.inference.engine == "transformers" else c.inference.health_check),
    Derived("inference.route.path", "inference.endpoint",
            lambda c: _first_segment(c.inference.endpoint) if c.serves and c.inference.route.enabled else None),
    Derived("inference.api_key_secret", "the Route (inference.route) and application.name", _api_key_secret),
    Derived("image.build", "application.type, inference.engine and requirements",
            lambda c: not (c.application.type == "model_server" and c.inference.engine == "vllm" and not c.application.requirements)),
    Derived("image.base", "the engine and resources.gpus",
            lambda c: mirrored(VLLM_IMAGE if c.runs_vllm else (PYTORCH_IMAGE if c.resources.gpus else CPU_IMAGE), c.image.mirror)),
    Derived("monitoring.type", "the application", _monitoring_type),
    Derived("resources.storage.access_mode", "the pods that share it at once and the cluster profile", _shared_access_mode),
    Derived("resources.storage.storage_class", "access_mode and the cluster profile", _shared_storage_class),
    Derived("resources.storage.models.access_mode", "the cluster profile and storage_class", _store_access_mode),
    Derived("resources.storage.models.storage_class", "access_mode and the cluster profile", _store_storage_class),
    Derived("experiment.eval_watcher.cpu", "experiment.eval_watcher.gpus", _eval_cpu),
    Derived("experiment.eval_watcher.memory", "experiment.eval_watcher.gpus", _eval_memory),
    Derived("experiment.tracking.project", "application.name",
            lambda c: c.application.name if c.experiment.tracking.enabled else None),
)
DERIVED_PATHS: frozenset[str] = frozenset(d.path for d in DERIVED)
DERIVED_BY_PATH: dict[str, Derived] = {d.path: d for d in DERIVED}


def given(model: BaseModel, path: str) -> bool:
    """Whether the data ``model`` was validated from holds a value at ``path`` (its
    ``model_fields_set``, section by section); an empty value (null) is not a value."""
    node: Any = model
    for key in path.split("."):
        if not isinstance(node, BaseModel) or key not in node.model_fields_set:
            return False
        node = getattr(node, key)
    return node is not None


def derive(config: Config) -> frozenset[str]:
    """Fill in every derived value the user did not give (see DERIVED); the paths filled.

    The only place derived values are set: the rules (Config._rules) then check the result."""
    filled: set[str] = set()
    for d in DERIVED:
        if given(config, d.path):
            continue
        value = d.value(config)
        if value is None:
            continue
        *sections, key = d.path.split(".")
        node: Any = config
        for section in sections:
            node = getattr(node, section)
        setattr(node, key, value)
        filled.add(d.path)
    return frozenset(filled)


def json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlshift deployment config.yaml"
    return schema
