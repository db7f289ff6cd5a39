"""``python -m runtime bench`` against our real server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.bench import format_report, percentiles, run_load
from runtime_helpers import run_cli, running_server, tiny_llama  # noqa: F401


@pytest.fixture(scope="module")
def url(tiny_llama: Path) -> Iterator[str]:
    with running_server(model=str(tiny_llama), served_model_name="tiny", max_batch_size=8) as u:
        yield u


def test_percentiles() -> None:
    p = percentiles([float(i) for i in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01) and p["mean"] == pytest.approx(50.5)
    assert percentiles([]) == {"mean": None, "p50": None, "p95": None, "p99": None}


def test_closed_loop_streaming_reports_every_latency(url: str) -> None:
    r = asyncio.run(run_load(url=url, model="tiny", num_requests=12, concurrency=4, request_rate=None, max_tokens=8, stream=True, ignore_eos=True))
    assert r["successful"] == 12 and r["errors"] == {} and r["output_tokens"] == 96
    assert r["output_tokens_per_s"] > 0 and r["request_throughput"] > 0
    for key in ("e2e_s", "ttft_s", "tpot_s", "itl_s"):
        assert r[key]["p50"] is not None and r[key]["p50"] <= r[key]["p99"]
    assert "TTFT" in format_report(r)


def test_poisson_arrivals_and_chat(url: str) -> None:
    r = asyncio.run(run_load(url=url, model="tiny", num_requests=6, concurrency=6, request_rate=50.0, max_tokens=4, stream=False, endpoint="chat"))
    assert r["successful"] == 6 and r["request_rate"] == 50.0 and "ttft_s" not in r


def test_errors_are_counted_by_status(url: str) -> None:
    r = asyncio.run(run_load(url=url, model="not-served", num_requests=3, concurrency=2, request_rate=None, max_tokens=4, stream=False))
    assert r["successful"] == 0 and r["errors"] == {"404": 3}


def test_command_line_json(url: str) -> None:
    r = run_cli("bench", "--url", url, "--model", "tiny", "--num-requests", "4", "--concurrency", "2", "--max-tokens", "4", "--stream", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["successful"] == 4 and result["ttft_s"]["p99"] is not None


def test_command_line_fails_in_one_line_when_nothing_answers() -> None:
    r = run_cli("bench", "--url", "http://127.0.0.1:9", "--model", "x", "--num-requests", "2", "--concurrency", "1")
    assert r.returncode == 2 and r.stderr.startswith("error: no request succeeded") and r.stderr.count("\n") == 1
