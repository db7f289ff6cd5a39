"""The interactive wizard: questions over the config model, each answer validated as it is typed.

There is no second list of rules here. Every answer is checked by applying it to the answers so
far and validating the result with :class:`wizard.config.Config`; the message shown is the
model's own. Defaults that depend on other answers (CPU, memory and shared memory per GPU,
tensor parallel size, the base image) are the model's derived values: an answer left at its
derived value is not stored, so it keeps following the answers it depends on.

Nothing is written here. :func:`run_dialogue` returns a validated :class:`Config` (or ``None``
when the user cancels); ``new`` writes it. Ctrl-C raises ``KeyboardInterrupt`` from any
question, which the command line turns into exit status 130 with nothing written.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import APP_TYPES, EXEC_MODES, Application, Config, Inference, Source, squash
from .errors import ConfigError
from .loader import enclosing_sections, set_path, validate

MISSING: Any = object()
USER_TYPES = ("single_file", "directory", "custom_command")
RUNTIME_TYPES = ("model_server", "batch_inference")
# Values the model derives from other answers; stored only when the user chose another value.
FOLLOWING = (
    "application.source.path",
    "resources.cpu",
    "resources.memory",
    "resources.shm_size",
    "inference.tensor_parallel_size",
    "inference.readiness_check",
    "image.base",
    "monitoring.type",
    "experiment.tracking.project",
)
ANSWER_EVERYTHING = "-"  # the first question's "no preset" choice (a Choice value cannot be None)


# --------------------------------------------------------------------------- nested dicts
def get_path(data: Any, path: str) -> Any:
    node = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def del_path(data: dict[str, Any], path: str) -> None:
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    node.pop(keys[-1], None)


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


def canonical(config: Config) -> dict[str, Any]:
    """Every answer of a valid config, with the values that merely follow other answers left out."""
    return strip_following(config.model_dump(mode="json"), config)


def strip_following(data: dict[str, Any], config: Config) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for path in FOLLOWING:
        if get_path(data, path) is MISSING:
            continue
        trial = copy.deepcopy(data)
        del_path(trial, path)
        try:
            derived = validate(trial, source="answers")
        except ConfigError:
            continue
        if attr(derived, path) == attr(config, path):
            data = trial
    return data


# --------------------------------------------------------------------------- a view of answers
class View:
    """Answers so far (possibly incomplete), read with the model's defaults and spellings."""

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


# --------------------------------------------------------------------------- questions
def _always(v: View) -> bool:
    return True


@dataclass
class Question:
    key: str  # the field in config.yaml this answers (a few are a pair of fields, see read/write)
    section: str
    message: str
    kind: str = "text"  # text | int | list | params | select | confirm
    applies: Callable[[View], bool] = _always
    choices: Callable[[View], list[tuple[str, str]]] | None = None
    nullable: bool = False  # an empty answer means "none" (null in config.yaml)
    hint: str | None = None
    empty: str | None = None  # what an empty answer means, shown while the answer is empty
    effects: Callable[[dict[str, Any], Any], None] | None = None
    read: Callable[[dict[str, Any]], Any] | None = None
    write: Callable[[dict[str, Any], Any], None] | None = None

    @property
    def follows(self) -> bool:
        return self.key in FOLLOWING

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
    v = View(data)
    if value != "job":
        set_path(data, "deployment.mode", "single-node")
        set_path(data, "deployment.num_nodes", None)
        set_path(data, "experiment.sweep", None)
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


def _cluster_choices(v: View) -> list[tuple[str, str]]:
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
             applies=lambda v: v.serves and (v.int("inference.replicas") > 1 or v.on("inference.autoscaling.enabled")),
             choices=lambda v: [("ReadWriteMany", "ReadWriteMany: shared by pods on several nodes"),
                                ("ReadWriteOnce", "ReadWriteOnce: one node at a time")]),
    Question("inference.api_key_secret", INF, "Secret with the API key clients must send", nullable=True,
             applies=lambda v: v.serves, hint="(a Secret name; you create it, the key is never asked here; empty: no key)"),
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
    Question("experiment.sweep", SWP, "Sweep over parameters (one job per combination)?", "confirm",
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
    # ---- cluster
    Question("deployment.cluster", CLU, "Cluster profile", "select", choices=_cluster_choices),
    Question("deployment.namespace", CLU, "Namespace (OpenShift project)", nullable=True,
             hint="(empty: the current oc project)"),
)


