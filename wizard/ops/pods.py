"""Working with the running pod: exec, run-app, port-forward, test-inference, bench, jupyter, vscode, sync.

A submission's snapshot of the workspace is in :mod:`wizard.ops.snapshots`."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from runtime.settings import API_KEY_ENV, API_KEY_FALLBACK_ENV

from ..errors import UserError
from ..paths import SOURCE_ROOT, WORKSPACE_MOUNT
from . import deploy as deploy_ops
from .base import Operation, warn
from .oc import Answer, explain, first_line

RUN_IN_DIR = 'cd "$1" || exit 1; shift; exec "$@"'  # the words are positional parameters: no user text is parsed


# --------------------------------------------------------------------------- ports
def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_port(preferred: int) -> int:
    """The preferred local port if it is free, else any free one."""
    if port_free(preferred):
        return preferred
    port = any_free_port()
    warn(f"note: local port {preferred} is taken; using {port}")
    return port


class Forward:
    """``oc port-forward`` in the background for as long as the with-block runs.

    Its local port is any free one, not the remote port: the port a person forwards with
    ``port-forward.sh`` (8000) stays theirs, even while that forward is still starting."""

    WAIT = 30.0  # seconds for the forward to open

    def __init__(self, ctx: Operation, pod: str, remote: int):
        self.ctx, self.pod, self.remote = ctx, pod, remote
        self.local = remote if ctx.dry_run else any_free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local}"

    def __enter__(self) -> "Forward":
        self.proc = self.ctx.oc.background("port-forward", [f"pod/{self.pod}", f"{self.local}:{self.remote}"])
        if self.proc is None:
            return self
        deadline = time.monotonic() + self.WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise explain(Answer(list(self.proc.args), self.proc.returncode, "", err), what=f"forward a port to {self.pod}")
            try:
                with socket.create_connection(("127.0.0.1", self.local), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise UserError(f"the port-forward to {self.pod} did not open within {int(self.WAIT)}s",
                        hint="check the login and the network, then re-run")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def server_pod(ctx: Operation, purpose: str) -> str:
    if not ctx.blueprint.serves:
        raise UserError(f"{ctx.name} does not serve requests (inference.enabled is false or it runs as jobs)",
                        hint="set inference.enabled: true with execution.mode auto_start, and deploy")
    return ctx.ready_pod(purpose=purpose)


def port_forward(ctx: Operation, args) -> int:
    remote = args.remote_port or (ctx.blueprint.port if ctx.config.inference.enabled else 8000)
    pod = ctx.ready_pod(purpose="forward a port to")
    local = remote if ctx.dry_run else pick_port(args.port or remote)
    if not ctx.dry_run:
        ctx.say(f"Forwarding http://127.0.0.1:{local} -> {pod}:{remote} (Ctrl-C stops)")
        if ctx.blueprint.serves:
            ctx.say(f"  try: curl http://127.0.0.1:{local}{ctx.config.inference.health_check}   or   {ctx.script('test-inference.sh')} --url http://127.0.0.1:{local}")
    return ctx.oc.interactive("port-forward", [f"pod/{pod}", f"{local}:{remote}"])


# --------------------------------------------------------------------------- requests
def api_key(ctx: Operation) -> str | None:
    """The key ``api-key`` from the key Secret, read into memory only, through a pipe (never written anywhere)."""
    from .keys import read_key

    secret = ctx.config.inference.api_key_secret
    return read_key(ctx, secret) if secret else None


def http(method: str, url: str, body: Any = None, *, key: str | None, timeout: float) -> tuple[Any, float]:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")[:300].replace("\n", " ")
        hints = {401: "the server wants an API key: check inference.api_key_secret and its Secret",
                 403: "the server refused the key", 404: "check inference.endpoint and the model name (GET /v1/models)",
                 429: "the server's queue is full; retry, or raise inference.max_queue",
                 503: "the model may still be loading; check scripts/logs.sh"}
        raise UserError(f"{method} {url} answered HTTP {exc.code}: {text}",
                        hint=hints.get(exc.code, "see the server's logs (scripts/logs.sh)")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach {url}: {reason}", hint="is the server ready? (scripts/status.sh)") from None
    elapsed = time.perf_counter() - start
    try:
        return json.loads(raw.decode("utf-8")), elapsed
    except ValueError:
        return raw.decode("utf-8", "replace"), elapsed


def command_model(command: str | None) -> str | None:
    """The model name a server command line serves: its ``--served-model-name`` (the first),
    else its ``--model`` (``--model=NAME`` too), else the model after ``vllm serve``."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return None

    def value(flag: str) -> str | None:
        for i, word in enumerate(words):
            if word == flag and i + 1 < len(words) and not words[i + 1].startswith("-"):
                return words[i + 1]
            if word.startswith(flag + "=") and len(word) > len(flag) + 1:
                return word[len(flag) + 1:]
        return None

    found = value("--served-model-name") or value("--model")
    if found:
        return found
    for i in range(len(words) - 2):
        if os.path.basename(words[i]) == "vllm" and words[i + 1] == "serve" and not words[i + 2].startswith("-"):
            return words[i + 2]
    return None


