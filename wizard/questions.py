"""The wizard's questions: one table over the fields of config.yaml, and what each answer means.

Each :class:`Question` names the field it answers, when it applies (a function of the answers so
far, seen through a :class:`Draft`), how typed text becomes a value and back, and the answers it
changes in turn. The checks are the config model's own; nothing here repeats a rule. Questions
whose field the model derives from other answers (:data:`wizard.config.DERIVED_PATHS`) follow
those answers until the user gives another value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

from .config import APP_TYPES, DERIVED_PATHS, EXEC_MODES, Application, Config, Inference, Source, pods_sharing_volume, squash
from .errors import ConfigError
from .loader import MISSING, del_path, get_path, set_path, validate

USER_TYPES = ("single_file", "directory", "custom_command")
RUNTIME_TYPES = ("model_server", "batch_inference")


def attr(config: Any, path: str) -> Any:
    node = config
    for key in path.split("."):
        if node is None:
            return None
        node = getattr(node, key)
    return node


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return Config.model_validate({}).model_dump(mode="json")


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        validate(data, source="answers")
    except ConfigError as exc:
        return list(exc.problems)
    return []


def related(path: str, key: str) -> bool:
    return path == key or path.startswith(key + ".") or key.startswith(path + ".")


# --------------------------------------------------------------------------- incomplete answers
class Draft:
    """The answers so far, possibly incomplete and not yet valid, read with the model's defaults
    and spellings: what decides which questions apply."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def get(self, path: str) -> Any:
        value = get_path(self.data, path)
        if value is MISSING:
            value = get_path(_defaults(), path)
            return None if value is MISSING else value
        return value

    def choice(self, path: str, allowed: Iterable[str]) -> str:
        value = self.get(path)
        table = {squash(a): a for a in allowed}
        return table.get(squash(value), str(value))

    def int(self, path: str) -> int:
        try:
            return int(self.get(path))
        except (TypeError, ValueError):
            return 0

    def on(self, path: str) -> bool:
        value = self.get(path)
        return value is True or (isinstance(value, str) and value.lower() in ("true", "yes", "on"))

    @property
    def type(self) -> str:
        return self.choice("application.type", APP_TYPES)

    @property
    def mode(self) -> str:
        return self.choice("application.execution.mode", EXEC_MODES)

    @property
    def engine(self) -> str:
        return self.choice("inference.engine", ("vllm", "transformers"))

    @property
    def user_app(self) -> bool:
        return self.type in USER_TYPES

    @property
    def runtime(self) -> bool:
        return self.type in RUNTIME_TYPES

    @property
    def serves(self) -> bool:
        return self.on("inference.enabled") and self.mode != "job"

    @property
    def runs_vllm(self) -> bool:
        # The model's own rule, on a config built without validation from the answers so far.
        command = self.get("application.source.command")
        probe = Config.model_construct(
            application=Application.model_construct(
                type=self.type, source=Source.model_construct(command=command if isinstance(command, str) else None)
            ),
            inference=Inference.model_construct(engine=self.engine),
        )
        return probe.runs_vllm

    @property
    def sweeping(self) -> bool:
        return isinstance(self.get("experiment.sweep"), dict)

    @property
    def offers_model_store(self) -> bool:
        """The model store is worth offering: the cluster profile names a class that several nodes
        mount at once (a ReadWriteOnce store keeps every pod of every deployment using it on one
        node), or the answers already turn it on."""
        from .clusters import profiles

        found = profiles().get(str(self.get("deployment.cluster")))
        return bool(found and found.rwx_storage_class) or self.on("resources.storage.models.enabled")

    @property
    def shares_volume(self) -> bool:
        """Several pods use the workspace volume at once (the model's own pods_sharing_volume)."""
        try:
            return pods_sharing_volume(validate(self.data, source="answers", checks=False)).shared
        except ConfigError:
            return False


# --------------------------------------------------------------------------- questions
def _always(v: Draft) -> bool:
    return True


