"""What one runtime process runs with: config.yaml's ``inference`` section, overridden by flags.

:func:`load_deployment_config` is the only place that touches the wizard's config model, so the
runtime works without the wizard installed as long as ``--config`` is not used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from runtime.errors import UsageError

Engine = Literal["vllm", "transformers"]
Dtype = Literal["auto", "float16", "bfloat16", "float32"]

API_KEY_ENV = "RUNTIME_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    engine: Engine = "transformers"
    model: str | None = None
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    max_model_len: int | None = None
    dtype: Dtype = "auto"
    quantization: str | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int | None = None
    max_batch_size: int | None = None  # None: the engine's default (probed on GPUs)
    max_queue: int = 256
    max_wait_ms: float = 5.0
    enable_prefix_caching: bool | None = None
    trust_remote_code: bool = False
    direct_decode: bool = True  # transformers engine: the direct decoding step for Llama-family models
    extra_args: tuple[str, ...] = ()
    request_timeout: float = 600.0
    max_body_bytes: int = 8 * 1024 * 1024
    header_timeout: float = 10.0  # a request's headers must arrive within this (HAProxy's default)
    body_timeout: float = 30.0  # longest silence while a request body is arriving
    health_path: str = "/health"
    ready_path: str = "/ready"
    metrics_path: str | None = "/metrics"
    api_key: str | None = field(default=None, repr=False)

    @property
    def model_name(self) -> str:
        """The name clients ask for."""
        return self.served_model_name or self.model or "model"

    def with_overrides(self, **values: Any) -> "ServeSettings":
        """Replace the fields whose value is not None (unset flags keep the config's values)."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in values.items() if v is not None and k in known})


@dataclass(frozen=True)
class BatchSettings:
    input: str | None = None
    output: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    batch_size: int | None = None


@dataclass(frozen=True)
class TrackingSettings:
    enabled: bool = False
    backend: str = "wandb"
    project: str | None = None
    entity: str | None = None
    tags: tuple[str, ...] = ()
    mode: str = "online"
    run_name: str | None = None


@dataclass(frozen=True)
class RuntimeConfig:
    serve: ServeSettings = ServeSettings()
    batch: BatchSettings = BatchSettings()
    tracking: TrackingSettings = TrackingSettings()


def api_key_from_env() -> str | None:
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None


def load_deployment_config(path: Path) -> RuntimeConfig:
    """Read a deployment's config.yaml into runtime settings (one-line errors only)."""
    try:
        from wizard.errors import UserError
        from wizard.loader import load_config
    except ImportError:
        raise UsageError(
            f"--config needs the mlshift package (its wizard module) installed: pip install mlshift; "
            f"or pass --model and the other flags instead of {path}"
        ) from None
    try:
        config = load_config(Path(path))
    except UserError as exc:
        raise UsageError(str(exc)) from None
    return runtime_config_from(config)


def runtime_config_from(config: Any) -> RuntimeConfig:
    """Map the wizard's :class:`Config` onto runtime settings (pure; unit-tested)."""
    inf = config.inference
    engine = inf.engine
    ready = inf.readiness_check or ("/ready" if engine == "transformers" else inf.health_check)
    serve = ServeSettings(
        engine=engine,
        model=inf.model,
        served_model_name=inf.served_model_name,
        port=inf.port,
        max_model_len=inf.max_model_len,
        dtype=inf.dtype,
        quantization=inf.quantization,
        gpu_memory_utilization=inf.gpu_memory_utilization,
        tensor_parallel_size=inf.tensor_parallel_size,
        max_batch_size=inf.max_batch_size,
        max_queue=inf.max_queue,
        max_wait_ms=inf.max_wait_ms,
        enable_prefix_caching=inf.enable_prefix_caching,
        trust_remote_code=inf.trust_remote_code,
        direct_decode=inf.direct_decode,
        extra_args=tuple(inf.extra_args),
        request_timeout=float(inf.request_timeout),
        health_path=inf.health_check,
        ready_path=ready,
        metrics_path=inf.metrics or None,
    )
    b = config.batch
    batch = BatchSettings(input=b.input, output=b.output, max_tokens=b.max_tokens, temperature=b.temperature)
    t = config.experiment.tracking
    tracking = TrackingSettings(
        enabled=t.enabled,
        backend=t.backend,
        project=t.project or config.application.name,
        entity=t.entity,
        tags=tuple(t.tags),
        mode=t.mode,
        run_name=config.application.name,
    )
    return RuntimeConfig(serve=serve, batch=batch, tracking=tracking)
