"""API keys of the included server: a folder of named keys laid out as a mounted Secret, rotated
the way the kubelet updates one, both headers, constant-time matching, the key's name (never the
key) in metrics and logs."""

from __future__ import annotations

import hmac
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

import runtime.keys
from runtime.errors import UsageError
from runtime.keys import KeyRing
from runtime_helpers import ROOT, FakeClock, free_port, running_server, tiny_llama, wait_until, write_secret  # noqa: F401

MODEL = "tiny"
ALICE, BOB, CAROL = "sk-alice-7f3e9c2a51d04b6e", "sk-bob-0c4d8e1f9a2b7c35", "sk-carol-5b6a7d8e9f0a1b2c"


# --------------------------------------------------------------------------- the key ring alone
def test_a_secret_folder_gives_one_named_key_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    write_secret(folder, {"alice": ALICE, "bob-nl": BOB})
    (folder / "notes").mkdir()  # a folder is not a key
    (folder / ".hidden").write_text(CAROL)  # nor a hidden file
    (folder / "empty").write_text("\n")  # nor an empty one
    (folder / "big").write_text("x" * 5000)  # nor something far too long for a key
    ring = KeyRing(folder, clock=FakeClock())
    assert ring.closed and ring.names == ["alice", "bob-nl"]
    assert ring.match(ALICE) == "alice"
    assert ring.match(BOB) == "bob-nl"  # the file's trailing newline is not part of the key
    assert ring.match(CAROL) is None and ring.match("x" * 5000) is None and ring.match("") is None
    assert ring.match(None, "wrong", BOB) == "bob-nl"  # any of the presented values


def test_the_single_key_is_named_default_and_both_sources_count(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    write_secret(folder, {"alice": ALICE})
    ring = KeyRing(folder, single=CAROL, clock=FakeClock())
    assert ring.names == ["default", "alice"]
    assert ring.match(CAROL) == "default" and ring.match(ALICE) == "alice"
    assert KeyRing(single=CAROL).match(CAROL) == "default"
    assert not KeyRing().closed


def test_every_key_is_compared_whichever_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "keys"
    write_secret(folder, {"a": ALICE, "b": BOB, "c": CAROL})
    ring = KeyRing(folder, clock=FakeClock())
    calls: list[int] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a) + len(b))
        return compare(a, b)

    monkeypatch.setattr(runtime.keys.hmac, "compare_digest", counting)
    for key in (ALICE, CAROL, "nope"):
        calls.clear()
        ring.match(key)
        # three comparisons each time, of equal-length digests: neither which key matched nor the keys' lengths show
        assert calls == [64, 64, 64]


def test_an_empty_folder_is_closed_and_a_missing_one_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    ring = KeyRing(tmp_path / "empty", clock=FakeClock())
    assert ring.closed and ring.names == [] and ring.match("anything") is None
    with pytest.raises(UsageError, match="does not exist"):
        KeyRing(tmp_path / "missing")


def test_rotation_is_seen_at_the_next_look_a_second_later(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    write_secret(folder, {"alice": ALICE, "bob": BOB})
    clock = FakeClock()
    ring = KeyRing(folder, clock=clock)
    write_secret(folder, {"alice": CAROL, "dave": BOB})  # alice rotated, bob renamed
    assert ring.match(ALICE) == "alice"  # not looked at again within the second
    clock.advance(1.01)
    assert ring.match(ALICE) is None and ring.match(CAROL) == "alice" and ring.match(BOB) == "dave"
    assert ring.names == ["alice", "dave"]


def test_a_key_rewritten_in_place_is_seen_too(tmp_path: Path) -> None:
    """Not a Secret: a plain folder whose file is rewritten (same name, same folder mtime)."""
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "alice").write_text(ALICE)
    clock = FakeClock()
    ring = KeyRing(folder, clock=clock)
    (folder / "alice").write_text(CAROL + "-longer")
    clock.advance(2)
    assert ring.match(CAROL + "-longer") == "alice" and ring.match(ALICE) is None


def test_a_folder_that_cannot_be_read_keeps_the_last_keys_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "keys"
    write_secret(folder, {"alice": ALICE})
    clock = FakeClock()
    ring = KeyRing(folder, clock=clock)
    folder.rename(tmp_path / "away")
    with caplog.at_level(logging.INFO, logger="runtime.keys"):
        for _ in range(3):
            clock.advance(1.5)
            assert ring.match(ALICE) == "alice"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "keys read before stay in use" in errors[0].getMessage()
    (tmp_path / "away").rename(folder)
    write_secret(folder, {"bob": BOB})
    clock.advance(1.5)
    assert ring.match(ALICE) is None and ring.match(BOB) == "bob"
    assert ALICE not in caplog.text and BOB not in caplog.text


# --------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secret") / "api-keys"
    write_secret(folder, {"alice": ALICE, "bob": BOB})
    return folder


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def url(tiny_llama: Path, keys_dir: Path, clock: FakeClock) -> Iterator[str]:
    with running_server(model=str(tiny_llama), served_model_name=MODEL, api_keys_dir=str(keys_dir), clock=clock) as base:
        yield base


def complete(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2}, headers=headers, timeout=60)