@dataclass
class Question:
    key: str  # the field in config.yaml this answers (a few are a pair of fields, see read/write)
    section: str
    message: str
    kind: str = "text"  # text | int | list | params | select | confirm
    applies: Callable[[Draft], bool] = _always
    choices: Callable[[Draft], list[tuple[str, str]]] | None = None
    nullable: bool = False  # an empty answer means "none" (null in config.yaml)
    hint: str | None = None
    empty: str | None = None  # what an empty answer means, shown while the answer is empty
    effects: Callable[[dict[str, Any], Any], None] | None = None
    read: Callable[[dict[str, Any]], Any] | None = None
    write: Callable[[dict[str, Any], Any], None] | None = None

    @property
    def follows(self) -> bool:
        """The model derives this answer from others unless one is given."""
        return self.key in DERIVED_PATHS

    def current(self, data: dict[str, Any]) -> Any:
        return self.read(data) if self.read else get_path(data, self.key)

    def store(self, data: dict[str, Any], value: Any) -> None:
        if self.write:
            self.write(data, value)
        elif value is MISSING:
            del_path(data, self.key)
        else:
            set_path(data, self.key, value)
        if self.effects:
            self.effects(data, value)

    # text <-> value
    def parse(self, text: str) -> Any:
        text = text.strip()
        if self.follows and text == "":
            return MISSING  # follow the other answers
        if text == "" and self.nullable and self.kind in ("text", "int"):
            return None
        if self.kind == "int":
            try:
                return int(text)
            except ValueError:
                return text  # the model says what is wrong with it
        if self.kind == "list":
            return [w.strip() for w in text.split(",") if w.strip()]
        if self.kind == "params":
            return parse_parameters(text)
        return text

    def show(self, value: Any) -> str:
        if value is MISSING or value is None:
            return ""
        if self.kind == "list" and isinstance(value, list):
            return ", ".join(str(v) for v in value)
        if self.kind == "params" and isinstance(value, dict):
            return show_parameters(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, list):
            return " ".join(str(v) for v in value)
        return str(value)


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_parameters(text: str) -> dict[str, list[Any]]:
    """``lr=0.001,0.01 batch_size=16,32`` into ``{"lr": [0.001, 0.01], "batch_size": [16, 32]}``."""
    out: dict[str, list[Any]] = {}
    for word in text.split():
        name, sep, values = word.partition("=")
        if not sep or not name:
            raise ValueError(f"{word!r}: write each parameter as name=value,value (e.g. lr=0.001,0.01)")
        out[name] = [_scalar(v) for v in values.split(",") if v != ""]
    return out


