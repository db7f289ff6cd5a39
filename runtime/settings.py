"""What one runtime process runs with, declared once.

:class:`EngineSettings` is the list of engine settings: the keys of config.yaml's ``inference``
section that the runtime reads (the wizard's ``Inference`` model inherits them), the flags of
``python -m runtime serve|batch`` (generated from the :class:`Flag` marks), and the arguments
handed to vLLM (from the :class:`Vllm` marks). Adding a setting is one field here.

:func:`load_deployment_config` reads a deployment's config.yaml with nothing but PyYAML: the
runtime never imports the wizard.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, field_validator

from runtime.errors import UsageError
from runtime.pod import API_KEYS_DIR_ENV

Engine = Literal["vllm", "transformers"]
Dtype = Literal["auto", "float16", "bfloat16", "float32"]
QUANTIZATIONS = ("awq", "gptq", "fp8", "bitsandbytes", "awq_marlin", "gptq_marlin", "compressed-tensors", "gguf", "marlin")

# The bearer key: the one clients must send (serve), the one sent (bench). From the environment
# only, never a flag (so it never shows in ps); the OpenAI client's variable when this one is unset.
API_KEY_ENV = "RUNTIME_API_KEY"
API_KEY_FALLBACK_ENV = "OPENAI_API_KEY"
# Seconds: any number, written back as a whole number when it is one (600, not 600.0).
Seconds = Annotated[float, PlainSerializer(lambda v: int(v) if float(v).is_integer() else v)]


def squash(text: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def choice(*allowed: str) -> BeforeValidator:
    """Accept the spellings users type (``Auto-start``, ``BFloat16``) for a canonical choice."""
    table = {squash(a): a for a in allowed}

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return table.get(squash(value), value)
        return value

    return BeforeValidator(fix)


# --------------------------------------------------------------------------- marks on a setting
@dataclass(frozen=True)
class Flag:
    """The setting is a flag (``--max-batch-size``) of these ``python -m runtime`` commands."""

    commands: tuple[str, ...] = ("serve", "batch")
    metavar: str | None = None


SERVE = Flag(("serve",))
BOTH = Flag()
# Settings of loading a model, which `watch` (the transformers engine on each checkpoint) takes too.
LOAD = Flag(("serve", "batch", "watch"))


@dataclass(frozen=True)
class Vllm:
    """The setting's name in vLLM: the server flag ``--name-with-dashes`` and ``LLM(name=...)``.

    ``server``/``offline``: whether vLLM's server and its offline ``LLM`` take it. ``default``:
    a value left off the server's command line because it is vLLM's own default.
    """

    name: str
    server: bool = True
    offline: bool = True
    default: Any = None


def marks(field: Any, kind: type) -> Any:
    """The mark of ``kind`` on a model field, or None."""
    return next((m for m in field.metadata if isinstance(m, kind)), None)


# --------------------------------------------------------------------------- the settings
class RateLimit(BaseModel):
    """Per-key limits of the included transformers server, per replica ([runtime.md](runtime.md#rate-limits)).

    Token buckets (runtime/ratelimit.py); the fields are flags of `serve` too, named after their key
    (`--rate-limit-requests-per-minute`)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)

    requests_per_minute: Annotated[int | None, Flag(("serve",), "N")] = Field(
        None, ge=1, le=1_000_000_000,
        description="Requests one key may make per minute, in bursts of up to that many (per replica); empty: no limit.",
    )
    tokens_per_minute: Annotated[int | None, Flag(("serve",), "N")] = Field(
        None, ge=1, le=1_000_000_000_000,
        description="Tokens one key may have generated per minute (per replica): each generation reserves its max_tokens "
                    "and gets back what it did not use; empty: no limit.",
    )

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


class EngineSettings(BaseModel):
    """The engine settings: config.yaml ``inference`` keys, runtime flags and vLLM arguments."""

    # defer_build: the schema is built on first use, so importing this module (the wizard does,
    # for the fields its config model inherits) costs little.
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True, defer_build=True)

    engine: Annotated[Engine, choice("vllm", "transformers"), BOTH] = Field(
        "transformers", description="Engine of the included runtime: `vllm` (GPU) or `transformers` (our own server, GPU or CPU)."
    )
    model: Annotated[str | None, BOTH, Vllm("model")] = Field(
        None, description="Model to serve: a hub id or a path in the container (e.g. /workspace/models/my-model)."
    )
    served_model_name: Annotated[str | None, SERVE, Vllm("served_model_name", offline=False)] = Field(
        None, description="Name clients ask for; default the model."
    )
    port: Annotated[int, SERVE, Vllm("port", offline=False)] = Field(
        8000, ge=1024, le=65535, description="Port the server listens on (1024 or above: pods run without root)."
    )
    tensor_parallel_size: Annotated[int | None, BOTH, Vllm("tensor_parallel_size")] = Field(
        None, ge=1, description="GPUs one model is split over (vLLM); default all the pod's GPUs."
    )
    max_model_len: Annotated[int | None, LOAD, Vllm("max_model_len")] = Field(
        None, ge=16, description="Context length; default the model's."
    )
    dtype: Annotated[Dtype, choice("auto", "float16", "bfloat16", "float32"), LOAD, Vllm("dtype", default="auto")] = Field(
        "auto", description="Weights' precision; `auto` is half precision on GPUs, float32 on CPUs."
    )
    quantization: Annotated[str | None, BOTH, Vllm("quantization")] = Field(
        None, description=f"One of {', '.join(QUANTIZATIONS)}; empty for none."
    )
    gpu_memory_utilization: Annotated[float, LOAD, Vllm("gpu_memory_utilization")] = Field(
        0.9, gt=0.0, le=1.0,
        description="Share of each GPU's memory the server may use (vLLM's own setting; the transformers engine's memory cap and batch-size probe).",
    )
    max_batch_size: Annotated[int | None, LOAD, Vllm("max_num_seqs")] = Field(
        None, ge=1, le=4096, description="Most sequences in one batch (vLLM `--max-num-seqs`); default the engine's (probed on GPUs)."
    )
    max_queue: Annotated[int, SERVE] = Field(
        256, ge=1, le=100000, description="Requests waiting beyond the batch before the server answers 429."
    )
    max_wait_ms: Annotated[float, SERVE] = Field(
        5.0, ge=0.0, le=10000.0, description="How long the transformers engine waits to fill a batch."
    )
    enable_prefix_caching: Annotated[bool | None, BOTH, Vllm("enable_prefix_caching")] = Field(
        None, description="vLLM prefix caching; default vLLM's."
    )
    enforce_eager: Annotated[bool | None, BOTH, Vllm("enforce_eager")] = Field(
        None, description="vLLM without CUDA graphs: less GPU memory and start-up time, slower decoding; default vLLM's."
    )
    trust_remote_code: Annotated[bool, LOAD, Vllm("trust_remote_code")] = Field(
        False, description="Run the model repository's own code."
    )
    direct_decode: Annotated[bool, LOAD] = Field(
        True,
        description="The transformers engine's direct decoding step for Llama, Mistral, Qwen2 and Qwen3 models (checked against transformers at start-up); false decodes through transformers' modules.",
    )
    request_timeout: Annotated[Seconds, SERVE] = Field(
        600.0, gt=0.0, le=86400.0, description="Seconds one request may take in the included server."
    )
    # Whole seconds: vLLM's --shutdown-timeout takes an integer, and so does the pod's grace period
    # (the wizard renders terminationGracePeriodSeconds from it). 0 is vLLM's default: the flag
    # is then left off, which keeps vLLM images from before the flag (2026) starting.
    drain_timeout: Annotated[int, SERVE, Vllm("shutdown_timeout", offline=False, default=0)] = Field(
        30, ge=0, le=3600,
        description="Seconds the requests in flight get to finish when the server is asked to stop (SIGTERM: a rollout, "
                    "a scale-down); new ones get 503 meanwhile, and those still running then are cut. "
                    "vLLM's --shutdown-timeout.",
    )
    rate_limit: RateLimit = Field(
        default_factory=RateLimit,
        description="Per-key rate limits of the included transformers server (vLLM's server has none).",
    )
    extra_args: list[str] = Field(default_factory=list, description="Further arguments passed to vLLM's server word for word.")

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate_limit(cls, v: Any) -> Any:
        return {} if v is None else v  # `rate_limit:` with nothing under it: no limits

    @field_validator("quantization", mode="before")
    @classmethod
    def _quantization(cls, v: Any) -> Any:
        if v in (None, "", "none", "None"):
            return None
        if not isinstance(v, str) or v.lower() not in QUANTIZATIONS:
            raise ValueError(f"{v!r} is not one of {', '.join(QUANTIZATIONS)}")
        return v.lower()


