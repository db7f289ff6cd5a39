"""The API keys of a served application: the key Secret that deploy creates, and api-key.sh.

Every data key of the Secret (inference.api_key_secret) is one API key, named by its data key;
``api-key`` is the one the scripts send and vLLM checks. A key's value is drawn here
(:func:`new_key`), reaches ``oc`` on its standard input through :meth:`Oc.private` and is
printed only by ``api-key.sh``, which is asked for it: no argument of any process, no file and
no dry run's output holds it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from typing import Any

from ..errors import UserError
from ..paths import API_KEY_DATA_KEY
from .base import Operation, warn
from .oc import explain

KEY_BYTES = 32  # random bytes in a key: 43 characters of URL-safe base64
# A key's name: a Secret data key that is also a plain file name in the mounted folder (no
# leading dot: the kubelet's own entries there start with "..").
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][-._A-Za-z0-9]*$")
KEY_NAME_MAX = 253
# The names of a Secret's data keys, one a line: its values never leave the cluster for this.
KEY_NAMES_TEMPLATE = '{{range $k, $v := .data}}{{$k}}{{"\\n"}}{{end}}'
SHOWN_KEY = "<random key>"  # what a dry run shows in place of a key


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def check_key_name(name: str) -> str:
    if len(name) > KEY_NAME_MAX or not KEY_NAME_RE.match(name):
        raise UserError(f"{name!r} is not a key name: letters, digits, '-', '_' and '.', starting with a letter or digit",
                        hint="e.g. --new ci or --new alice.laptop")
    return name


def secret_manifest(ctx: Operation, secret: str, key: str) -> dict[str, Any]:
    """The key Secret as created: one key, ``api-key``, labelled like the application's objects."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret, "labels": ctx.blueprint.labels("api-keys")},
            "type": "Opaque", "stringData": {API_KEY_DATA_KEY: key}}


def removal_command(ctx: Operation, secret: str, name: str) -> str:
    ns = f" -n {ctx.oc.namespace}" if ctx.oc.namespace else ""
    patch = json.dumps([{"op": "remove", "path": f"/data/{name}"}], separators=(",", ":"))
    return f"oc patch secret {secret}{ns} --type=json -p '{patch}'"


# --------------------------------------------------------------------------- deploy
def create_secret(ctx: Operation) -> None:
    """Create the key Secret with one random key, ``api-key``: deploy does it when the Secret is
    missing (an existing one is left as it is). The Secret goes to ``oc create -f -`` on stdin."""
    secret = ctx.blueprint.api_keys_secret
    assert secret
    key = SHOWN_KEY if ctx.dry_run else new_key()
    shown = json.dumps(secret_manifest(ctx, secret, SHOWN_KEY), indent=1)
    ans = ctx.oc.private("create", ["-f", "-"], stdin=json.dumps(secret_manifest(ctx, secret, key)), shown_stdin=shown,
                         check=False, what=f"create the API key Secret {secret}")
    if ctx.dry_run:
        return
    if not ans.ok and "already exists" in ans.err.lower():
        return  # made meanwhile (another deploy): its keys stay
    if not ans.ok:
        raise explain(ans, what=f"create the API key Secret {secret}", namespace=ctx.oc.namespace)
    ctx.say(f"Created the Secret {secret} with a random API key; {ctx.script('api-key.sh')} prints it")


# --------------------------------------------------------------------------- reading
def key_names(ctx: Operation, secret: str) -> list[str] | None:
    """The names of the keys in the Secret (never their values); None when it does not exist."""
    ans = ctx.oc.call("get", ["secret", secret, "--ignore-not-found", "-o", f"go-template={KEY_NAMES_TEMPLATE}"],
                      what=f"read the key names of Secret {secret}", dry_answer=API_KEY_DATA_KEY + "\n")
    if not ans.ok or (not ans.out.strip() and not _exists(ctx, secret)):
        return None
    return [line.strip() for line in ans.out.splitlines() if line.strip()]


def _exists(ctx: Operation, secret: str) -> bool:
    ans = ctx.oc.call("get", ["secret", secret, "-o", "name", "--ignore-not-found"], what=f"look up Secret {secret}")
    return bool(ans.out.strip())


