"""SIGTERM drains the included server (runtime/drain.py). Real server processes on loopback with
the tiny model; for the generations that must still be running when the signal comes, the same
command line with each decoding step slowed to a known pace (tests/slow_serve.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from runtime.engine_vllm import llm_kwargs, server_args
from runtime.settings import ServeSettings, load_deployment_config
from runtime_helpers import ROOT, free_port, tiny_llama_path, wait_until

MODEL = "tiny"
STEP = 0.02  # seconds per decoding step of the slowed server: 150 tokens take 3 s and more


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_path(tmp_path_factory)


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path):
        self.proc, self.base, self.log = proc, base, log

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def server(model: Path, tmp_path: Path, *flags: str, slow: float | None = STEP) -> Iterator[Server]:
    """The server as a process of its own (so that it can get a real SIGTERM), ready."""
    port = free_port()
    command = ([sys.executable, str(ROOT / "tests" / "slow_serve.py"), str(slow)] if slow is not None
               else [sys.executable, "-m", "runtime"])
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "serve", "--engine", "transformers", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
             "--served-model-name", MODEL, "--log-level", "info", *flags],
            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=out, stderr=subprocess.STDOUT,
        )
    s = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        def up() -> bool:
            assert proc.poll() is None, s.text()
            try:
                return httpx.get(s.base + "/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, what="the server process")
        yield s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def running(base: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=5).text.splitlines():
        if line.startswith("mlshift_running_requests "):
            return float(line.split()[1])
    return 0.0


def stream_in_thread(base: str, max_tokens: int, first: threading.Event) -> tuple[threading.Thread, dict[str, Any]]:
    """A streamed completion of exactly ``max_tokens`` tokens read in a thread; ``first`` is set
    at its first text."""
    out: dict[str, Any] = {"events": []}
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}

    def read() -> None:
        with httpx.stream("POST", base + "/v1/completions", json=body, timeout=120) as r:
            out["status"] = r.status_code
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                out["events"].append(data if data == "[DONE]" else json.loads(data))
                if data != "[DONE]" and out["events"][-1].get("choices"):
                    first.set()
        first.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, out


def post_in_thread(base: str, max_tokens: int) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    body = {"model": MODEL, "prompt": "The quick brown fox", "max_tokens": max_tokens, "ignore_eos": True}

    def send() -> None:
        r = httpx.post(base + "/v1/completions", json=body, timeout=120)
        out["status"], out["body"] = r.status_code, r.json()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, out


def text_of(events: list[Any]) -> str:
    return "".join(e["choices"][0]["text"] for e in events if isinstance(e, dict) and e.get("choices"))


# --------------------------------------------------------------------------- the drain
def test_sigterm_lets_the_requests_in_flight_finish_and_refuses_new_ones(tiny: Path, tmp_path: Path) -> None:
    with server(tiny, tmp_path, "--drain-timeout", "60") as s:
        kept = httpx.Client(timeout=30)  # a connection kept alive from before the signal
        assert kept.get(s.base + "/v1/models").status_code == 200
        first = threading.Event()
        streaming, streamed = stream_in_thread(s.base, 150, first)
        plain, answered = post_in_thread(s.base, 120)
        assert first.wait(60), s.text()
        wait_until(lambda: running(s.base) == 2, what="both generations in the batch")

        s.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(s.base + "/ready", timeout=5).status_code == 503, what="readiness to say 503", limit=10)
        assert httpx.get(s.base + "/ready").json() == {"status": "draining"}
        assert httpx.get(s.base + "/health").status_code == 200  # liveness stays up: nothing restarts the container
        assert httpx.get(s.base + "/metrics").status_code == 200

        refused = httpx.post(s.base + "/v1/completions", json={"model": MODEL, "prompt": "late", "max_tokens": 4}, timeout=10)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
        assert refused.json()["error"] == {
            "message": "The server is shutting down and takes no new requests; retry (another replica will answer).",
            "type": "service_unavailable", "param": None, "code": "server_shutting_down"}
        again = kept.get(s.base + "/v1/models")  # the kept-alive connection: refused, then closed
        assert again.status_code == 503 and again.headers["connection"] == "close"
        assert s.proc.poll() is None, "the server stopped with requests in flight"

        streaming.join(60)
        plain.join(60)
        # The stream in flight went on to its end: every token, its usage, [DONE]; no error event.
        events = streamed["events"]
        assert streamed["status"] == 200 and events[-1] == "[DONE]"
        assert not any(isinstance(e, dict) and "error" in e for e in events)
        assert [e for e in events if isinstance(e, dict) and e.get("usage")][-1]["usage"]["completion_tokens"] == 150
        assert [e["choices"][0]["finish_reason"] for e in events if isinstance(e, dict) and e.get("choices")][-1] == "length"
        assert answered["status"] == 200 and answered["body"]["usage"]["completion_tokens"] == 120

        assert s.proc.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):  # gone: a new connection is refused
            httpx.get(s.base + "/health", timeout=5)
        log = s.text()
        assert "draining: 2 requests in flight, given up to 60 s to finish; new requests get 503" in log
        assert "2 finished, 0 cut, 2 new requests refused" in log
        kept.close()


def test_a_drain_timeout_shorter_than_a_generation_cuts_it_and_the_server_still_exits(tiny: Path, tmp_path: Path) -> None:
    with server(tiny, tmp_path, "--drain-timeout", "1") as s:
        first = threading.Event()
        streaming, streamed = stream_in_thread(s.base, 400, first)  # 8 s and more at this pace
        plain, answered = post_in_thread(s.base, 400)
        assert first.wait(60), s.text()
        wait_until(lambda: running(s.base) == 2, what="both generations in the batch")
        signalled = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=60) == 0
        took = time.monotonic() - signalled
        streaming.join(30)
        plain.join(30)

    # the drain's second, the cut, the stop: well within the grace period's margin (15 s after the drain)
    assert 1 <= took < 16, took
    # Each client learns that its request was cut, and that retrying it is right: a stream gets an
    # error event, then the end of the stream; a plain request a 503.
    events = streamed["events"]
    assert streamed["status"] == 200 and events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "server_shutting_down" and events[-2]["error"]["type"] == "service_unavailable"
    assert 0 < len(text_of(events))
    assert answered["status"] == 503 and answered["body"]["error"] == {
        "message": "The server is shutting down; this request was stopped before it finished. Retry it.",
        "type": "service_unavailable", "param": None, "code": "server_shutting_down"}
    assert "draining: 2 requests in flight, given up to 1 s to finish" in s.text()
    assert "0 finished, 2 cut, 0 new requests refused" in s.text()


def test_an_idle_server_stops_at_once_with_exit_code_0_and_reads_drain_timeout_from_config(tiny: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"inference": {"engine": "transformers", "model": str(tiny), "drain_timeout": 7}}))
    assert load_deployment_config(config).serve.drain_timeout == 7
    with server(tiny, tmp_path, "--config", str(config), slow=None) as s:  # python -m runtime serve, as in a pod
        signalled = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=60) == 0  # not killed by the signal uvicorn would raise again
        assert time.monotonic() - signalled < 10
    assert "draining: 0 requests in flight, given up to 7 s to finish" in s.text()
    assert "drained in 0.0 s: 0 finished, 0 cut, 0 new requests refused" in s.text()


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "--drain-timeout '-1': input should be greater than or equal to 0"),
    ("2.5", "--drain-timeout '2.5': input should be a valid integer"),
    ("3601", "--drain-timeout '3601': input should be less than or equal to 3600"),
])
def test_a_bad_drain_timeout_is_one_line_and_exit_2(value: str, message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "runtime", "serve", "--model", "m", "--drain-timeout", value],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


# --------------------------------------------------------------------------- vLLM
def test_vllm_gets_the_drain_timeout_as_its_shutdown_timeout() -> None:
    """vLLM (0.31, the pinned image) aborts the requests in flight on SIGTERM unless
    --shutdown-timeout gives them time; 0, its default, is left off the command line."""
    args = server_args(ServeSettings(engine="vllm", model="m"))
    assert args[args.index("--shutdown-timeout") + 1] == "30"
    assert server_args(ServeSettings(engine="vllm", model="m", drain_timeout=90))[-2:] == ["--shutdown-timeout", "90"]
    assert "--shutdown-timeout" not in server_args(ServeSettings(engine="vllm", model="m", drain_timeout=0))
    assert "shutdown_timeout" not in llm_kwargs(ServeSettings(engine="vllm", model="m"))  # the offline LLM has no server to stop
