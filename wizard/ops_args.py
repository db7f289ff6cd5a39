"""Arguments of the operations verbs (what the generated scripts pass through)."""

from __future__ import annotations

import argparse


def add_operation_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the oc commands instead of running them")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
