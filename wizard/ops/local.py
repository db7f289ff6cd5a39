"""run-local: the same application or server on this machine, with the deployment's config."""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import UserError
from ..loader import dump_config
from ..paths import SOURCE_ROOT
from ..render import SCHEMA_FILE
from .base import Operation


def local_argv(ctx: Operation, args, config_path: str) -> tuple[list[str], Path]:
    """(the command, its working directory) for running the application here, with the
    config.yaml at ``config_path``."""
    app, blueprint = ctx.config.application, ctx.blueprint
    extra = list(args.arguments or [])
    user_args = extra if extra else blueprint.user_argv
    workspace = ctx.directory / "workspace"
    if not app.enabled:
        raise UserError("application.enabled is false: there is nothing to run")
    if app.type == "model_server":
        cmd = [sys.executable, "-m", "runtime", "serve", "--config", config_path, "--host", args.host]
        if args.port:
            cmd += ["--port", str(args.port)]
        return cmd + user_args, ctx.directory
    if app.type == "batch_inference":
        return [sys.executable, "-m", "runtime", "batch", "--config", config_path, *user_args], ctx.directory
    if app.type == "custom_command":
        return shlex.split(app.source.command or "") + user_args, workspace
    # Where the pod runs it, in workspace/ here: the wizard copies a single file into workspace/
    # and a folder's contents flat into it, so the entry point is relative to workspace/.
    in_pod = blueprint.entry_file or posixpath.join(blueprint.working_dir, "main.py")
    inside = in_pod.startswith(blueprint.working_dir.rstrip("/") + "/")
    entry = posixpath.relpath(in_pod, blueprint.working_dir) if inside else in_pod
    local_entry = workspace / entry
    if not local_entry.is_file() and not args.dry_run:
        hint = (f"copy what is in {app.source.path} into workspace/, as the wizard does" if app.type == "directory" and app.source.path
                else "put your code in the deployment's workspace/ folder")
        raise UserError(f"{ctx.rel(local_entry)} does not exist", hint=hint)
    python = args.python or "python3"
    if blueprint.launcher == "torchrun":
        return ["torchrun", "--nproc-per-node", str(max(1, blueprint.gpus)), str(local_entry), *user_args], workspace
    return [python, str(local_entry), *user_args], workspace


def run_local(ctx: Operation, args) -> int:
    if args.dry_run:
        cmd, cwd = local_argv(ctx, args, str(ctx.directory / "config.yaml"))
        print(f"cd {shlex.quote(str(cwd))} && " + shlex.join(cmd))
        ctx.say("(config.yaml is passed as a temporary copy with its derived values filled in, as the pod reads it)")
        return 0
    # The pod reads config.yaml resolved (the ConfigMap): so does the local run, from a copy that
    # lives as long as the run. The deployment folder is only read.
    with tempfile.TemporaryDirectory(prefix="mlshift-run-local-") as tmp:
        resolved = Path(tmp) / "config.yaml"
        resolved.write_text(dump_config(ctx.config, schema_ref=SCHEMA_FILE), encoding="utf-8")
        cmd, cwd = local_argv(ctx, args, str(resolved))
        env = dict(os.environ)
        env.update({"MLSHIFT_APP": ctx.name, "MLSHIFT_CONFIG": str(resolved), "PYTHONUNBUFFERED": "1"})
        if ctx.config.inference.enabled:
            env.setdefault("PORT", str(args.port or ctx.config.inference.port))
        if cmd[0] == sys.executable:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
            raise UserError(f"{cmd[0]} is not installed on this machine")
        if not cwd.is_dir():  # run-local only reads the deployment folder: it creates nothing in it
            raise UserError(f"{ctx.rel(cwd)}/ does not exist", hint="create it (python -m wizard render re-creates workspace/)")
        ctx.say("Running here: " + shlex.join(cmd))
        try:
            return subprocess.run(cmd, cwd=cwd, env=env).returncode
        except KeyboardInterrupt:
            return 130