class ServeSettings(EngineSettings):
    """Everything one server process runs with: the engine settings and the server's own."""

    model_config = ConfigDict(frozen=True)

    host: Annotated[str, SERVE] = Field("0.0.0.0", description="Address to listen on.")
    header_timeout: Annotated[Seconds, SERVE] = Field(
        10.0, gt=0.0, description="Seconds a client has to send a request's headers (HAProxy's default)."
    )
    body_timeout: Annotated[Seconds, SERVE] = Field(30.0, gt=0.0, description="Longest silence while a request body arrives, in seconds.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1)
    health_path: str = "/health"
    ready_path: str = "/ready"
    metrics_path: str | None = "/metrics"
    api_key: str | None = Field(None, repr=False)
    api_keys_dir: Annotated[str | None, Flag(("serve",), "DIR")] = Field(
        None,
        description=f"Folder of API keys, one file per key named after it (a mounted Secret), re-read when it changes; "
                    f"default the {API_KEYS_DIR_ENV} variable.",
    )

    @property
    def model_name(self) -> str:
        """The name clients ask for."""
        return self.served_model_name or self.model or "model"

    def with_overrides(self, **values: Any) -> "ServeSettings":
        """These settings with the given values (None keeps the current one), checked again."""
        given = {k: v for k, v in values.items() if v is not None}
        return checked(type(self), {**self.model_dump(), **given})


class BatchSettings(BaseModel):
    """The batch runner's input and output (config.yaml ``batch``; flags of ``runtime batch``)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)

    input: Annotated[str | None, Flag(("batch",))] = Field(
        None, description="JSON Lines file or folder of them, with `id` and `prompt` or `messages`."
    )
    output: Annotated[str | None, Flag(("batch",))] = Field(
        None, description="JSON Lines output; re-running resumes where it stopped."
    )
    max_tokens: Annotated[int, Flag(("batch",))] = Field(256, ge=1, le=1_000_000, description="Tokens to generate per record.")
    temperature: Annotated[float, Flag(("batch",))] = Field(0.0, ge=0.0, le=2.0, description="0 for greedy.")
    batch_size: Annotated[int | None, Flag(("batch",))] = Field(
        None, ge=1, description="Sequences per batch (transformers engine); default 64 on CPU, probed on GPUs."
    )


WATCH = Flag(("watch",))


class WatchSettings(BaseModel):
    """Checkpoints evaluated as they appear (``python -m runtime watch``; flags from these fields)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)

    checkpoints: Annotated[str, Flag(("watch",), "DIR")] = Field(description="Folder the trainer writes checkpoint folders into, or a folder of runs that each hold theirs (a models root).")
    prompts: Annotated[str, Flag(("watch",), "FILE")] = Field(description="JSON Lines file of fixed prompts, with `id` and `prompt` or `messages`.")
    output: Annotated[str | None, Flag(("watch",), "DIR")] = Field(None, description="Where `eval/` goes; default the checkpoints folder.")
    every: Annotated[Seconds, Flag(("watch",), "S")] = Field(60.0, gt=0.0, le=86400.0, description="Seconds between looks at the folder.")
    once: Annotated[bool, WATCH] = Field(False, description="Evaluate what is complete now and exit.")
    quiet_seconds: Annotated[Seconds, Flag(("watch",), "S")] = Field(
        30.0, ge=0.0, description="Seconds a checkpoint's files must stay unchanged to count as complete (without the marker)."
    )
    max_tokens: Annotated[int, Flag(("watch",), "N")] = Field(64, ge=1, le=1_000_000, description="Tokens to generate per prompt.")
    temperature: Annotated[float, WATCH] = Field(0.0, ge=0.0, le=2.0, description="0 for greedy (comparable outputs).")
    batch_size: Annotated[int | None, WATCH] = Field(None, ge=1, description="Sequences per batch; default the engine's.")
    wandb_project: Annotated[str | None, Flag(("watch",), "PROJECT")] = Field(
        None, description="Log a W&B table of the outputs to this project (default the WANDB_PROJECT variable; none: no W&B)."
    )