def key_requests(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics").text
    return {s.labels["key"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "mlshift_key_requests_total"}


def test_both_headers_and_both_keys_of_the_folder(url: str) -> None:
    before = key_requests(url)
    assert complete(url, {"Authorization": f"Bearer {ALICE}"}).status_code == 200
    assert complete(url, {"authorization": f"bearer  {BOB}"}).status_code == 200  # scheme in any case, spaces around
    assert complete(url, {"X-API-Key": BOB}).status_code == 200
    assert httpx.get(url + "/v1/models", headers={"x-api-key": ALICE}).status_code == 200
    with openai.OpenAI(base_url=url + "/v1", api_key=ALICE, max_retries=0) as client:
        assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens >= 1
    after = key_requests(url)
    assert after["alice"] - before.get("alice", 0) == 3 and after["bob"] - before.get("bob", 0) == 2


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {ALICE}"},
    {"Authorization": f"Bearer {ALICE}x"}, {"Authorization": f"Bearer {ALICE[:-1]}"},
])
def test_a_wrong_or_missing_key_is_401_without_the_key_in_it(url: str, headers: dict[str, str]) -> None:
    r = complete(url, headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    assert ALICE[:12] not in r.text and "wrong" not in r.text
    assert httpx.get(url + "/v1/models", headers=headers).status_code == 401


def test_probes_and_metrics_stay_open(url: str) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(url + path).status_code == 200


def test_rotation_takes_effect_without_a_restart(url: str, keys_dir: Path, clock: FakeClock) -> None:
    write_secret(keys_dir, {"alice": CAROL, "bob": BOB})
    clock.advance(1.5)
    assert complete(url, {"Authorization": f"Bearer {ALICE}"}).status_code == 401  # the old key of alice
    assert complete(url, {"Authorization": f"Bearer {CAROL}"}).status_code == 200
    assert complete(url, {"X-API-Key": BOB}).status_code == 200
    write_secret(keys_dir, {"alice": ALICE, "bob": BOB})  # back, for the other tests
    clock.advance(1.5)
    assert complete(url, {"Authorization": f"Bearer {ALICE}"}).status_code == 200


def test_metrics_name_keys_and_never_show_them(url: str) -> None:
    text = httpx.get(url + "/metrics").text
    assert 'mlshift_key_requests_total{key="alice"}' in text and 'mlshift_key_generation_tokens_total{key="alice"}' in text
    for key in (ALICE, BOB, CAROL):
        assert key not in text and key[3:12] not in text


# --------------------------------------------------------------------------- the command line, its environment and its log
def test_the_served_process_reads_the_folder_from_its_environment_and_logs_no_key(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "api-keys"
    write_secret(folder, {"alice": ALICE})
    port, log = free_port(), tmp_path / "server.log"
    env = {**os.environ, "RUNTIME_API_KEYS_DIR": str(folder), "RUNTIME_API_KEY": CAROL, "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "serve", "--engine", "transformers", "--model", str(tiny_llama), "--host", "127.0.0.1",
             "--port", str(port), "--served-model-name", MODEL, "--log-level", "debug"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(base + "/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, what="the server process")
        assert complete(base, {"Authorization": f"Bearer {ALICE}"}).status_code == 200
        assert complete(base, {"X-API-Key": CAROL}).status_code == 200  # RUNTIME_API_KEY, named default
        assert complete(base, {"Authorization": f"Bearer {BOB}"}).status_code == 401
        write_secret(folder, {"alice": ALICE, "bob": BOB})
        wait_until(lambda: complete(base, {"Authorization": f"Bearer {BOB}"}).status_code == 200, what="the new key", limit=10)
        folder.rename(tmp_path / "away")  # unreadable now: the keys read last stay
        # The folder is looked at when requests come, at most once a second; each of these gets through.
        wait_until(lambda: complete(base, {"Authorization": f"Bearer {BOB}"}).status_code == 200
                   and "cannot read the API keys" in log.read_text(), what="the read error in the log", limit=10)
        (tmp_path / "away").rename(folder)
        metrics = httpx.get(base + "/metrics").text
        assert 'key="alice"' in metrics and 'key="bob"' in metrics and 'key="default"' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text()
    assert "API keys from" in text and "alice" in text  # names are logged
    assert "POST /v1/completions" in text  # the debug log has every request
    for key in (ALICE, BOB, CAROL):
        assert key not in text and key not in metrics and key[3:12] not in text


def test_a_missing_keys_folder_is_one_line_and_exit_2(tiny_llama: Path, tmp_path: Path) -> None:
    from runtime_helpers import run_cli

    r = run_cli("serve", "--model", str(tiny_llama), "--api-keys-dir", str(tmp_path / "nowhere"), "--port", str(free_port()))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: API keys folder {tmp_path / 'nowhere'} does not exist or is not a folder"


def test_the_keys_folder_variable_an_empty_flag_and_vllm_without_a_key(tiny_llama: Path, tmp_path: Path) -> None:
    from runtime.cli import build_parser, serve_settings
    from runtime.settings import RuntimeConfig
    from runtime_helpers import run_cli

    folder = tmp_path / "keys"
    args = build_parser().parse_args(["serve", "--model", "m"])
    environ = {"RUNTIME_API_KEYS_DIR": str(folder)}
    assert serve_settings(args, RuntimeConfig(), environ, model_env=True).api_keys_dir == str(folder)
    flag = build_parser().parse_args(["serve", "--model", "m", "--api-keys-dir", "/elsewhere"])
    assert serve_settings(flag, RuntimeConfig(), environ, model_env=True).api_keys_dir == "/elsewhere"  # the flag wins

    # An empty folder name would leave the server open: one line, as vLLM given a folder and no key.
    r = run_cli("serve", "--model", str(tiny_llama), "--api-keys-dir", "", env={"RUNTIME_API_KEYS_DIR": str(folder)})
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --api-keys-dir ''"), r.stderr
    env = {"RUNTIME_API_KEYS_DIR": str(folder), "RUNTIME_API_KEY": "", "OPENAI_API_KEY": ""}
    r = run_cli("serve", "--engine", "vllm", "--model", str(tiny_llama), env=env)
    assert r.returncode == 2 and "vLLM's server takes one API key" in r.stderr.strip().splitlines()[-1], r.stderr
