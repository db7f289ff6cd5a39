"""Operations against a cluster (filled in by the operations work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UserError


def run(verb: str, deployment: Path, args: argparse.Namespace) -> int:
    raise UserError(f"{verb}: not available in this version")
