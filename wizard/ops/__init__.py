"""Operations on a deployment: what the generated scripts call (``python -m wizard VERB DIR``).

Every verb re-reads config.yaml and re-renders the deployment first, so that edits take
effect; every verb takes ``--dry-run``, which prints the ``oc`` commands and touches nothing.
The cluster is reached only through ``oc`` (see :mod:`wizard.ops.oc`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from .base import Ctx


def _verbs() -> dict[str, Callable[[Ctx, argparse.Namespace], int]]:
    from . import deploy, jobs, local, pods

    return {
        "deploy": deploy.deploy,
        "delete": deploy.delete,
        "status": deploy.status,
        "logs": jobs.logs,
        "submit": jobs.submit,
        "watch": jobs.watch,
        "jobs": jobs.jobs,
        "sweep": jobs.sweep,
        "compare": jobs.compare,
        "run-app": pods.run_app,
        "exec": pods.exec_,
        "port-forward": pods.port_forward,
        "test-inference": pods.test_inference,
        "bench": pods.bench,
        "jupyter": pods.jupyter,
        "vscode": pods.vscode,
        "sync": pods.sync,
        "run-local": local.run_local,
    }


def run(verb: str, deployment: Path, args: argparse.Namespace) -> int:
    verbs = _verbs()
    if verb not in verbs:
        from ..errors import UserError

        raise UserError(f"unknown operation {verb!r}")
    ctx = Ctx.load(deployment, dry_run=bool(getattr(args, "dry_run", False)))
    if ctx.dry_run and verb != "run-local":
        ctx.oc.note(f"dry run of {verb} for {ctx.name}: nothing below was run")
    return verbs[verb](ctx, args)


__all__ = ["run", "Ctx"]
