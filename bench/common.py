"""Shared pieces of the benchmarks: the tiny model, prompts, starting and stopping servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_model(folder: Path) -> Path:
    from runtime.tiny import build_tiny_llama

    path = folder / "tiny-llama-4x256"
    if not (path / "config.json").exists():
        build_tiny_llama(path, layers=4, hidden=256, context=512)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on loopback, stopped (and waited for) on exit."""

    def __init__(self, command: list[str], ready_url: str, log: Path):
        self.command, self.ready_url, self.log = command, ready_url, log

    def __enter__(self) -> "Server":
        self.fh = self.log.open("w")
        self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=self.fh, stderr=subprocess.STDOUT)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command[:4]} exited; see {self.log}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.command[:4]} did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.fh.close()
