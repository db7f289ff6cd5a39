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


def test_rate_limit_benchmark_pairs_both_servers_and_times_the_limiter() -> None:
    r = subprocess.run(
        [sys.executable, "bench/bench_rate_limit.py", "--pairs", "2", "--requests", "4", "--concurrency", "2", "--max-tokens", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    pairs = [line for line in r.stdout.splitlines() if line.startswith("  pair ")]
    assert len(pairs) == 2 and all("CPU per token" in line for line in pairs)  # both servers answered every request
    assert "round 2: on started first" in r.stdout  # the second pair ran with the servers started the other way round
    assert "tokens/s on / off, median of 2 pairs" in r.stdout and "limiter work per request" in r.stdout
