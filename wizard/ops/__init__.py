"""Operations on a deployment: what the generated scripts call (``python -m wizard VERB DIR``).

Every verb re-reads config.yaml, so that edits take effect. Only the verbs in
:data:`RENDERING_VERBS` re-render the deployment folder (they act on its files); every other
verb only reads it, except ``sync down``, which downloads results into it. Every verb takes
``--dry-run``, which prints the ``oc`` commands and touches nothing.
The cluster is reached only through ``oc`` (see :mod:`wizard.ops.oc`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from .base import Ctx

# Verbs that act on the rendered files on disk, so bring them up to date first: deploy applies
# manifests/ and builds from the Containerfile. delete removes what deploy applied, so it reads
# the files as they are; submit and sweep render each Job in memory.
RENDERING_VERBS = frozenset({"deploy"})


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
    ctx = Ctx.load(deployment, dry_run=bool(getattr(args, "dry_run", False)), render=verb in RENDERING_VERBS)
    if ctx.dry_run and verb != "run-local":
        ctx.oc.note(f"dry run of {verb} for {ctx.name}: nothing below was run")
    return verbs[verb](ctx, args)


__all__ = ["run", "Ctx", "RENDERING_VERBS"]