def configured_model(ctx: Operation, args=None) -> str | None:  # type: ignore[no-untyped-def]
    """The model to ask for, as far as the command line and config.yaml tell: ``--model``, then
    inference.served_model_name or inference.model, then a custom command's own flags."""
    inf, app = ctx.config.inference, ctx.config.application
    given = getattr(args, "model", None)
    if given or inf.served_model_name or inf.model:
        return given or inf.served_model_name or inf.model
    return command_model(app.source.command) if app.type == "custom_command" else None


def model_name(ctx: Operation, base: str, key: str | None, timeout: float, args=None) -> str | None:  # type: ignore[no-untyped-def]
    configured = configured_model(ctx, args)
    if configured:
        return configured
    models, _ = http("GET", base + "/v1/models", key=key, timeout=timeout)
    try:
        return models["data"][0]["id"]
    except (KeyError, IndexError, TypeError):
        return None


def request_body(endpoint: str, model: str | None, prompt: str, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model} if model else {}
    if endpoint.rstrip("/").endswith("chat/completions"):
        body.update(messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens)
    elif endpoint.rstrip("/").endswith("completions"):
        body.update(prompt=prompt, max_tokens=max_tokens)
    elif endpoint.rstrip("/").endswith("embeddings"):
        body.update(input=prompt)
    else:
        body.update(prompt=prompt)
    return body


def answer_text(reply: Any) -> str:
    if not isinstance(reply, dict):
        return str(reply)
    try:
        choice = reply["choices"][0]
        if "message" in choice:
            return str(choice["message"].get("content") or "")
        return str(choice.get("text", ""))
    except (KeyError, IndexError, TypeError):
        pass
    if "data" in reply and isinstance(reply["data"], list) and reply["data"] and "embedding" in reply["data"][0]:
        vec = reply["data"][0]["embedding"]
        return f"embedding of {len(vec)} numbers: {vec[:4]}..."
    return json.dumps(reply)[:500]


def base_url(ctx: Operation, args) -> str | None:
    if args.url:
        return args.url.rstrip("/")
    if args.route:
        url = deploy_ops.route_url(ctx)
        if not url:
            raise UserError(f"{ctx.name} has no Route", hint="set inference.route.enabled: true and deploy, or leave out --route")
        return url
    return None


def test_inference(ctx: Operation, args) -> int:
    if not ctx.dry_run and not args.url:
        ctx.check_session()
    key = api_key(ctx) if not args.url or ctx.config.inference.api_key_secret else None
    endpoint = ctx.config.inference.endpoint
    url = base_url(ctx, args)
    if url:
        return _one_request(ctx, url, endpoint, key, args)
    pod = server_pod(ctx, "send a request to")
    with Forward(ctx, pod, ctx.blueprint.port) as fwd:
        if ctx.dry_run:
            ctx.oc.note(f"then: POST {fwd.url}{endpoint} ({'chat' if 'chat' in endpoint else 'completion'} request)")
            return 0
        ctx.say(f"Through a port-forward to {pod}:")
        return _one_request(ctx, fwd.url, endpoint, key, args)


