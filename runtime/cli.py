"""``python -m runtime serve|batch|bench|watch``: flags onto settings, settings onto the core API,
known errors into one-line messages and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime.errors import RuntimeFailure, UsageError

from runtime.settings import (
    API_KEY_ENV,
    API_KEY_FALLBACK_ENV,
    BatchSettings,
    BenchSettings,
    Flag,
    RuntimeConfig,
    ServeSettings,
    WatchSettings,
    api_key_from_env,
    api_key_source,
    checked,
    load_deployment_config,
    marks,
)

RUNTIME_HINT = "pip install 'mlshift[runtime]'"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    for member in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(member) is typing.Literal:
            return typing.get_args(member)
    return None


def add_setting_flags(parser: argparse.ArgumentParser, model: type[BaseModel], command: str) -> None:
    """One flag per setting of ``model`` marked for ``command``, its help from the description.

    Values stay text here; the settings model checks them (:func:`settings_from`), so a flag and
    the same key in config.yaml have one rule and one message.
    """
    for name, field in model.model_fields.items():
        flag = marks(field, Flag)
        if flag is None or command not in flag.commands:
            continue
        option = "--" + name.replace("_", "-")
        help_text = (field.description or "").rstrip(".")
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if default not in (None, "", []) and not isinstance(default, bool):
            help_text += f" (default {default})"
        types = set(typing.get_args(field.annotation)) | {field.annotation}
        required = {"required": True} if field.is_required() else {}
        if bool in types:
            parser.add_argument(option, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif (allowed := _choices(field.annotation)) is not None:
            parser.add_argument(option, dest=name, choices=allowed, help=help_text, **required)
        else:
            parser.add_argument(option, dest=name, metavar=flag.metavar or name.upper(), help=help_text, **required)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m runtime", description="Serve, batch and benchmark models (OpenAI-compatible).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, command: str) -> None:
        p.add_argument("--config", type=Path, help="a deployment's config.yaml; flags override its values")
        add_setting_flags(p, ServeSettings, command)
        p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))

    serve = sub.add_parser("serve", help="run an OpenAI-compatible server")
    common(serve, "serve")

    batch = sub.add_parser("batch", help="generate for every line of a JSON Lines file, resumably")
    common(batch, "batch")
    add_setting_flags(batch, BatchSettings, "batch")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.add_argument("--retry-errors", action="store_true", help="generate again the records that have an error row in --output")

    watch = sub.add_parser("watch", help="evaluate training checkpoints on fixed prompts as they appear")
    add_setting_flags(watch, WatchSettings, "watch")
    add_setting_flags(watch, ServeSettings, "watch")
    watch.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))

    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible server")
    add_setting_flags(bench, BenchSettings, "bench")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


# --------------------------------------------------------------------------- settings
def _base_config(args: argparse.Namespace) -> RuntimeConfig:
    return load_deployment_config(args.config) if getattr(args, "config", None) else RuntimeConfig()


def _given(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The flags of ``model``'s settings that were given on the command line."""
    return {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}


def _flag_error(exc: UsageError, given: dict[str, Any]) -> UsageError:
    """A settings error about a flag names the flag, not the key."""
    key = str(exc).split(" ", 1)[0].split(":", 1)[0]
    if key in given:
        return UsageError("--" + key.replace("_", "-") + str(exc)[len(key):])
    return exc


def _from_flags(model: type[BaseModel], args: argparse.Namespace, base: dict[str, Any] | None = None,
                **fixed: Any) -> Any:
    """``model`` from ``base`` (config.yaml's values), then the flags given, then ``fixed``; a bad
    value is one line naming the flag (or the config key, when it came from the file)."""
    given = _given(args, model)
    try:
        return checked(model, {**(base or {}), **given, **fixed})
    except UsageError as exc:
        raise _flag_error(exc, given) from None


def serve_settings(args: argparse.Namespace, base: RuntimeConfig) -> ServeSettings:
    s = _from_flags(ServeSettings, args, base.serve.model_dump(), api_key=api_key_from_env())
    if not s.model:
        raise UsageError("no model: pass --model PATH_OR_ID (or set inference.model in config.yaml)")
    if s.model.startswith(("/", "./", "../", "~")) and not Path(s.model).expanduser().exists():
        raise UsageError(f"model path {s.model} does not exist")
    return s


def batch_settings(args: argparse.Namespace, base: RuntimeConfig) -> BatchSettings:
    return _from_flags(BatchSettings, args, base.batch.model_dump())


def _need_runtime_extra(modules: tuple[str, ...] = ("torch", "transformers", "fastapi", "uvicorn", "prometheus_client"),
                        what: str = "the transformers engine") -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{what} needs {', '.join(missing)}: {RUNTIME_HINT}")


# --------------------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace) -> int:
    settings = serve_settings(args, _base_config(args))
    if api_key_source()[0] == API_KEY_FALLBACK_ENV:
        print(f"note: requests must send the API key in {API_KEY_FALLBACK_ENV} ({API_KEY_ENV} is unset)", file=sys.stderr)
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
    b = batch_settings(args, base)
    if not b.input or not b.output:
        raise UsageError("batch needs --input and --output (or a --config with batch.input and batch.output)")
    input_path, output_path, max_tokens, temperature = b.input, b.output, b.max_tokens, b.temperature

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
            size = b.batch_size or s.max_batch_size or (engine.max_batch_size if engine.device.type == "cuda" else 64)
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

    b = _from_flags(BenchSettings, args)
    if importlib.util.find_spec("httpx") is None:
        raise UsageError("bench needs httpx: pip install httpx")
    result = asyncio.run(run_load(**b.model_dump(), api_key=api_key_from_env()))
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    if result["successful"] == 0:
        raise UsageError(f"no request succeeded against {b.url} (errors: {result['errors']})")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    w = _from_flags(WatchSettings, args)
    s = _from_flags(ServeSettings, args, engine="transformers")
    _need_runtime_extra(("torch", "transformers"), "watch")
    from runtime.watch import Watcher, WandbTable

    def load(folder: Path) -> Any:
        from runtime.engine_transformers import TransformersEngine

        engine = TransformersEngine(s.with_overrides(model=str(folder)))
        engine.load()
        return engine

    root = Path(w.checkpoints)
    watcher = Watcher(root, Path(w.prompts), Path(w.output) if w.output else root, load=load,
                      max_tokens=w.max_tokens, temperature=w.temperature, batch_size=w.batch_size,
                      quiet_seconds=w.quiet_seconds)
    project = w.wandb_project or os.environ.get("WANDB_PROJECT")
    tracker = None
    try:
        if project:
            watcher.tracker = tracker = WandbTable(project, {"checkpoints": str(root), "prompts": w.prompts,
                                                             "max_tokens": w.max_tokens, "temperature": w.temperature})
        if w.once:
            done = watcher.run_pass()
            if watcher.failed_now:
                return 2
            if not done:
                print(f"nothing to evaluate: no complete checkpoint in {root} without results in {watcher.eval_dir}", file=sys.stderr)
            else:
                print(f"done: {len(done)} checkpoints evaluated; comparison in {watcher.eval_dir / 'index.html'}", flush=True)
            return 0
        print(f"watching {root} every {w.every:g} s (Ctrl-C to stop); results in {watcher.eval_dir}", file=sys.stderr, flush=True)
        watcher.watch(w.every)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if tracker is not None:
            tracker.finish()


COMMANDS = {"serve": cmd_serve, "batch": cmd_batch, "bench": cmd_bench, "watch": cmd_watch}


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
