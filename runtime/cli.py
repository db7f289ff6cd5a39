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
from runtime.pod import API_KEYS_DIR_ENV, CONFIG_PATH_IN_POD, MODEL_ENV

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


def _section_model(field: Any) -> type[BaseModel] | None:
    """The settings model of a section of settings without a flag of its own (``rate_limit``),
    whose settings are flags named after their key (``--rate-limit-requests-per-minute``)."""
    annotation = field.annotation
    if marks(field, Flag) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def add_setting_flags(parser: argparse.ArgumentParser, model: type[BaseModel], command: str, prefix: str = "") -> None:
    """One flag per setting of ``model`` marked for ``command``, its help from the description.

    Values stay text here; the settings model checks them (:func:`settings_from`), so a flag and
    the same key in config.yaml have one rule and one message. A section's settings are flags
    too, their ``dest`` the dotted key (``rate_limit.requests_per_minute``).
    """
    for name, field in model.model_fields.items():
        if (section := _section_model(field)) is not None:
            add_setting_flags(parser, section, command, f"{prefix}{name}.")
            continue
        flag = marks(field, Flag)
        if flag is None or command not in flag.commands:
            continue
        option = "--" + (prefix + name).replace("_", "-").replace(".", "-")
        name = prefix + name
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
            parser.add_argument(option, dest=name, metavar=flag.metavar or name.rsplit(".", 1)[-1].upper(), help=help_text, **required)


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

    promote = sub.add_parser("promote", help="serve the best run's model: patch the serving deployment (in a pod)",
                             description="Pick the best finished run from the records on the workspace volume and set its "
                                         "model on the serving deployment (experiment.promote.to), with the pod's ServiceAccount.")
    promote.add_argument("--config", type=Path, default=Path(CONFIG_PATH_IN_POD), metavar="PATH",
                         help=f"the training deployment's config.yaml (default {CONFIG_PATH_IN_POD})")
    promote.add_argument("--metric", metavar="NAME", help="rank by this metric (default experiment.promote.metric, else experiment.sweep.metric)")
    promote.add_argument("--goal", choices=("min", "max"), help="lower or higher is better (default experiment.promote.goal, else experiment.sweep.goal)")
    promote.add_argument("--if-better", action="store_true",
                         help="only when the best run beats the served model's value (by the annotation mlshift.io/promoted)")
    promote.add_argument("--dry-run", action="store_true", help="print the patch; change nothing")
    promote.add_argument("--results", type=Path, metavar="DIR", help="the runs' records (default /workspace/<name>/results)")
    promote.add_argument("--service-account", type=Path, metavar="DIR", default=None,
                         help="the ServiceAccount's token, ca.crt and namespace (default /var/run/secrets/kubernetes.io/serviceaccount)")

    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible server")
    add_setting_flags(bench, BenchSettings, "bench")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


# --------------------------------------------------------------------------- settings
def _base_config(args: argparse.Namespace) -> RuntimeConfig:
    return load_deployment_config(args.config) if getattr(args, "config", None) else RuntimeConfig()