BENCH = Flag(("bench",))


class BenchSettings(BaseModel):
    """A load test (``python -m runtime bench``; the flags are generated from these fields)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    url: Annotated[str, BENCH] = Field(description="Server base URL, e.g. http://127.0.0.1:8000.")
    model: Annotated[str, BENCH] = Field(description="Model name to ask for.")
    concurrency: Annotated[int, BENCH] = Field(16, ge=1, description="Requests in flight at most.")
    num_requests: Annotated[int, BENCH] = Field(64, ge=1, description="Requests to send.")
    request_rate: Annotated[float | None, BENCH] = Field(None, gt=0, allow_inf_nan=False,
                                                         description="Poisson arrivals per second; default a closed loop.")
    max_tokens: Annotated[int, BENCH] = Field(64, ge=1, description="Tokens to ask for per request.")
    prompt_words: Annotated[int, BENCH] = Field(32, ge=1, description="Words in each prompt.")
    endpoint: Annotated[Literal["completions", "chat"], BENCH] = Field("completions", description="The API to load.")
    stream: Annotated[bool, BENCH] = Field(False, description="Stream (needed for TTFT, TPOT, ITL).")
    ignore_eos: Annotated[bool, BENCH] = Field(False, description="Ask for exactly --max-tokens tokens (vLLM and this runtime).")


NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # an application name: a DNS label
NAME_MAX = 63  # a DNS label's length
GOALS = {"min": "minimize", "max": "maximize"}


class PromoteSettings(BaseModel):
    """The best run's model served by another deployment: what promote.sh and a schedule's promote step do.

    config.yaml ``experiment.promote``, read by ``python -m runtime promote`` in a pod and by the
    wizard's ``promote.sh`` (the wizard's config model uses this model, so it is declared once)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)

    to: str | None = Field(
        None, description="Application name of the serving deployment (a model_server in the same namespace, mounting the "
                          "model store) whose model promote replaces with the best run's; empty: promote.sh --to names it.")
    metric: str | None = Field(None, description="Metric the runs are ranked by; default experiment.sweep.metric.")
    goal: Annotated[Literal["minimize", "maximize"] | None, choice("minimize", "maximize")] = Field(
        None, description="Whether lower or higher is better (minimize or maximize); default experiment.sweep.goal.")

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v: Any) -> Any:
        if v in (None, ""):
            return None
        if not isinstance(v, str) or len(v) > NAME_MAX or not NAME_PATTERN.match(v):
            raise ValueError(f"{v!r} is not an application name (lower-case letters, digits and '-', starting with a "
                             "letter, at most 63 characters)")
        return v

    @field_validator("goal", mode="before")
    @classmethod
    def _goal(cls, v: Any) -> Any:
        return GOALS.get(v, v) if isinstance(v, str) else v