# --------------------------------------------------------------------------- the dialogue
class Dialogue:
    def __init__(self, data: dict[str, Any], *, name: str, target: Path, preset: str | None, force: bool):
        self.raw = copy.deepcopy(data)
        self.name = name
        self.target = target
        self.force = force
        self.preset = None
        self.existing = (target / "config.yaml").is_file()
        self.old: Config | None = None
        if self.existing:
            try:
                self.old = validate(copy.deepcopy(data), source="config.yaml")
            except ConfigError:
                self.old = None
        if preset:
            from . import presets

            self.preset = presets.get(preset)
        self.data: dict[str, Any] = {}
        self.only: set[str] | None = None  # with a preset: the questions asked; the others keep its answers

    # ---- helpers
    def _start(self) -> None:
        """Merge the preset under the answers and keep only what was chosen, not derived."""
        from .presets import apply_preset

        data = apply_preset(self.raw, self.preset.name) if self.preset else copy.deepcopy(self.raw)
        problems = problems_of(data)
        asked = {q.key for q in QUESTIONS}
        stray = [(p, m) for p, m in problems if not any(related(p, k) for k in asked) or m.startswith("unknown key")]
        if stray:
            raise ConfigError(f"{self.target.name}/config.yaml" if self.existing else "answers", stray)
        if not problems:
            data = canonical(validate(data, source="answers"))
        self.data = data

    def _candidate(self, q: Question, value: Any) -> dict[str, Any]:
        cand = copy.deepcopy(self.data)
        q.store(cand, value)
        return cand

    def _verdict(self, index: int, cand: dict[str, Any], baseline: set[tuple[str, str]]) -> str | None:
        """The model's message for this answer, or None when it is acceptable (for now)."""
        q = QUESTIONS[index]
        problems = problems_of(cand)
        if not problems:
            return None
        for path, msg in problems:
            if related(path, q.key):
                return msg
        view = View(cand)
        later = [x.key for x in QUESTIONS[index + 1:] if x.applies(view) and (self.only is None or x.key in self.only)]
        for path, msg in problems:
            if (path, msg) in baseline or any(related(path, k) for k in later):
                continue  # an earlier problem, or one a later question settles
            return f"{path}: {msg}"
        return None

    def _derived(self, q: Question) -> Any:
        """What the model fills in for ``q`` from the other answers (MISSING if it cannot yet)."""
        trial = copy.deepcopy(self.data)
        del_path(trial, q.key)
        try:
            return attr(validate(trial, source="answers"), q.key)
        except ConfigError:
            pass
        # Other answers are still incomplete: derive within the section (resources, inference).
        for section, rest, model in enclosing_sections(q.key):
            sub = get_path(trial, section)
            try:
                return attr(model.model_validate(sub if isinstance(sub, dict) else {}), rest)
            except Exception:  # noqa: BLE001 - any failure means "cannot derive yet"
                continue
        return MISSING

    # ---- asking
    def ask(self, index: int) -> None:
        import questionary

        q = QUESTIONS[index]
        baseline = set(problems_of(self.data))
        current = q.current(self.data)
        if current is MISSING:
            current = self._derived(q) if q.follows else View(self.data).get(q.key)
        if q.kind == "select":
            self._ask_select(index, q, current, baseline)
            return
        if q.key == "inference.enabled" and View(self.data).runs_vllm:
            current = True  # a command that starts vLLM serves requests
        if q.kind == "confirm":
            while True:
                default = current is True or (isinstance(current, str) and current.lower() in ("true", "yes", "on"))
                answer = questionary.confirm(q.message, default=default).unsafe_ask()
                cand = self._candidate(q, answer)
                msg = self._verdict(index, cand, baseline)
                if msg is None:
                    self.data = cand
                    return
                print(f"  ! {msg}")
                current = answer

        def check(text: str) -> bool | str:
            try:
                value = q.parse(text)
            except ValueError as exc:
                return str(exc)
            msg = self._verdict(index, self._candidate(q, value), baseline)
            return True if msg is None else msg

        hint = q.hint
        if q.empty and current in (MISSING, None):
            hint = (hint + " " if hint else "") + q.empty
        text = questionary.text(q.message, default=q.show(current), validate=check, instruction=hint).unsafe_ask()
        value = q.parse(text)
        cand = self._candidate(q, value)
        if q.follows and value is not MISSING:
            trial = copy.deepcopy(cand)
            del_path(trial, q.key)
            try:
                if attr(validate(trial, source="answers"), q.key) == attr(validate(cand, source="answers"), q.key):
                    cand = trial  # the derived value: keep following
            except ConfigError:
                pass
        self.data = cand

    def _ask_select(self, index: int, q: Question, current: Any, baseline: set[tuple[str, str]]) -> None:
        import questionary

        assert q.choices is not None
        options = q.choices(View(self.data))
        canonical_current = View(self.data).choice(q.key, [v for v, _ in options]) if current is not MISSING else None
        choices = []
        for value, title in options:
            msg = self._verdict(index, self._candidate(q, value), baseline)
            choices.append(questionary.Choice(title, value=value, disabled=msg))
        enabled = [c.value for c in choices if not c.disabled]
        if not enabled:  # nothing fits the earlier answers; let the final check send the user back
            for c in choices:
                c.disabled = None
            enabled = [c.value for c in choices]
        default = canonical_current if canonical_current in enabled else enabled[0]
        answer = questionary.select(q.message, choices=choices, default=default).unsafe_ask()
        self.data = self._candidate(q, answer)

    # ---- the flow
    def run(self) -> Config | None:
        import questionary

        from .deployment import build_config

        where = f"{self.target.parent.name}/{self.target.name}"
        if self.existing:
            self._start()  # an answer no question can fix fails here, before any question
            print(f"Updating {where}: every question starts from its current answer.")
        elif self.preset is None:
            from .presets import PRESETS

            choices = [questionary.Choice(f"{p.name}: {p.title}", value=p.name) for p in PRESETS]
            choices.append(questionary.Choice("something else: answer every question", value=ANSWER_EVERYTHING))
            picked = questionary.select("What are you deploying?", choices=choices).unsafe_ask()
            if picked != ANSWER_EVERYTHING:
                from . import presets

                self.preset = presets.get(picked)
        if not self.existing:
            self._start()
        self.only = set(self.preset.ask) if (self.preset and not self.existing) else None
        if self.only is not None:
            print(f"Preset {self.preset.name}: a few questions; the rest keep the preset's answers "
                  "(change any of them at the summary).")
        index = 0
        while True:
            section = None
            while index < len(QUESTIONS):
                q = QUESTIONS[index]
                if q.applies(View(self.data)) and (self.only is None or q.key in self.only):
                    if q.section != section:
                        section = q.section
                        print(f"\n{section}")
                    self.ask(index)
                index += 1
            try:
                config = build_config(copy.deepcopy(self.data), source="answers")
            except ConfigError as exc:
                index = self._back_to(exc)
                self.only = None
                continue
            action = self.summary(config)
            if action == "write":
                return config
            if action == "cancel":
                return None
            index = self._pick_question()
            self.only = None

    def _back_to(self, exc: ConfigError) -> int:
        view = View(self.data)
        for path, msg in exc.problems:
            for i, q in enumerate(QUESTIONS):
                if q.applies(view) and related(path, q.key):
                    print(f"\n  ! {path}: {msg}")
                    return i
        raise exc

    def _pick_question(self) -> int:
        import questionary

        view = View(self.data)
        choices = []
        for i, q in enumerate(QUESTIONS):
            if not q.applies(view):
                continue
            current = q.current(self.data)
            shown = q.show(view.get(q.key) if current is MISSING and not q.read else current)
            if q.follows and current is MISSING:
                shown = "(follows other answers)"
            choices.append(questionary.Choice(f"{q.section}: {q.message} [{shown}]", value=str(i)))
        return int(questionary.select("Which answer do you want to change? (the questions after it follow)",
                                      choices=choices).unsafe_ask())

    # ---- the summary
    def summary(self, config: Config) -> str:
        import questionary

        for line in summary_lines(config, self.name, self.target, force=self.force, old=self.old):
            print(line)
        choice = questionary.select(
            "Write it?",
            choices=[questionary.Choice("Write the deployment", value="write"),
                     questionary.Choice("Change an answer", value="change"),
                     questionary.Choice("Cancel: write nothing", value="cancel")],
        ).unsafe_ask()
        return str(choice)