def _one_request(ctx: Operation, base: str, endpoint: str, key: str | None, args) -> int:
    if ctx.dry_run:
        ctx.oc.note(f"then: POST {base}{endpoint}")
        return 0
    model = model_name(ctx, base, key, args.timeout, args)
    body = request_body(endpoint, model, args.prompt, args.max_tokens)
    ctx.say(f"POST {base}{endpoint}" + (f" (model {model})" if model else ""))
    ctx.say(f"prompt: {args.prompt}")
    reply, elapsed = http("POST", base + endpoint, body, key=key, timeout=args.timeout)
    ctx.say(f"answer: {answer_text(reply).strip()}")
    usage = reply.get("usage") if isinstance(reply, dict) else None
    tokens = (usage or {}).get("completion_tokens")
    rate = f", {tokens} tokens, {tokens / elapsed:.1f} tokens/s" if tokens and elapsed > 0 else ""
    ctx.say(f"latency: {elapsed * 1000:.0f} ms{rate}")
    return 0


def bench(ctx: Operation, args) -> int:
    if not ctx.dry_run and not args.url:
        ctx.check_session()
    key = api_key(ctx)

    def run(url: str) -> int:
        cmd = [sys.executable, "-m", "runtime", "bench", "--url", url,
               "--concurrency", str(args.concurrency), "--num-requests", str(args.num_requests),
               "--max-tokens", str(args.max_tokens), "--model", bench_model(ctx, args, url, key)]
        if args.stream:
            cmd.append("--stream")
        if args.json:
            cmd.append("--json")
        if ctx.dry_run:
            print(shlex.join(["python", *cmd[1:]]))
            return 0
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        # The deployment's key and no other (not one of the user's own for another server), in the
        # child's environment only.
        for name in (API_KEY_ENV, API_KEY_FALLBACK_ENV):
            env.pop(name, None)
        if key:
            env[API_KEY_ENV] = key
        return subprocess.run(cmd, env=env).returncode

    url = base_url(ctx, args)
    if url:
        return run(url)
    pod = server_pod(ctx, "benchmark")
    with Forward(ctx, pod, ctx.blueprint.port) as fwd:
        return run(fwd.url)


def bench_model(ctx: Operation, args, url: str, key: str | None) -> str:  # type: ignore[no-untyped-def]
    """The model name ``runtime bench`` asks for: from the command line or config.yaml, else the
    first the server lists (GET /v1/models); a one-line error naming --model when none is known."""
    model = configured_model(ctx, args)
    if model:
        return model
    if ctx.dry_run:
        ctx.oc.note(f"then: GET {url}/v1/models for the model's name")
        return "<the first model of /v1/models>"
    try:
        model = model_name(ctx, url, key, 30.0, args)
    except UserError:
        model = None
    if not model:
        raise UserError("cannot tell which model to benchmark: pass --model NAME, or set inference.served_model_name "
                        f"in config.yaml (the server at {url} did not list one at /v1/models)")
    return model


# --------------------------------------------------------------------------- exec, run-app
def _tty_flags() -> list[str]:
    return ["-i", "-t"] if sys.stdin.isatty() and sys.stdout.isatty() else ["-i"]


def exec_(ctx: Operation, args) -> int:
    pod = ctx.ready_pod(purpose="open a shell in")
    command = list(args.command or [])
    if not command:
        return ctx.oc.interactive("rsh", ["-c", ctx.blueprint.container_name, f"pod/{pod}"])
    return ctx.oc.interactive("exec", [*_tty_flags(), f"pod/{pod}", "-c", ctx.blueprint.container_name, "--", *command])


def run_app(ctx: Operation, args) -> int:
    app = ctx.config.application
    if not app.enabled:
        raise UserError("application.enabled is false: there is no application to run", hint="use shell.sh to work in the pod")
    if ctx.blueprint.is_job:
        raise UserError(f"{ctx.name} runs as jobs", hint=f"submit one with {ctx.script('submit-job.sh')}")
    extra = list(args.arguments or [])
    argv = ctx.blueprint.app_argv(extra if extra else None)
    pod = ctx.ready_pod(purpose="run the application in")
    if not ctx.dry_run:
        ctx.say(f"Running in {pod}:{ctx.blueprint.working_dir}: " + " ".join(argv))
    return ctx.oc.interactive("exec", [*_tty_flags(), f"pod/{pod}", "-c", ctx.blueprint.container_name, "--",
                                       "/bin/sh", "-c", RUN_IN_DIR, "mlshift-run", ctx.blueprint.working_dir, *argv])


