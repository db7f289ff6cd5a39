"""Working with the running pod: exec, run-app, port-forward, test-inference, bench, jupyter, vscode, sync."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
import secrets
import shlex
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
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


def pick_port(preferred: int) -> int:
    """The preferred local port if it is free, else any free one."""
    if port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    warn(f"note: local port {preferred} is taken; using {port}")
    return port


class Forward:
    """``oc port-forward`` in the background for as long as the with-block runs."""

    def __init__(self, ctx: Operation, pod: str, remote: int, local: int | None = None, wait: float = 30.0):
        self.ctx, self.pod, self.remote = ctx, pod, remote
        self.local = local if local is not None else (remote if ctx.dry_run else pick_port(remote))
        self.wait = wait
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local}"

    def __enter__(self) -> "Forward":
        self.proc = self.ctx.oc.background("port-forward", [f"pod/{self.pod}", f"{self.local}:{self.remote}"])
        if self.proc is None:
            return self
        deadline = time.monotonic() + self.wait
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
        raise UserError(f"the port-forward to {self.pod} did not open within {int(self.wait)}s",
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
    """The bearer key from the Secret, read into memory only (never written anywhere)."""
    secret = ctx.config.inference.api_key_secret
    if not secret:
        return None
    ans = ctx.oc.call("get", ["secret", secret, "-o", "jsonpath={.data.api-key}"], what=f"read the key in Secret {secret}")
    if ctx.dry_run:
        return "<api key>"
    try:
        return base64.b64decode(ans.out.strip()).decode("utf-8").strip() or None
    except ValueError:
        raise UserError(f"the Secret {secret} has no readable key api-key") from None


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


# --------------------------------------------------------------------------- snapshots (submit)
# What you submit is what runs: the Jobs of each submission run from a snapshot of workspace/
# on the volume, RUNS_DIR/<id>, made at submit time and not changed afterwards (its files are
# read-only). Only the files that changed since the last snapshot are uploaded: their hashes are
# recorded here (SNAPSHOT_STATE, per project, with the volume's uid), and SNAPSHOT_SCRIPT, run in
# the short-lived sync pod, makes the new snapshot from hard links to the previous one's
# unchanged files and the uploaded ones. `oc rsync` falls back to tar there (the pod's image has
# no rsync), so the changed files travel as one folder of their own.
RUNS_DIR = f"{WORKSPACE_MOUNT}/.runs"
SNAPSHOT_STATE = ".mlshift/snapshots.json"
SNAPSHOT_ID = re.compile(r"\d{6}-\d{6}-[a-z0-9]{4}")
LEFT_OUT = frozenset({"__pycache__"})  # folders of workspace/ that are not snapshotted (nor the top .gitkeep)
RECENT_NS = 2_000_000_000  # a file modified this close before its hash was recorded is hashed again

# bash SCRIPT mlshift-snapshot RUNS ID BASE RESULTS. RUNS/.upload-ID holds what was uploaded:
# files/ (the changed files), keep (the unchanged ones, to link from RUNS/BASE), changed and
# executable (NUL-separated lists) and manifest.sha256 (every file, for `sha256sum -c`). The
# snapshot is built in RUNS/.new-ID and renamed to RUNS/ID when whole. Exit code 3: BASE is not
# (all) on the volume any more; the caller then uploads everything. RESULTS, when given, is the
# relative link target of the snapshot's results/ (the configured working directory's results/).
SNAPSHOT_SCRIPT = r"""set -eu
runs=$1 id=$2 base=$3 results=$4
up=$runs/.upload-$id new=$runs/.new-$id dest=$runs/$id
trap 'rm -rf -- "$up" "$new"' EXIT
if [ -e "$dest" ]; then exit 0; fi
each() {
  local list=$1 dir=$2 f
  shift 2
  local some=()
  while IFS= read -r -d '' f; do
    some+=("$f")
    if [ "${#some[@]}" -ge 1000 ]; then (cd -- "$dir" && "$@" "${some[@]}") || return 1; some=(); fi
  done < "$list"
  if [ "${#some[@]}" -gt 0 ]; then (cd -- "$dir" && "$@" "${some[@]}") || return 1; fi
  return 0
}
link() {
  cp -l --parents -t "$new" -- "$@" 2>/dev/null || cp -p --remove-destination --parents -t "$new" -- "$@"
}
rm -rf -- "$new"
mkdir -p -- "$new"
if [ -n "$base" ]; then
  if [ ! -d "$runs/$base" ] || ! each "$up/keep" "$runs/$base" link; then
    echo "mlshift: snapshot $base is not (all) on the volume" >&2
    exit 3
  fi