def describe_app(config: Config) -> str:
    app, inf = config.application, config.inference
    argv = " ".join(app.execution.argv()) if app.execution.arguments else ""
    if app.type == "model_server":
        tp = f", tensor parallel {inf.tensor_parallel_size}" if inf.engine == "vllm" else ""
        return f"included {inf.engine} server for {inf.model}{tp}"
    if app.type == "batch_inference":
        return f"included batch inference ({inf.engine}) with {inf.model}: {config.batch.input} -> {config.batch.output}"
    if app.type == "single_file":
        return f"python {app.source.path} {argv}".rstrip()
    if app.type == "directory":
        return f"python {app.source.path}/{app.source.entry_point} {argv}".rstrip()
    return f"{app.source.command} {argv}".rstrip()


MODE_WORDS = {
    "auto_start": "auto-start: starts with the pod and keeps running",
    "job": "job: one Job per submission",
    "manual": "manual: an idle pod to exec into",
}


def summary_lines(config: Config, name: str, target: Path, *, force: bool, old: Config | None) -> list[str]:
    from .plan import Plan
    from .render import plan_writes, render_files

    plan = Plan(config, name)
    res, inf, exp = config.resources, config.inference, config.experiment
    lines = ["", "Summary", f"  Application  {config.name}: {describe_app(config)}",
             f"  Runs as      {MODE_WORDS[config.application.execution.mode]}"]
    nodes = f" x {config.deployment.num_nodes} nodes" if config.multi_node else ""
    gpu = f"{res.gpus} GPU{'s' if res.gpus != 1 else ''}" + (f" ({res.gpu_product})" if res.gpus and res.gpu_product else "")
    lines.append(f"  Resources    {gpu}, {res.cpu} CPU, {res.memory} memory, {res.shm_size} shared memory{nodes}; "
                 f"{res.storage.size} workspace volume ({res.storage.access_mode})")
    if config.serves:
        scale = (f"{inf.autoscaling.min_replicas}-{inf.autoscaling.max_replicas} replicas (autoscaled)"
                 if inf.autoscaling.enabled else f"{inf.replicas} replica{'s' if inf.replicas != 1 else ''}")
        route = "Route (HTTPS)" if inf.route.enabled else "no Route (port-forward)"
        key = f", API key from Secret {inf.api_key_secret}" if inf.api_key_secret else ", no API key"
        lines.append(f"  Serving      port {inf.port}, {route}, {scale}{key}")
    if exp.tracking.enabled:
        tr = exp.tracking
        extra = (f", entity {tr.entity}" if tr.entity else "") + (f", tags {', '.join(tr.tags)}" if tr.tags else "")
        lines.append(f"  Tracking     {tr.backend}, project {tr.project}{extra}")
    if exp.sweep is not None and exp.sweep.parameters:
        size, cap = exp.sweep.size, exp.sweep.max_runs
        if exp.sweep.method != "grid":
            count = f"up to {cap} runs"
        else:
            count = f"the first {cap:,} of {size:,} combinations" if cap and cap < size else f"{size:,} combinations"
        lines.append(f"  Sweep        {exp.sweep.method} over {show_parameters(exp.sweep.parameters)} "
                     f"({count}, {exp.parallelism} at once)")
    lines.append(f"  Cluster      {config.deployment.cluster}, namespace "
                 f"{config.deployment.namespace or '(the current oc project)'}; image "
                 f"{'built on the cluster from ' + str(config.image.base) if config.image.build else plan.image}")
    if plan.secrets:
        names = ", ".join(f"{s['name']} ({s['key']}{', optional' if s['required'] == 'no' else ''})" for s in plan.secrets)
        lines.append(f"  Secrets      {names}: you create them (commands printed at the end); no value is asked for or stored")
    if target.joinpath("config.yaml").is_file() and _has_own_comments(target / "config.yaml"):
        lines.append("  Note         config.yaml is written again from these answers; the comments you added to it are not kept")
    if old is not None:
        changes = answer_changes(old, config)
        lines.append("  Answers      " + ("unchanged" if not changes else f"{len(changes)} changed:"))
        lines += [f"                 {c}" for c in changes]
    reports = plan_writes(target, render_files(config, name, with_config=True), force=force)
    if not target.exists():
        groups: dict[str, int] = {}
        for r in reports:
            top = r.path.split("/")[0] + "/" if "/" in r.path else r.path
            groups[top] = groups.get(top, 0) + 1
        listed = ", ".join(k if n == 1 and not k.endswith("/") else f"{k} ({n})" for k, n in groups.items())
        lines.append(f"  Files        {len(reports)} to create in {target.name}/: {listed}")
    else:
        moving = [r for r in reports if r.status != "unchanged"]
        same = len(reports) - len(moving)
        lines.append(f"  Files        {len(moving)} to write, {same} unchanged" + (":" if moving else ""))
        for r in moving:
            lines.append(f"                 {r.status:<9} {r.path}")
        kept = [r.path for r in reports if r.status == "kept"]
        if kept:
            lines.append(f"  Edited       you changed {', '.join(kept)}: yours stay as they are, the new version")
            lines.append("               is written beside each as <file>.new (--force overwrites instead)")
    lines.append("")
    return lines