# --------------------------------------------------------------------------- jupyter, vscode
JUPYTER = ('python3 -c "import jupyterlab" 2>/dev/null || python3 -m pip install --quiet --user jupyterlab || exit 1; '
           'nohup python3 -m jupyterlab --ip=127.0.0.1 --port="$1" --no-browser --ServerApp.token="$2" '
           '--ServerApp.root_dir="$3" >/tmp/jupyter.log 2>&1 & '
           'for i in $(seq 120); do grep -q "127.0.0.1:$1" /tmp/jupyter.log 2>/dev/null && exit 0; sleep 1; done; '
           'tail -n 20 /tmp/jupyter.log; exit 1')
CODE_SERVER = ('export PATH="/tmp/code-server/bin:$PATH"; command -v code-server >/dev/null 2>&1 || '
               '{ curl -fsSL https://code-server.dev/install.sh | sh -s -- --method=standalone --prefix=/tmp/code-server >/tmp/code-server-install.log 2>&1 '
               '|| { tail -n 20 /tmp/code-server-install.log; exit 1; }; }; '
               'nohup code-server --bind-addr "127.0.0.1:$1" --auth none --disable-telemetry "$2" >/tmp/code-server.log 2>&1 & '
               'for i in $(seq 60); do grep -q "HTTP server listening" /tmp/code-server.log 2>/dev/null && exit 0; sleep 1; done; '
               'tail -n 20 /tmp/code-server.log; exit 1')


def _tool_in_pod(ctx: Operation, args, *, what: str, script: str, extra: list[str], path: str) -> int:
    pod = ctx.ready_pod(purpose=f"start {what} in")
    remote = args.port
    ctx.say(f"Starting {what} in {pod} (installing it there first if needed)...") if not ctx.dry_run else None
    ans = ctx.oc.call("exec", [f"pod/{pod}", "-c", ctx.blueprint.container_name, "--", "/bin/sh", "-c", script,
                               "mlshift-" + what.split()[0].lower(), str(remote), *extra], check=False, timeout=900)
    if not ans.ok:
        raise UserError(f"{what} did not start in {pod}: {first_line(ans.out + ans.err) or 'exit ' + str(ans.returncode)}",
                        hint="the pod needs network access to install it, or an image that has it")
    local = remote if ctx.dry_run else pick_port(remote)
    if not ctx.dry_run:
        ctx.say(f"Open http://127.0.0.1:{local}{path}   (Ctrl-C stops the forward; {what} keeps running in the pod)")
    return ctx.oc.interactive("port-forward", [f"pod/{pod}", f"{local}:{remote}"])


def jupyter(ctx: Operation, args) -> int:
    token = "<token>" if ctx.dry_run else secrets.token_urlsafe(24)
    root = ctx.blueprint.working_dir if ctx.blueprint.working_dir.startswith(WORKSPACE_MOUNT) else WORKSPACE_MOUNT
    return _tool_in_pod(ctx, args, what="Jupyter Lab", script=JUPYTER, extra=[token, root], path=f"/lab?token={token}")


def vscode(ctx: Operation, args) -> int:
    return _tool_in_pod(ctx, args, what="VS Code (code-server)", script=CODE_SERVER, extra=[ctx.blueprint.working_dir], path="/")


# --------------------------------------------------------------------------- sync
def sync(ctx: Operation, args) -> int:
    ctx.check_session()
    blueprint = ctx.blueprint
    pod = None
    if not blueprint.is_job:
        if ctx.dry_run:
            ctx.oc.call("get", ["pods", "-l", ctx.selector(), "-o", "json"])
        else:
            from . import diagnose

            ready = [p for p in ctx.pods() if diagnose.is_ready(p)]
            pod = ready[0]["metadata"]["name"] if ready else None
    if args.direction == "up":
        local = Path(args.local) if args.local else ctx.directory / "workspace"
        if not local.is_dir():
            raise UserError(f"{local} is not a folder")
        remote = args.remote or blueprint.working_dir
        deploy_ops.copy_to_volume(ctx, pod, local, remote)
        if not ctx.dry_run:
            ctx.say(f"Uploaded {ctx.rel(local)}/ to {remote}")
        return 0
    remote = args.remote or f"{blueprint.working_dir}/results"
    local = Path(args.local) if args.local else ctx.directory
    if not ctx.dry_run:
        local.mkdir(parents=True, exist_ok=True)
    deploy_ops.copy_from_volume(ctx, pod, remote, local)
    if not ctx.dry_run:
        ctx.say(f"Downloaded {remote} into {ctx.rel(local) if local != ctx.directory else ctx.directory.name + '/'}")
    return 0