fi
each "$up/executable" "$up/files" chmod a+x --
each "$up/changed" "$up/files" chmod a-w --
each "$up/changed" "$up/files" link
if [ -n "$results" ] && [ ! -e "$new/results" ] && [ ! -L "$new/results" ]; then
  mkdir -p -- "$new/$results" && ln -s -- "$results" "$new/results"
fi
mv -f -- "$up/manifest.sha256" "$runs/$id.sha256"
mv -T -- "$new" "$dest"
"""


@dataclass(frozen=True)
class Entry:
    """One file of workspace/: what it holds (hash, size, executable), and the stat it was hashed at."""

    sha256: str
    size: int
    executable: bool
    mtime_ns: int = 0
    inode: int = 0

    def same(self, other: "Entry") -> bool:
        return (self.sha256, self.size, self.executable) == (other.sha256, other.size, other.executable)


@dataclass
class Snapshot:
    """The last snapshot uploaded from this folder to one project's workspace volume."""

    id: str
    volume: str  # the volume's metadata.uid: a volume deleted and created again has another
    at_ns: int  # when its files were looked at
    files: dict[str, Entry]


@dataclass
class Upload:
    """A snapshot to make: all its files, and which of them travel (the rest are linked from ``base``)."""

    id: str
    base: Snapshot | None
    files: dict[str, Entry]
    changed: list[str]
    removed: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        travel = set(self.changed)
        return [rel for rel in sorted(self.files) if rel not in travel] if self.base else []

    @property
    def size(self) -> int:
        return sum(self.files[rel].size for rel in self.changed)

    def everything(self) -> "Upload":
        return Upload(self.id, None, self.files, sorted(self.files))


def _plain(rel: Any) -> bool:
    return (isinstance(rel, str) and rel != "" and not rel.startswith("/")
            and all(part not in ("", ".", "..") for part in rel.split("/")))