def _given(args: argparse.Namespace, model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """The flags of ``model``'s settings that were given on the command line (a section's as a
    mapping of their own)."""
    given: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if (section := _section_model(field)) is not None:
            if inner := _given(args, section, f"{prefix}{name}."):
                given[name] = inner
        elif getattr(args, prefix + name, None) is not None:
            given[name] = getattr(args, prefix + name)
    return given


def _dotted(values: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, value in values.items():
        out |= _dotted(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name}
    return out


def _merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``given`` over it, section by section."""
    out = dict(base)
    for name, value in given.items():
        out[name] = _merged(out[name], value) if isinstance(value, dict) and isinstance(out.get(name), dict) else value
    return out


def _flag_error(exc: UsageError, given: dict[str, Any]) -> UsageError:
    """A settings error about a flag names the flag, not the key."""
    key = str(exc).split(" ", 1)[0].split(":", 1)[0]
    if key in _dotted(given):
        return UsageError("--" + key.replace("_", "-").replace(".", "-") + str(exc)[len(key):])
    return exc


def _from_flags(model: type[BaseModel], args: argparse.Namespace, base: dict[str, Any] | None = None,
                **fixed: Any) -> Any:
    """``model`` from ``base`` (config.yaml's values), then the flags given, then ``fixed``; a bad
    value is one line naming the flag (or the config key, when it came from the file)."""
    given = _given(args, model)
    try:
        return checked(model, {**_merged(base or {}, given), **fixed})
    except UsageError as exc:
        raise _flag_error(exc, given) from None


def serve_settings(args: argparse.Namespace, base: RuntimeConfig, environ: Any = None, *,
                   model_env: bool = False) -> ServeSettings:
    """The engine's settings: config.yaml, then the flags. With ``model_env`` (``serve``), the
    server's variables too, when set and not empty (a flag still wins): RUNTIME_MODEL replaces
    config.yaml's model (the model a promotion set on the serving Deployment), and
    RUNTIME_API_KEYS_DIR gives the folder of API keys."""
    environ = os.environ if environ is None else environ
    values = base.serve.model_dump()
    promoted = (environ.get(MODEL_ENV) or "").strip() if model_env else ""
    if promoted:
        values["model"] = promoted
    if model_env and (keys_dir := (environ.get(API_KEYS_DIR_ENV) or "").strip()):
        values["api_keys_dir"] = keys_dir  # the variable; --api-keys-dir still wins
    s = _from_flags(ServeSettings, args, values, api_key=api_key_from_env(environ))
    if not s.model:
        raise UsageError("no model: pass --model PATH_OR_ID (or set inference.model in config.yaml)")
    if s.api_keys_dir is not None and not s.api_keys_dir.strip():
        raise UsageError("--api-keys-dir '': give the folder of the API keys (or leave the flag out)")
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
    settings = serve_settings(args, _base_config(args), model_env=True)
    if api_key_source()[0] == API_KEY_FALLBACK_ENV:
        print(f"note: requests must send the API key in {API_KEY_FALLBACK_ENV} ({API_KEY_ENV} is unset)", file=sys.stderr)
    if settings.engine == "vllm":
        from runtime.engine_vllm import exec_server

        if settings.api_keys_dir and not settings.api_key:  # vLLM would start with no key at all: closed, never open
            raise UsageError(f"vLLM's server takes one API key, from {API_KEY_ENV}, not a folder of keys: set {API_KEY_ENV} "
                             "(a vLLM deployment gets VLLM_API_KEY from its key Secret)")
        if settings.api_keys_dir or settings.rate_limit.limited:
            print("note: vLLM's server takes one API key (VLLM_API_KEY) and has no rate limits; the API keys folder and "
                  "inference.rate_limit are the transformers engine's", file=sys.stderr)

        exec_server(settings)
    _need_runtime_extra()
    import uvicorn

    from runtime.drain import DrainingServer
    from runtime.server import create_app, uvicorn_config

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def stop(reason: str) -> None:
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_error=stop)
    config = uvicorn_config(app, settings, log_level=args.log_level, access_log=args.log_level == "debug")
    server = DrainingServer(config, app.state.runtime.drainer)  # SIGTERM drains (runtime/drain.py), then exits 0
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
                      quiet_seconds=w.quiet_seconds, wait_for_root=not w.once)
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
        later = "" if root.is_dir() else " (it does not exist yet: no run has saved a model there)"
        print(f"watching {root}{later} every {w.every:g} s (Ctrl-C to stop); results in {watcher.eval_dir}", file=sys.stderr, flush=True)
        watcher.watch(w.every)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if tracker is not None:
            tracker.finish()


def cmd_promote(args: argparse.Namespace) -> int:
    from runtime.promote import SERVICE_ACCOUNT_DIR, run_in_pod

    def say(line: str) -> None:
        print(line, file=sys.stderr if line.startswith("note: ") else sys.stdout, flush=True)

    return run_in_pod(args.config, metric=args.metric, goal=args.goal, if_better=args.if_better, dry_run=args.dry_run,
                      results=args.results, sa_dir=args.service_account or Path(SERVICE_ACCOUNT_DIR), say=say)


COMMANDS = {"serve": cmd_serve, "batch": cmd_batch, "bench": cmd_bench, "watch": cmd_watch, "promote": cmd_promote}


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