def _has_own_comments(path: Path) -> bool:
    from .loader import SCHEMA_COMMENT

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    ours = {SCHEMA_COMMENT.split("{")[0].strip(), "# Written by mlshift"}
    return any(line.lstrip().startswith("#") and not any(line.startswith(o) for o in ours) for line in lines)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict) and not _is_value_dict(prefix):
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        if not data and prefix:
            out[prefix] = {}
        return out
    out[prefix] = data
    return out


def _is_value_dict(path: str) -> bool:
    """A dict-valued field (such as sweep parameters) rather than a section."""
    if not path:
        return False
    from .loader import _model_in, field_at

    try:
        _, _, annotation = field_at(path.split("."))
    except ConfigError:
        return True
    return _model_in(annotation) is None


def answer_changes(old: Config, new: Config) -> list[str]:
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    out = []
    for path in list(after) + [p for p in before if p not in after]:
        a, b = before.get(path, MISSING), after.get(path, MISSING)
        if a != b:
            show = lambda x: "(none)" if x in (MISSING, None) else json.dumps(x) if not isinstance(x, str) else x  # noqa: E731
            out.append(f"{path}: {show(a)} -> {show(b)}")
    return out


# --------------------------------------------------------------------------- the same, without questions
def _set_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def equivalent_sets(config: Config, name: str) -> tuple[str | None, list[str]] | None:
    """The shortest ``--preset``/``--set`` answers that give ``config`` again, checked by replaying them
    (None when no such answers were found)."""
    from .loader import apply_sets
    from .presets import PRESETS, apply_preset

    want = config.model_dump(mode="json")
    explicit = _flatten(canonical(config))
    best: tuple[str | None, list[str]] | None = None
    for preset in [None, *(p.name for p in PRESETS)]:
        base_data: dict[str, Any] = {"application": {"name": name}}
        if preset:
            base_data = apply_preset(base_data, preset)
        try:
            base_cfg = validate(copy.deepcopy(base_data), source="preset")
        except ConfigError:
            continue
        base = _flatten(base_cfg.model_dump(mode="json"))
        sets = []
        for path in FOLLOWING:  # a value the preset gives that the answers left to follow
            if path not in explicit and get_path(base_data, path) is not MISSING and base.get(path) != _flatten(want).get(path):
                sets.append(f"{path}={_set_text(_flatten(want).get(path))}")
        for path, value in explicit.items():
            if path in base:
                if base[path] != value:
                    sets.append(f"{path}={_set_text(value)}")
            elif value is None:
                if any(p.startswith(path + ".") for p in base):
                    sets.append(f"{path}=")
            else:
                default = _sub_default(path)
                if default is MISSING or default != value:
                    sets.append(f"{path}={_set_text(value)}")
        try:
            replay = validate(apply_sets(base_data, sets), source="replay")
        except ConfigError:
            continue
        if replay.model_dump(mode="json") != want:
            continue
        if best is None or len(sets) < len(best[1]):
            best = (preset, sets)
    return best