def read_key(ctx: Operation, secret: str, name: str = API_KEY_DATA_KEY) -> str | None:
    """One key's value, into memory only (through a pipe); None when the Secret has no such key."""
    path = name.replace(".", "\\.")  # a dot in a name is a separator to jsonpath
    ans = ctx.oc.private("get", ["secret", secret, "-o", f"jsonpath={{.data.{path}}}"], what=f"read the key in Secret {secret}")
    if ctx.dry_run:
        return "<api key>"
    try:
        return base64.b64decode(ans.out.strip(), validate=True).decode("utf-8").strip() or None
    except ValueError:
        raise UserError(f"the Secret {secret} has no readable key {name}") from None


def _add(ctx: Operation, secret: str, name: str, key: str) -> None:
    """Set one data key of the Secret (a merge patch on stdin: the other keys are not read)."""
    def patch(value: str) -> str:
        return json.dumps({"data": {name: base64.b64encode(value.encode()).decode()}})

    ctx.oc.private("patch", ["secret", secret, "--type=merge", "--patch-file=/dev/stdin"], stdin=patch(key),
                   shown_stdin=json.dumps({"data": {name: "<the key, base64>"}}), what=f"add the key {name} to Secret {secret}")


# --------------------------------------------------------------------------- api-key.sh
def api_key(ctx: Operation, args) -> int:
    secret = ctx.blueprint.api_keys_secret
    if not secret:
        why = ("it does not serve requests" if not ctx.blueprint.serves else
               "its Route is open (inference.route.public: true)" if ctx.blueprint.route else
               "it has no Route and inference.api_key_secret is empty")
        raise UserError(f"{ctx.name} asks for no API key: {why}",
                        hint="set inference.api_key_secret (or leave inference.route.public false) and deploy")
    if args.new is not None or args.rotate is not None:  # a wrong name (an empty one too) before anything is asked
        check_key_name(args.new if args.new is not None else args.rotate)
    ctx.check_session()
    names = key_names(ctx, secret)
    if names is None:
        raise UserError(f"the Secret {secret} does not exist in {ctx.where} yet",
                        hint=f"{ctx.script('deploy.sh')} creates it with a random key")
    if args.list:
        for name in names:
            print(name)
        return 0
    if args.new is not None or args.rotate is not None:
        return _new_or_rotate(ctx, secret, names, args)
    name = API_KEY_DATA_KEY if args.name is None else args.name
    if not ctx.dry_run and name not in names:
        raise UserError(f"the Secret {secret} has no key {name!r}",
                        hint=f"its keys: {', '.join(names) or 'none'}; add one with api-key.sh --new NAME")
    key = read_key(ctx, secret, name)
    if not ctx.dry_run:
        print(key, flush=True)
    return 0


def _new_or_rotate(ctx: Operation, secret: str, names: list[str], args) -> int:
    name = check_key_name(args.new if args.new is not None else args.rotate)
    vllm = ctx.config.runs_vllm
    if args.new is not None:
        if not ctx.dry_run and name in names:
            raise UserError(f"the Secret {secret} already has a key {name!r}",
                            hint=f"choose another name, or give it a new value with --rotate {name}")
        if vllm:
            raise UserError(f"vLLM checks one key, {API_KEY_DATA_KEY}; a key {name!r} beside it would not be accepted",
                            hint=f"rotate that one with --rotate {API_KEY_DATA_KEY}; several keys, each with its own limits, "
                                 "need the included transformers server (inference.engine: transformers)")
    elif not ctx.dry_run and name not in names:
        raise UserError(f"the Secret {secret} has no key {name!r} to rotate",
                        hint=f"its keys: {', '.join(names) or 'none'}; add one with --new {name}")
    key = SHOWN_KEY if ctx.dry_run else new_key()
    _add(ctx, secret, name, key)
    if ctx.dry_run:
        return 0
    print(key, flush=True)
    done = "Added" if args.new else "Gave a new value to"
    warn(f"{done} the key {name} in the Secret {secret} (printed above; it is not kept anywhere else here).")
    if vllm:
        warn(f"vLLM reads {API_KEY_DATA_KEY} once, when it starts: until `oc rollout restart deployment/{ctx.name}` it "
             "accepts the old value only")
    elif ctx.config.uses_runtime:
        warn("The server takes it up without a restart, once the kubelet has updated the mounted Secret (about a minute).")
    else:
        warn(f"Your server finds it in {ctx.blueprint.api_keys_mount} once the kubelet has updated the mounted Secret "
             "(about a minute).")
    warn(f"Remove a key with: {removal_command(ctx, secret, name)}")
    return 0