def read_snapshots(directory: Path) -> dict[str, Snapshot]:
    """Project -> the last snapshot uploaded there, from SNAPSHOT_STATE; what is damaged or not
    ours is left out (then everything is uploaded again), never an error."""
    try:
        data = json.loads((directory / SNAPSHOT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    out: dict[str, Snapshot] = {}
    for project, rec in (data.items() if isinstance(data, dict) else []):
        try:
            files = {}
            for rel, (sha, size, executable, mtime_ns, inode) in rec["files"].items():
                if not (_plain(rel) and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)
                        and all(type(n) is int and n >= 0 for n in (size, mtime_ns, inode))):
                    raise ValueError(rel)
                files[rel] = Entry(sha, size, bool(executable), mtime_ns, inode)
            snap = Snapshot(rec["id"], rec["volume"], rec["at"], files)
            if not (isinstance(snap.id, str) and SNAPSHOT_ID.fullmatch(snap.id) and isinstance(snap.volume, str)
                    and type(snap.at_ns) is int):
                raise ValueError(snap.id)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        out[str(project)] = snap
    return out


def write_snapshots(directory: Path, records: dict[str, Snapshot]) -> None:
    from ..files import write_file

    data = {project: {"id": s.id, "volume": s.volume, "at": s.at_ns,
                      "files": {rel: [e.sha256, e.size, int(e.executable), e.mtime_ns, e.inode] for rel, e in sorted(s.files.items())}}
            for project, s in sorted(records.items())}
    write_file(directory, SNAPSHOT_STATE, json.dumps(data, indent=1) + "\n", 0o644)


def _hash(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", hint="fix its permissions or move it out of workspace/") from None
    return h.hexdigest()


def scan_workspace(root: Path, recorded: Snapshot | None) -> tuple[dict[str, Entry], list[str], int]:
    """Every file of workspace/ (relative path -> Entry), notes on what is left out, and when it was looked at.

    A file is hashed unless its size, modification time and inode are those recorded for it and
    it was modified well before they were recorded (git's rule against a change in the same tick).
    Links to files count as the files they point to; links to folders are left out (with a note).
    """
    at = time.time_ns()
    known = recorded.files if recorded else {}
    trusted_before = recorded.at_ns - RECENT_NS if recorded else 0
    files: dict[str, Entry] = {}
    notes: list[str] = []
    if not root.is_dir():
        return files, notes, at
    top = str(root)
    for folder, dirs, names in os.walk(top):
        below = os.path.relpath(folder, top)
        prefix = "" if below == "." else below.replace(os.sep, "/") + "/"
        keep = []
        for d in sorted(dirs):
            if d in LEFT_OUT:
                continue
            if os.path.islink(os.path.join(folder, d)):
                notes.append(f"workspace/{prefix}{d} is a link to a folder; it is not part of the snapshot")
                continue
            keep.append(d)
        dirs[:] = keep
        for n in sorted(names):
            rel = prefix + n
            if rel == ".gitkeep":
                continue
            path = os.path.join(folder, n)
            try:
                st = os.stat(path)
            except OSError:
                notes.append(f"workspace/{rel} cannot be read (a broken link?); it is not part of the snapshot")
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            old = known.get(rel)
            if (old is not None and (old.size, old.mtime_ns, old.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)
                    and st.st_mtime_ns < trusted_before):
                sha = old.sha256
            else:
                sha = _hash(path)
            files[rel] = Entry(sha, st.st_size, bool(st.st_mode & 0o111), st.st_mtime_ns, st.st_ino)
    return files, notes, at


def _diff(files: dict[str, Entry], before: dict[str, Entry]) -> tuple[list[str], list[str]]:
    changed = sorted(rel for rel, e in files.items() if rel not in before or not e.same(before[rel]))
    return changed, sorted(rel for rel in before if rel not in files)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} byte{'s' if n != 1 else ''}"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def _names(rels: list[str], most: int = 5) -> str:
    shown = ", ".join(rels[:most])
    return shown + (f" and {len(rels) - most} more" if len(rels) > most else "")


def _files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def _stage(workspace: Path, folder: Path, up: Upload) -> None:
    """What is uploaded, in ``folder``: the changed files (copied and hashed again as they are
    copied: what is copied is what runs and what is recorded) and the lists."""
    (folder / "files").mkdir(parents=True)
    for rel in up.changed:
        src, dst = workspace.joinpath(*rel.split("/")), folder.joinpath("files", *rel.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        h, size = hashlib.sha256(), 0
        try:
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                for chunk in iter(lambda: fin.read(1 << 20), b""):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise UserError(f"cannot read workspace/{rel}: {exc.strerror}", hint="it changed while submitting? submit again") from None
        entry = up.files[rel]
        if (h.hexdigest(), size) != (entry.sha256, entry.size):  # changed since it was looked at
            up.files[rel] = Entry(h.hexdigest(), size, entry.executable)
    lists = {"keep": up.kept, "changed": up.changed, "executable": [r for r in up.changed if up.files[r].executable]}
    for name, rels in lists.items():
        (folder / name).write_bytes(b"".join(os.fsencode(rel) + b"\0" for rel in rels))
    lines = []
    for rel, entry in sorted(up.files.items()):
        if "\\" in rel or "\n" in rel:  # sha256sum's escaped form
            lines.append(b"\\" + entry.sha256.encode() + b"  " + os.fsencode(rel.replace("\\", "\\\\").replace("\n", "\\n")) + b"\n")
        else:
            lines.append(entry.sha256.encode() + b"  " + os.fsencode(rel) + b"\n")
    (folder / "manifest.sha256").write_bytes(b"".join(lines))


def _send(ctx: Operation, pod: str, up: Upload, results: str) -> Answer:
    """Upload what makes snapshot ``up.id`` and make it on the volume (one rsync, one exec)."""
    import tempfile

    make = [pod, "--", "/bin/bash", "-c", SNAPSHOT_SCRIPT, "mlshift-snapshot", RUNS_DIR, up.id,
            up.base.id if up.base else "", results]
    if ctx.dry_run:
        ctx.oc.note(f"FOLDER is a temporary folder holding .runs/.upload-{up.id}/: the {_files(len(up.changed))} "
                    "to upload and the lists of the others")
        ctx.oc.stream("rsync", ["FOLDER/.runs", f"{pod}:{WORKSPACE_MOUNT}", "--no-perms=true"])
        return ctx.oc.call("exec", make)
    with tempfile.TemporaryDirectory(prefix="mlshift-snapshot-") as tmp:
        _stage(ctx.directory / "workspace", Path(tmp) / ".runs" / f".upload-{up.id}", up)
        ctx.oc.stream("rsync", [str(Path(tmp) / ".runs"), f"{pod}:{WORKSPACE_MOUNT}", "--no-perms=true"],
                      what="upload the changed files of workspace/")
    return ctx.oc.call("exec", make, check=False, timeout=900, what=f"make snapshot {up.id} on the volume")


def upload_snapshot(ctx: Operation, up: Upload) -> Upload:
    """Make snapshot ``up.id`` on the volume through the short-lived sync pod; returns what was
    uploaded (everything when the base snapshot turned out to be gone from the volume)."""
    hint = f"or run the last snapshot as it is: {ctx.script('submit-job.sh')} --no-sync" if up.base else None
    results = posixpath.relpath(f"{ctx.blueprint.configured_working_dir}/results", f"{RUNS_DIR}/{up.id}")
    with deploy_ops.VolumePod(ctx, None, hint=hint) as pod:
        ans = _send(ctx, pod, up, results)
        if ans.returncode == 3 and up.base is not None:
            warn(f"note: snapshot {up.base.id} is not (all) on the volume any more; uploading all of workspace/")
            up = up.everything()
            ans = _send(ctx, pod, up, results)
        if not ans.ok:
            raise explain(ans, what=f"make snapshot {up.id} on the volume", namespace=ctx.oc.namespace)
    return up


def snapshot_for_jobs(ctx: Operation, *, new_id: str, volume: str, no_sync: bool = False) -> str | None:
    """The folder on the volume that this submission's Jobs run from: a snapshot of workspace/.

    When workspace/ changed since the last snapshot uploaded to this project's volume, a new one
    (``new_id``) is uploaded first, with only the files that changed; when nothing changed, the
    last one is used again (a snapshot is never changed). ``no_sync`` uses the last one as it
    is. None when workspace/ is empty: the Jobs then run what is in the configured working
    directory, as before snapshots. A dry run says what it would upload and changes nothing.
    """
    records = read_snapshots(ctx.directory)
    project = ctx.oc.namespace or ""
    if ctx.dry_run and not project and len(records) == 1:
        project = next(iter(records))  # the current project is not asked for in a dry run
    recorded = records.get(project)
    last = recorded if recorded is not None and (not volume or recorded.volume == volume) else None
    files, notes, at = scan_workspace(ctx.directory / "workspace", recorded)
    for note in notes:
        warn(f"note: {note}")
    if no_sync:
        if last is None:
            gone = f" (snapshot {recorded.id} was on a volume that has been replaced since)" if recorded else ""
            raise UserError(f"--no-sync: no snapshot of workspace/ was uploaded from here to {ctx.where} yet{gone}",
                            hint=f"submit once without --no-sync ({ctx.script('submit-job.sh')}); it uploads one")
        ctx.say(f"--no-sync: running snapshot {last.id} ({RUNS_DIR}/{last.id}) as it is; workspace/ is not uploaded.")
        changed, removed = _diff(files, last.files)
        if changed or removed:
            warn(f"note: workspace/ has changed since snapshot {last.id} ("
                 + "; ".join(filter(None, [changed and f"changed: {_names(changed)}", removed and f"removed: {_names(removed)}"]))
                 + "); this submission does not have those changes")
        return f"{RUNS_DIR}/{last.id}"
    if not files:
        warn(f"note: workspace/ is empty: the job runs what is on the volume in {ctx.blueprint.configured_working_dir} "
             f"(put your code in workspace/ to have it uploaded with each submission)")
        return None
    if last is not None:
        changed, removed = _diff(files, last.files)
        if not changed and not removed:
            ctx.say(f"workspace/: nothing changed since snapshot {last.id}; this submission runs from it "
                    f"({RUNS_DIR}/{last.id}), nothing uploaded.")
            return f"{RUNS_DIR}/{last.id}"
        up = Upload(new_id, last, files, changed, removed)
        what = (f"{len(changed)} of {_files(len(files))} changed since snapshot {last.id} ({_names(changed) or 'none'}; "
                f"{_bytes(up.size)})" + (f", {len(removed)} removed ({_names(removed)})" if removed else ""))
    else:
        up = Upload(new_id, None, files, sorted(files))
        why = (f"snapshot {recorded.id} was on a volume that has been replaced since" if recorded
               else f"the first snapshot from here in {ctx.where}")
        what = f"all {_files(len(files))}, {_bytes(up.size)} ({why})"
    ctx.say(("Would upload" if ctx.dry_run else "Uploading") + f" workspace/ as snapshot {new_id}: {what}")
    up = upload_snapshot(ctx, up)
    if ctx.dry_run:
        return f"{RUNS_DIR}/{new_id}"
    records[project] = Snapshot(new_id, volume, at, up.files)
    write_snapshots(ctx.directory, records)
    how = (f"{_files(len(up.changed))} uploaded, {_bytes(up.size)}; the others linked from {up.base.id}" if up.base
           else f"all uploaded, {_bytes(up.size)}")
    ctx.say(f"Snapshot {new_id}: {_files(len(up.files))} in {RUNS_DIR}/{new_id} ({how})")
    return f"{RUNS_DIR}/{new_id}"