@dataclass(frozen=True)
class TrackingSettings:
    enabled: bool = False
    backend: str = "wandb"
    project: str | None = None
    entity: str | None = None
    tags: tuple[str, ...] = ()
    mode: str = "auto"
    run_name: str | None = None

    def wandb_mode(self, environ: Mapping[str, str] = os.environ) -> str:
        """W&B's mode for this run: ``auto`` is what the pod was given (``WANDB_MODE``), else
        online when the API key is there (the Secret), offline otherwise."""
        if self.mode != "auto":
            return self.mode
        return environ.get("WANDB_MODE") or ("online" if environ.get("WANDB_API_KEY") else "offline")


@dataclass(frozen=True)
class RuntimeConfig:
    serve: ServeSettings = field(default_factory=ServeSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)


def checked(model: type[BaseModel], data: dict[str, Any], *, where: str = "") -> Any:
    """``model`` validated from ``data``; a bad value becomes one line naming the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        value = err.get("input")
        shown = f" {value!r}" if not isinstance(value, (dict, list, type(None))) else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{where}{key}{shown}: {message[0].lower()}{message[1:]}") from None


def api_key_from_env(environ: Any = None) -> str | None:
    """``RUNTIME_API_KEY``, else ``OPENAI_API_KEY`` when that one is unset (or empty)."""
    return api_key_source(environ)[1]


def api_key_source(environ: Any = None) -> tuple[str | None, str | None]:
    """(the variable the key came from, the key); (None, None) without a key."""
    env = os.environ if environ is None else environ
    for name in (API_KEY_ENV, API_KEY_FALLBACK_ENV):
        key = (env.get(name) or "").strip()
        if key:
            return name, key
    return None, None


# --------------------------------------------------------------------------- config.yaml
def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise UsageError(f"{path}: {name} is a {type(section).__name__}, not a section of keys")
    return section


def read_config_yaml(path: Path) -> dict[str, Any]:
    """A deployment's config.yaml as data (its sections unchecked); one-line errors only."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise UsageError(f"{path}: malformed YAML: {where}{getattr(exc, 'problem', None) or 'cannot be parsed'}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of sections (application:, inference:, ...)")
    return data


