"""The benchmark scripts that are quick enough to run in the test suite, with tiny settings: they
must run to the end and report what they measure (the figures themselves are for make bench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_decode_step_benchmark_compares_both_paths_on_the_same_tokens() -> None:
    r = subprocess.run(
        [sys.executable, "bench/bench_decode_step.py", "--batches", "1", "3", "--pairs", "1", "--tokens", "5", "--waves", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if "same tokens" in line]
    assert len(lines) == 2 and all("same tokens: yes" in line for line in lines)
