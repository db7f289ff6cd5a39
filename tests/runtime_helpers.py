"""Shared pieces of the runtime tests: tiny random models built once per session (locally
trained tokenizer, nothing downloaded) and a real server on loopback in a thread."""

from __future__ import annotations

import os
import shutil
import socket
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
_built: dict[str, Path] = {}


def tiny_llama_path(factory: pytest.TempPathFactory) -> Path:
    if "llama" not in _built:
        from runtime.tiny import build_tiny_llama

        _built["llama"] = build_tiny_llama(factory.mktemp("tiny-llama"), layers=2, hidden=64, context=512)
    return _built["llama"]


def tiny_encoder_path(factory: pytest.TempPathFactory) -> Path:
    if "encoder" not in _built:
        from runtime.tiny import build_tiny_encoder

        _built["encoder"] = build_tiny_encoder(factory.mktemp("tiny-bert"), layers=2, hidden=64)
    return _built["encoder"]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_path(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_encoder_path(tmp_path_factory)


def wait_until(predicate: Any, *, what: str, limit: float = 120.0, every: float = 0.05) -> None:
    """Poll ``predicate`` (a generous limit so that a stuck server fails instead of hanging)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(every)
    pytest.fail(f"gave up waiting for {what}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_server(**settings: Any) -> Iterator[str]:
    """Our app (the real engine) under uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    import uvicorn

    from runtime.server import create_app, uvicorn_config
    from runtime.settings import ServeSettings

    engine_factory = settings.pop("engine_factory", None)
    options = {"clock": settings.pop("clock")} if "clock" in settings else {}  # what the rate limits are timed by
    serve = ServeSettings(host="127.0.0.1", **settings)
    app = create_app(serve, engine_factory=engine_factory, **options) if engine_factory else create_app(serve, **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, serve, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(base + settings.get("ready_path", "/ready")), what="the server to be ready")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class FakeClock:
    """A monotonic clock the test moves (``advance``) instead of sleeping; callable like
    ``time.monotonic``."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_secret(folder: Path, keys: dict[str, str]) -> None:
    """Lay out ``keys`` as the kubelet writes a Secret volume, and update it the way it does: the
    files in a new hidden version folder, a ``..data_tmp`` link to it renamed over ``..data`` in
    one step, one visible link per key into ``..data``, then the old version removed."""
    folder.mkdir(exist_ok=True)
    version = folder / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.perf_counter_ns()}"
    version.mkdir()
    for name, key in keys.items():
        (version / name).write_text(key + ("\n" if name.endswith("-nl") else ""))  # oc create secret --from-file keeps a newline
    os.symlink(version.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    for name in keys:
        if not (folder / name).is_symlink():
            os.symlink(f"..data/{name}", folder / name)
    for entry in folder.iterdir():
        if entry.name.startswith(".."):
            if entry.name != "..data" and entry.name != version.name:
                shutil.rmtree(entry)
        elif entry.name not in keys:
            entry.unlink()
