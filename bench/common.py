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
# The servers the benchmarks start are open: a key in the shell (the runtime also reads the
# OpenAI client's variable) would lock them against the load generator.
for _key in ("RUNTIME_API_KEY", "OPENAI_API_KEY"):
    os.environ.pop(_key, None)


# Random-weight Llamas the benchmarks build (nothing is downloaded). ``tiny`` is the CPU model the
# targets are stated for; ``1b`` has TinyLlama's shape (22 layers, 2048 wide, grouped-query
# attention), saved in bfloat16, for GPUs.
SIZES = {
    "tiny": {"layers": 4, "hidden": 256, "context": 512},
    "1b": {"layers": 22, "hidden": 2048, "intermediate": 5632, "kv_heads": 4, "context": 2048, "dtype": "bfloat16"},
}


def tiny_model(folder: Path, size: str = "tiny") -> Path:
    from runtime.tiny import build_tiny_llama

    path = folder / f"random-llama-{size}"
    if not (path / "config.json").exists():
        build_tiny_llama(path, **SIZES[size])  # type: ignore[arg-type]
    return path


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def describe_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def metric(url: str, name: str) -> float | None:
    """One sample of a Prometheus metric from a server's /metrics (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


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
