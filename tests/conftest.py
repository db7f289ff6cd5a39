"""Shared helpers: run the real command line, render real deployments into tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = ROOT / "docs" / "examples"

# A key in the developer's shell would lock the servers the tests start (the runtime reads
# RUNTIME_API_KEY, then the OpenAI client's OPENAI_API_KEY); tests that want a key set it.
for _key in ("RUNTIME_API_KEY", "OPENAI_API_KEY"):
    os.environ.pop(_key, None)
# Nor may a model named in the shell replace the one a test's server is given (runtime serve reads it).
os.environ.pop("RUNTIME_MODEL", None)


def run_wizard(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m wizard ARGS` as a user runs it: a real process, stdin not a terminal."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "wizard", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, input=input if input is not None else "", timeout=120)


@pytest.fixture
def deployments(tmp_path: Path) -> Path:
    d = tmp_path / "deployments"
    d.mkdir()
    return d