def load_deployment_config(path: Path) -> RuntimeConfig:
    """Read the keys the runtime owns from a deployment's config.yaml (one-line errors only).

    Keys of the ``inference`` section that are not engine settings (the Route, replicas, ...)
    belong to the wizard, which checks the whole file (``python -m wizard validate``).
    """
    data = read_config_yaml(path)
    inference = _section(data, "inference", path)
    application = _section(data, "application", path)
    experiment = _section(data, "experiment", path)
    tracking = experiment.get("tracking") if isinstance(experiment.get("tracking"), dict) else {}
    owned = {k: v for k, v in inference.items() if k in EngineSettings.model_fields}
    probes = {"health_path": inference.get("health_check") or "/health",
              # The included server answers readiness on /ready unless the deployment names another path.
              "ready_path": inference.get("readiness_check") or "/ready",
              "metrics_path": inference.get("metrics") if "metrics" in inference else "/metrics"}
    serve = checked(ServeSettings, {**owned, **probes}, where=f"{path}: inference.")
    batch = checked(BatchSettings, _section(data, "batch", path), where=f"{path}: batch.")
    name = application.get("name")
    track = TrackingSettings(
        enabled=bool(tracking.get("enabled", False)),
        backend=str(tracking.get("backend") or "wandb"),
        project=tracking.get("project") or name,
        entity=tracking.get("entity"),
        tags=tuple(str(t) for t in tracking.get("tags") or ()),
        mode=str(tracking.get("mode") or "auto"),
        run_name=name,
    )
    return RuntimeConfig(serve=serve, batch=batch, tracking=track)