def show_parameters(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={','.join(str(v) for v in vals)}" for k, vals in params.items() if isinstance(vals, list))


# ---- answers that change other answers
def _after_type(data: dict[str, Any], value: Any) -> None:
    if value == "model_server":
        set_path(data, "inference.enabled", True)
    elif value == "batch_inference":
        set_path(data, "inference.enabled", False)


def _after_mode(data: dict[str, Any], value: Any) -> None:
    v = Draft(data)
    if value != "job":
        set_path(data, "deployment.mode", "single-node")
        set_path(data, "deployment.num_nodes", None)
        set_path(data, "experiment.sweep", None)
        for key in ("application.execution.schedule", "application.execution.timezone"):  # schedules start jobs
            if get_path(data, key) not in (MISSING, None):
                del_path(data, key)
    if v.user_app and value != "auto_start":
        set_path(data, "inference.enabled", False)


def _read_nodes(data: dict[str, Any]) -> Any:
    n = get_path(data, "deployment.num_nodes")
    return 1 if n in (MISSING, None) else n


def _write_nodes(data: dict[str, Any], value: Any) -> None:
    if isinstance(value, int) and value == 1:
        set_path(data, "deployment.mode", "single-node")
        set_path(data, "deployment.num_nodes", None)
    else:
        set_path(data, "deployment.mode", "multi-node")
        set_path(data, "deployment.num_nodes", value)


def _read_sweep(data: dict[str, Any]) -> Any:
    return isinstance(get_path(data, "experiment.sweep"), dict)


def _write_sweep(data: dict[str, Any], value: Any) -> None:
    if not value:
        set_path(data, "experiment.sweep", None)
    elif not isinstance(get_path(data, "experiment.sweep"), dict):
        set_path(data, "experiment.sweep", {"method": "grid", "parameters": {}})


def _cluster_choices(v: Draft) -> list[tuple[str, str]]:
    from .clusters import profiles

    return [(name, f"{name}: {p.description}" if p.description else name) for name, p in profiles().items()]


APP = "Application"
RES = "Resources"
INF = "Serving"
TRK = "Experiment tracking"
SWP = "Sweep"
CLU = "Cluster"

QUESTIONS: tuple[Question, ...] = (
    Question("application.type", APP, "What do you want to run?", "select",
             choices=lambda v: [
                 ("single_file", "A single Python file"),
                 ("directory", "A directory with an entry point"),
                 ("custom_command", "A custom command (e.g. python -m vllm.entrypoints.openai.api_server ...)"),
                 ("model_server", "The included model server (OpenAI-compatible API, vLLM or transformers)"),
                 ("batch_inference", "The included batch inference runner (JSON Lines in, JSON Lines out)"),
             ], effects=_after_type),
    Question("application.source.path", APP, "Python file to run", applies=lambda v: v.type == "single_file",
             hint="(in workspace/; copied there from here if it exists)"),
    Question("application.source.path", APP, "Directory with your code", applies=lambda v: v.type == "directory",
             hint="(copied into workspace/ if it exists here)"),
    Question("application.source.entry_point", APP, "Entry point in that directory", applies=lambda v: v.type == "directory",
             hint="(e.g. run_eval.py)"),
    Question("application.source.command", APP, "Command to run", applies=lambda v: v.type == "custom_command",
             hint="(split like a shell would, run without one)"),
    Question("application.name", APP, "Name", hint="(names every object on the cluster)"),
    Question("application.execution.mode", APP, "How should it run?", "select",
             choices=lambda v: [
                 ("auto_start", "Auto-start: starts with the pod and keeps running (servers)"),
                 ("job", "Job: runs to completion, once per submission (batch, training, sweeps)"),
                 ("manual", "Manual: an idle pod with the resources; exec in, Jupyter, VS Code"),
             ], effects=_after_mode),
    Question("deployment.num_nodes", APP, "Nodes (pods) to run on", "int",
             applies=lambda v: v.mode == "job" and v.type in ("single_file", "directory"),
             hint="(more than 1: a multi-node torchrun job)", read=_read_nodes, write=_write_nodes),
    Question("application.execution.arguments", APP, "Arguments", applies=lambda v: v.user_app,
             hint="(e.g. --lr 0.01 --epochs 20; empty for none)"),
    Question("application.requirements", APP, "Requirements file", nullable=True, applies=lambda v: v.user_app,
             hint="(in workspace/, installed into the image; empty for none)"),
    # ---- resources
    Question("resources.gpus", RES, "GPUs per pod", "int"),
    Question("resources.gpu_product", RES, "GPU model", nullable=True, applies=lambda v: v.int("resources.gpus") > 0,
             hint="(node label nvidia.com/gpu.product, e.g. NVIDIA-A100-SXM4-80GB; empty: any)"),
    Question("resources.cpu", RES, "CPU cores", hint="(follows the GPUs unless you change it)"),
    Question("resources.memory", RES, "Memory", hint="(e.g. 64Gi; follows the GPUs unless you change it)"),
    # ---- serving
    Question("inference.enabled", INF, "Does it serve HTTP requests (a model server)?", "confirm",
             applies=lambda v: v.user_app and v.mode == "auto_start"),
    Question("inference.engine", INF, "Engine", "select", applies=lambda v: v.runtime,
             choices=lambda v: [("vllm", "vLLM (GPU, high throughput)"),
                                ("transformers", "transformers (GPU or CPU, our own server)")]),
    Question("inference.model", INF, "Model", nullable=True, applies=lambda v: v.runtime,
             hint="(hub id such as Qwen/Qwen2.5-7B-Instruct, or a path such as /workspace/models/my-model)"),
    Question("inference.tensor_parallel_size", INF, "Tensor parallel size", "int",
             applies=lambda v: v.runtime and v.engine == "vllm" and v.int("resources.gpus") > 1,
             hint="(GPUs one copy of the model is split over)", empty="(empty: all the pod's GPUs)"),
    Question("inference.port", INF, "Port the server listens on", "int", applies=lambda v: v.serves),
    Question("inference.route.enabled", INF, "Expose it outside the cluster through a Route (HTTPS)?", "confirm",
             applies=lambda v: v.serves),
    Question("inference.replicas", INF, "Replicas", "int", applies=lambda v: v.serves),
    Question("inference.autoscaling.enabled", INF, "Scale replicas automatically (HorizontalPodAutoscaler)?", "confirm",
             applies=lambda v: v.serves),
    Question("inference.autoscaling.min_replicas", INF, "Fewest replicas", "int",
             applies=lambda v: v.serves and v.on("inference.autoscaling.enabled")),
    Question("inference.autoscaling.max_replicas", INF, "Most replicas", "int",
             applies=lambda v: v.serves and v.on("inference.autoscaling.enabled")),
    Question("resources.storage.access_mode", INF, "Workspace volume access", "select",
             applies=lambda v: v.serves and v.shares_volume,
             choices=lambda v: [("ReadWriteMany", "ReadWriteMany: shared by pods on several nodes"),
                                ("ReadWriteOnce", "ReadWriteOnce: one node at a time")]),
    Question("inference.api_key_secret", INF, "Secret with the API keys clients must send", nullable=True,
             applies=lambda v: v.serves, hint="(deploy creates it with a random key; the key is never asked here)",
             empty="(empty: no key; without a Route only the cluster reaches the server)"),
    Question("batch.input", INF, "Input (JSON Lines file or folder in the pod)", applies=lambda v: v.type == "batch_inference"),
    Question("batch.output", INF, "Output file", applies=lambda v: v.type == "batch_inference"),
    # ---- experiment tracking
    Question("experiment.tracking.enabled", TRK, "Track runs (W&B, MLflow or TensorBoard)?", "confirm",
             applies=lambda v: not v.serves and v.type != "model_server"),
    Question("experiment.tracking.backend", TRK, "Tracking backend", "select",
             applies=lambda v: not v.serves and v.on("experiment.tracking.enabled"),
             choices=lambda v: [("wandb", "Weights & Biases"), ("mlflow", "MLflow"), ("tensorboard", "TensorBoard")]),
    Question("experiment.tracking.project", TRK, "Project", nullable=True,
             applies=lambda v: not v.serves and v.on("experiment.tracking.enabled"),
             hint="(W&B project or MLflow experiment)"),
    Question("experiment.tracking.entity", TRK, "W&B entity (team or user)", nullable=True,
             applies=lambda v: not v.serves and v.on("experiment.tracking.enabled")
             and v.choice("experiment.tracking.backend", ("wandb", "mlflow", "tensorboard")) == "wandb",
             hint="(empty: your default entity)"),
    Question("experiment.tracking.uri", TRK, "MLflow tracking URI", nullable=True,
             applies=lambda v: not v.serves and v.on("experiment.tracking.enabled")
             and v.choice("experiment.tracking.backend", ("wandb", "mlflow", "tensorboard")) == "mlflow"),
    Question("experiment.tracking.tags", TRK, "Tags", "list",
             applies=lambda v: not v.serves and v.on("experiment.tracking.enabled"), hint="(comma-separated)"),
    # ---- sweep
    Question("experiment.sweep", SWP, "Sweep over parameters (one trial per combination)?", "confirm",
             applies=lambda v: v.mode == "job" and v.user_app, read=_read_sweep, write=_write_sweep),
    Question("experiment.sweep.parameters", SWP, "Parameters to sweep", "params",
             applies=lambda v: v.mode == "job" and v.user_app and v.sweeping,
             hint="(name=value,value ...; e.g. lr=0.001,0.01 batch_size=16,32)"),
    Question("experiment.sweep.method", SWP, "Sweep method", "select",
             applies=lambda v: v.mode == "job" and v.user_app and v.sweeping,
             choices=lambda v: [("grid", "grid: every combination"), ("random", "random: max_runs random picks"),
                                ("bayes", "bayes: W&B's Bayesian search")]),
    Question("experiment.sweep.max_runs", SWP, "Most runs", "int", nullable=True,
             applies=lambda v: v.mode == "job" and v.user_app and v.sweeping
             and v.choice("experiment.sweep.method", ("grid", "random", "bayes")) != "grid"),
    Question("experiment.parallelism", SWP, "Runs at once", "int",
             applies=lambda v: v.mode == "job" and v.user_app and v.sweeping),
    # ---- the eval watcher (training jobs): each saved model run on fixed prompts as it appears
    Question("experiment.eval_watcher.enabled", SWP, "Evaluate each saved checkpoint on fixed prompts (eval watcher)?", "confirm",
             applies=lambda v: v.mode == "job" and v.user_app,
             hint="(a pod beside the jobs; it compares the models' answers on one page)"),
    Question("experiment.eval_watcher.prompts", SWP, "Prompts file in workspace/",
             applies=lambda v: v.mode == "job" and v.user_app and v.on("experiment.eval_watcher.enabled"),
             hint="(JSON Lines, one {\"prompt\": ...} a line; deploy uploads it)"),
    # ---- cluster
    Question("deployment.cluster", CLU, "Cluster profile", "select", choices=_cluster_choices),
    # Jobs whose pods share the volume at once (multi-node, a sweep's parallel runs); asked after
    # the profile, whose rwx_storage_class makes ReadWriteMany the default. Replicas: above.
    Question("resources.storage.access_mode", CLU, "Workspace volume access", "select",
             applies=lambda v: not v.serves and v.shares_volume,
             choices=lambda v: [("ReadWriteMany", "ReadWriteMany: the job's pods use it at once, on several nodes"),
                                ("ReadWriteOnce", "ReadWriteOnce: one node at a time")]),
    # The namespace's model store (one claim its deployments share), where the profile can make it
    # ReadWriteMany (its access mode follows the profile); elsewhere it is one --set away.
    Question("resources.storage.models.enabled", CLU, "Mount the namespace's shared model store?", "confirm",
             applies=lambda v: v.offers_model_store,
             hint="(one volume of models for all its deployments: saved by jobs, served by servers, downloaded once)"),
    Question("resources.storage.models.claim", CLU, "Model store claim",
             applies=lambda v: v.offers_model_store and v.on("resources.storage.models.enabled"),
             hint="(one per namespace; every deployment naming it shares it)"),
    Question("deployment.namespace", CLU, "Namespace (OpenShift project)", nullable=True,
             hint="(empty: the current oc project)"),
)
