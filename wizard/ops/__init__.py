"""Operations on a deployment: what the generated scripts call (``python -m wizard VERB DIR``).

The verbs are declared in :mod:`wizard.verbs`. Every verb re-reads config.yaml, so that edits
take effect. Only a verb declared with ``renders`` re-renders the deployment folder (it acts on
its files); every other verb only reads it, except ``sync down``, which downloads results into
it, and ``submit``/``sweep``, which record the workspace snapshot they uploaded in
``.mlshift/snapshots.json``. Every verb takes ``--dry-run``, which prints the ``oc`` commands and touches nothing.
The cluster is reached only through ``oc`` (see :mod:`wizard.ops.oc`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..verbs import BY_NAME
from .base import Operation


def run(name: str, deployment: Path, args: argparse.Namespace) -> int:
    verb = BY_NAME.get(name)
    if verb is None:
        raise UserError(f"unknown operation {name!r}")
    ctx = Operation.load(deployment, dry_run=bool(getattr(args, "dry_run", False)), render=verb.renders)
    if ctx.dry_run and name != "run-local":
        ctx.oc.note(f"dry run of {name} for {ctx.name}: nothing below was run")
    return verb.load()(ctx, args)


__all__ = ["run", "Operation"]