def _sub_default(path: str) -> Any:
    """The default of a field inside an optional section that is absent in the base (the sweep)."""
    for _section, rest, model in enclosing_sections(path):
        try:
            return get_path(model().model_dump(mode="json"), rest)
        except Exception:  # noqa: BLE001 - a section with required fields has no default
            return MISSING
    return MISSING


def equivalent_command(config: Config, name: str, *, deployments_dir: Path | None = None, prog: str = "python -m wizard") -> str:
    import shlex

    found = equivalent_sets(config, name)
    words = [*prog.split(), "new", name]
    if deployments_dir is not None:
        words += ["--deployments-dir", str(deployments_dir)]
    if found is None:  # config.yaml itself holds every answer
        words += ["--answers", str(Path(deployments_dir or "deployments") / name / "config.yaml")]
        return " ".join(shlex.quote(w) for w in words)
    preset, sets = found
    if preset:
        words += ["--preset", preset]
    for s in sets:
        words += ["--set", s]
    if not preset and not sets:
        words.append("--defaults")
    return " ".join(shlex.quote(w) for w in words)


def run_dialogue(data: dict[str, Any], *, name: str, target: Path, preset: str | None = None,
                 force: bool = False) -> Config | None:
    """Ask the questions that apply, starting from ``data``; the validated config, or None if cancelled."""
    try:
        return Dialogue(data, name=name, target=target, preset=preset, force=force).run()
    except EOFError:  # Ctrl-D at a question: leave like Ctrl-C, with nothing written
        raise KeyboardInterrupt from None
