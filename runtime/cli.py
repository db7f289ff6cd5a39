"""``python -m runtime serve|batch|bench``: flags onto settings, settings onto the core API,
known errors into one-line messages and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeFailure, UsageError
from runtime.settings import (
    API_KEY_ENV,
    BatchSettings,
    RuntimeConfig,
    ServeSettings,
    api_key_from_env,
    load_deployment_config,
)

ENGINES = ("vllm", "transformers")
RUNTIME_HINT = "pip install 'mlshift[runtime]'"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value:g} must be a finite number above 0")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{value:g} must be at most 1 (a share of the memory)")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m runtime", description="Serve, batch and benchmark models (OpenAI-compatible).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="a deployment's config.yaml; flags override its values")
        p.add_argument("--engine", choices=ENGINES, help="vllm (GPU, vLLM's own server) or transformers (our server)")
        p.add_argument("--model", help="model path or hub id")
        p.add_argument("--max-batch-size", type=_positive, help="most sequences in one batch (default: the engine's; probed on GPUs)")
        p.add_argument("--max-model-len", type=_positive, help="context length (default: the model's)")
        p.add_argument("--dtype", choices=("auto", "float16", "bfloat16", "float32"), help="weights' precision (auto: half on GPUs)")
        p.add_argument("--gpu-memory-utilization", type=_fraction, help="share of the GPU's memory this process may use (default 0.9)")
        p.add_argument("--trust-remote-code", action="store_true", default=None, help="run the model repository's own code")
        p.add_argument("--no-direct-decode", dest="direct_decode", action="store_false", default=None,
                       help="transformers engine: decode through transformers' modules even for Llama-family models")
        p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))

    serve = sub.add_parser("serve", help="run an OpenAI-compatible server")
    common(serve)
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=_port, help="port (default 8000)")
    serve.add_argument("--served-model-name", help="the name clients ask for (default: --model)")
    serve.add_argument("--max-queue", type=_positive, help="requests waiting beyond the batch before 429 (default 256)")
    serve.add_argument("--max-wait-ms", type=float, help="how long an idle server waits to fill a batch (default 5)")
    serve.add_argument("--request-timeout", type=_positive_float, help="seconds one request may take (default 600)")
    serve.add_argument("--header-timeout", type=_positive_float, help="seconds a client has to send a request's headers (default 10)")
    serve.add_argument("--body-timeout", type=_positive_float, help="longest silence while a request body arrives, in seconds (default 30)")

    batch = sub.add_parser("batch", help="generate for every line of a JSON Lines file, resumably")
    common(batch)
    batch.add_argument("--input", help="JSON Lines file (or folder of them) with id and prompt or messages")
    batch.add_argument("--output", help="JSON Lines output; running again resumes")
    batch.add_argument("--max-tokens", type=_positive, help="tokens to generate per record (default 256)")
    batch.add_argument("--temperature", type=float, help="0 for greedy (default)")
    batch.add_argument("--batch-size", type=_positive, help="sequences per batch (transformers engine; default 64 on CPU)")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.add_argument("--retry-errors", action="store_true", help="generate again the records that have an error row in --output")

    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible server")
    bench.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    bench.add_argument("--model", required=True, help="model name to ask for")
    bench.add_argument("--concurrency", type=_positive, default=16)
    bench.add_argument("--num-requests", type=_positive, default=64)
    bench.add_argument("--request-rate", type=_positive_float, help="Poisson arrivals per second (default: closed loop)")
    bench.add_argument("--max-tokens", type=_positive, default=64)
    bench.add_argument("--prompt-words", type=_positive, default=32)
    bench.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    bench.add_argument("--stream", action="store_true", help="stream (needed for TTFT, TPOT, ITL)")
    bench.add_argument("--ignore-eos", action="store_true", help="ask for exactly --max-tokens tokens (vLLM and this runtime)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


# --------------------------------------------------------------------------- settings
def _base_config(args: argparse.Namespace) -> RuntimeConfig:
    return load_deployment_config(args.config) if getattr(args, "config", None) else RuntimeConfig()


def serve_settings(args: argparse.Namespace, base: RuntimeConfig) -> ServeSettings:
    s = base.serve.with_overrides(
        engine=args.engine, model=args.model, max_batch_size=args.max_batch_size, max_model_len=args.max_model_len,
        dtype=args.dtype, trust_remote_code=args.trust_remote_code, gpu_memory_utilization=args.gpu_memory_utilization,
        direct_decode=args.direct_decode,
        host=getattr(args, "host", None), port=getattr(args, "port", None),
        served_model_name=getattr(args, "served_model_name", None), max_queue=getattr(args, "max_queue", None),
        max_wait_ms=getattr(args, "max_wait_ms", None), request_timeout=getattr(args, "request_timeout", None),
        header_timeout=getattr(args, "header_timeout", None), body_timeout=getattr(args, "body_timeout", None),
    )
    s = s.with_overrides(api_key=api_key_from_env())
    if not s.model:
        raise UsageError("no model: pass --model PATH_OR_ID (or set inference.model in config.yaml)")
    if s.model.startswith(("/", "./", "../", "~")) and not Path(s.model).expanduser().exists():
        raise UsageError(f"model path {s.model} does not exist")
    if s.max_wait_ms < 0:
        raise UsageError("--max-wait-ms must be 0 or more")
    return s


def _need_runtime_extra() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers", "fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the transformers engine needs {', '.join(missing)}: {RUNTIME_HINT}")


# --------------------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace) -> int:
    settings = serve_settings(args, _base_config(args))
    if settings.engine == "vllm":
        from runtime.engine_vllm import exec_server

        exec_server(settings)
    _need_runtime_extra()
    import uvicorn

    from runtime.server import create_app, uvicorn_config

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_error=stop)
    config = uvicorn_config(app, settings, log_level=args.log_level, access_log=args.log_level == "debug")
    server = uvicorn.Server(config)
    server.run()
    if failure:
        raise UsageError(f"cannot load the model {settings.model}: {failure[0]}")
    return 0 if server.started else 1


def cmd_batch(args: argparse.Namespace) -> int:
    base = _base_config(args)
    s = serve_settings(args, base)
    b: BatchSettings = base.batch
    input_path = args.input or (b.input if args.config else None)
    output_path = args.output or (b.output if args.config else None)
    if not input_path or not output_path:
        raise UsageError("batch needs --input and --output (or a --config with batch.input and batch.output)")
    max_tokens = args.max_tokens or b.max_tokens
    temperature = b.temperature if args.temperature is None else args.temperature
    if not 0 <= temperature <= 2:
        raise UsageError("--temperature must be between 0 and 2")

    from runtime.batch import log_to_tracker, prepare, run_batch, transformers_backend, vllm_backend

    # The input is read and the output checked and locked before minutes of loading.
    prepared = prepare(Path(input_path), Path(output_path), retry_errors=args.retry_errors)
    try:
        if prepared.todo == 0:
            print(f"nothing to do: every record of {input_path} is already in {output_path}", file=sys.stderr)
            print(prepared.summary().line(), flush=True)
            return 0
        if s.engine == "vllm":
            from runtime.engine_vllm import VllmOffline

            backend = vllm_backend(VllmOffline(s))
        else:
            _need_runtime_extra()
            from runtime.engine_transformers import TransformersEngine

            engine = TransformersEngine(s)
            engine.load()
            if engine.task != "generate":
                raise UsageError(f"{s.model} is an encoder; batch generation needs a generative model")
            size = args.batch_size or s.max_batch_size or (engine.max_batch_size if engine.device.type == "cuda" else 64)
            backend = transformers_backend(engine, size)
        summary = run_batch(
            backend, Path(input_path), Path(output_path), max_tokens=max_tokens, temperature=temperature,
            progress=not args.no_progress, prepared=prepared,
        )
    finally:
        prepared.output.close()
    print(summary.line(), flush=True)
    note = log_to_tracker(summary, base.tracking, {"model": s.model, "engine": s.engine, "max_tokens": max_tokens, "temperature": temperature})
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from runtime.bench import format_report, run_load

    try:
        import httpx  # noqa: F401
    except ImportError:
        raise UsageError("bench needs httpx: pip install httpx") from None
    result = asyncio.run(run_load(
        url=args.url, model=args.model, num_requests=args.num_requests, concurrency=args.concurrency,
        request_rate=args.request_rate, max_tokens=args.max_tokens, stream=args.stream, endpoint=args.endpoint,
        prompt_words=args.prompt_words, api_key=os.environ.get(API_KEY_ENV) or None, ignore_eos=args.ignore_eos,
    ))
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    if result["successful"] == 0:
        raise UsageError(f"no request succeeded against {args.url} (errors: {result['errors']})")
    return 0


COMMANDS = {"serve": cmd_serve, "batch": cmd_batch, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per HTTP request from the clients (bench, test) is noise, not information.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return COMMANDS[args.command](args)
    except RuntimeFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
