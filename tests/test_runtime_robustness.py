"""One caller's bad request hurts no one else: every class of bad input is a 400 naming the
field, a fault in one sequence fails that request alone, heavy input never stalls the event loop,
and slow clients are cut off. Real servers on loopback; faults are injected into the real engine."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from runtime.engine_base import Sequence
from runtime.engine_transformers import TransformersBatch, TransformersEngine
from runtime.settings import ServeSettings
from runtime_helpers import running_server, tiny_encoder, tiny_llama, wait_until  # noqa: F401

MODEL = "tiny"
POISON = [7, 7, 7]  # a prompt (token ids) starting with these is the one a fault hits


class Faults(TransformersEngine):
    """The real engine with faults a test switches on."""

    def __init__(self, settings: ServeSettings):
        super().__init__(settings)
        self.sample_fault_at: int | None = None  # sampling raises for POISON once it holds this many tokens
        self.forward_fault = False  # a step with POISON in the batch raises, and so does prefilling POISON alone
        self.text_gate = threading.Event()  # tokenising and chat templates wait for it
        self.text_gate.set()
        self.text_calls = 0

    @property  # type: ignore[override]
    def eos_token_ids(self) -> frozenset[int]:
        """Read by the device loop itself after each step: raising here is a bug in the loop."""
        if getattr(self, "loop_bug", False):
            raise RuntimeError("injected bug in the device loop")
        return self._eos

    @eos_token_ids.setter
    def eos_token_ids(self, value: frozenset[int]) -> None:
        self._eos = value

    def sample_row(self, logits: torch.Tensor, seq: Sequence) -> int:
        if self.sample_fault_at is not None and _poisoned(seq) and len(seq.output_ids) == self.sample_fault_at:
            raise RuntimeError("injected sampling fault")
        return super().sample_row(logits, seq)

    def new_batch(self) -> TransformersBatch:
        return FaultyBatch(self)

    def encode(self, text: str) -> list[int]:
        self.text_calls += 1
        self.text_gate.wait(60)
        return super().encode(text)

    def chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        self.text_calls += 1
        self.text_gate.wait(60)
        return super().chat_ids(messages)


class FaultyBatch(TransformersBatch):
    engine: Faults

    def add(self, seqs: list[Sequence]) -> list[int]:
        if self.engine.forward_fault and len(seqs) == 1 and _poisoned(seqs[0]):
            raise RuntimeError("injected prefill fault")
        return super().add(seqs)

    def step(self) -> list[int]:
        if self.engine.forward_fault and any(_poisoned(s) for s in self.seqs):
            raise RuntimeError("injected step fault")
        return super().step()


def _poisoned(seq: Sequence) -> bool:
    return seq.prompt_ids[:3] == POISON


@pytest.fixture(scope="module")
def engines() -> list[Faults]:
    return []


@pytest.fixture(scope="module")
def faulty_url(tiny_llama: Path, engines: list[Faults]) -> Iterator[str]:
    """Batches of 4 that wait up to 10 s (the most the setting allows) to fill: requests sent one
    after another join one batch."""
    def factory(settings: ServeSettings) -> Faults:
        engines.append(Faults(settings))
        return engines[-1]

    with running_server(model=str(tiny_llama), served_model_name=MODEL, max_batch_size=4, max_wait_ms=10_000, max_queue=8,
                        engine_factory=factory) as url:
        yield url


@pytest.fixture
def faults(faulty_url: str, engines: list[Faults]) -> Iterator[Faults]:
    engine = engines[-1]
    yield engine
    engine.sample_fault_at, engine.forward_fault = None, False
    engine.text_gate.set()


@pytest.fixture(scope="module")
def llm_url(tiny_llama: Path) -> Iterator[str]:
    with running_server(model=str(tiny_llama), served_model_name=MODEL, max_batch_size=8) as url:
        yield url


@pytest.fixture(scope="module")
def embed_url(tiny_encoder: Path) -> Iterator[str]:
    with running_server(model=str(tiny_encoder), served_model_name=MODEL) as url:
        yield url


def post_raw(url: str, body: str | bytes, timeout: float = 60) -> httpx.Response:
    """POST a body as given (``json.dumps`` escapes a lone surrogate as ``\\ud800``, as a hostile client would)."""
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=timeout)


def gauge(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# --------------------------------------------------------------------------- 1. sampling parameters
COMPLETION = {"model": MODEL, "prompt": "hello there", "max_tokens": 4}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


@pytest.mark.parametrize("field, value", [
    ("seed", 2**64), ("seed", -(2**63) - 1), ("seed", 10**30), ("seed", 1.5),
    ("temperature", -0.01), ("temperature", 2.01), ("temperature", "NaN"), ("temperature", "Infinity"),
    ("top_p", 0), ("top_p", 1.01), ("top_p", "NaN"),
    ("frequency_penalty", 2.5), ("presence_penalty", -2.5), ("frequency_penalty", "-Infinity"),
    ("repetition_penalty", 0), ("repetition_penalty", 2.5), ("top_k", -2), ("min_p", 1.5), ("min_p", -0.1),
    ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", 10**30), ("min_tokens", -1), ("min_tokens", 5),
    ("stop", ["a", "b", "c", "d", "e"]), ("stop", "x" * 300), ("stop", [1]),
    ("logit_bias", {str(i): 1 for i in range(301)}), ("logit_bias", {"hello": 1}), ("logit_bias", {"5": 101}), ("logit_bias", {"99999999": 1}), ("logit_bias", {"5": "NaN"}),
    ("n", 2), ("n", 0), ("best_of", 3), ("echo", True), ("logprobs", 2), ("suffix", "end"),
    ("guided_json", {}), ("stop_token_ids", [2]), ("response_format", {"type": "json_object"}),
])
def test_every_sampling_parameter_out_of_range_or_unknown_is_a_400_naming_it(llm_url: str, field: str, value: Any) -> None:
    body = json.dumps({**COMPLETION, field: value})
    body = body.replace('"NaN"', "NaN").replace('"Infinity"', "Infinity").replace('"-Infinity"', "-Infinity")
    r = post_raw(llm_url + "/v1/completions", body)
    assert r.status_code == 400, (field, value, r.text)
    error = r.json()["error"]
    assert (error["param"] or "").split(".")[0] == field, error
    assert "\n" not in error["message"]


def test_a_misspelt_parameter_is_refused_with_the_nearest_name(llm_url: str) -> None:
    r = httpx.post(llm_url + "/v1/completions", json={**COMPLETION, "temprature": 0.5})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "temprature" and error["code"] == "unsupported_parameter"
    assert "did you mean temperature?" in error["message"]
    r = httpx.post(llm_url + "/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "hi", "contnet": "x"}]})
    assert r.json()["error"]["param"] == "messages.0.contnet" and "did you mean content?" in r.json()["error"]["message"]


@pytest.mark.parametrize("field, value", [
    ("max_completion_tokens", 0), ("top_logprobs", 5), ("logprobs", True), ("tools", [{"type": "function"}]),
    ("tool_choice", "required"), ("response_format", {"type": "json_schema"}), ("seed", 2**64), ("functions", []),
    ("temperature", 3), ("top_k", -5),
])
def test_chat_parameters_out_of_range_or_unknown_are_400_naming_them(llm_url: str, field: str, value: Any) -> None:
    r = httpx.post(llm_url + "/v1/chat/completions", json={**CHAT, field: value})
    assert r.status_code == 400, (field, r.text)
    assert (r.json()["error"]["param"] or "").split(".")[0] == field


def test_the_extremes_that_are_allowed_are_served_side_by_side(llm_url: str) -> None:
    """Every allowed extreme at once, in one batch with a plain greedy request: all answer 200."""
    extremes = [
        {"seed": 2**64 - 1, "temperature": 1}, {"seed": -(2**63), "temperature": 1}, {"temperature": 1e-300},
        {"temperature": 2, "top_p": 1e-300}, {"temperature": 2, "top_k": 1}, {"temperature": 1, "top_k": 10**9},
        {"temperature": 1, "min_p": 1.0}, {"repetition_penalty": 2.0}, {"repetition_penalty": 5e-324, "temperature": 1},
        {"frequency_penalty": 2, "presence_penalty": -2}, {"logit_bias": {"5": 100, "6": -100}}, {"stop": ["", "x" * 256]},
        {"min_tokens": 4, "ignore_eos": False}, {"temperature": 0}, {"user": "a", "metadata": {"k": "v"}, "store": False},
    ]

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as ac:
            return await asyncio.gather(*(ac.post(llm_url + "/v1/completions", json={**COMPLETION, **e}) for e in extremes))

    for extra, r in zip(extremes, asyncio.run(all_at_once())):
        assert r.status_code == 200, (extra, r.text)
        assert 1 <= r.json()["usage"]["completion_tokens"] <= 4


def test_honoured_parameters_change_the_output_as_documented(llm_url: str) -> None:
    greedy = httpx.post(llm_url + "/v1/completions", json={**COMPLETION, "temperature": 0, "ignore_eos": True}).json()
    top1 = httpx.post(llm_url + "/v1/completions", json={**COMPLETION, "temperature": 1.5, "top_k": 1, "ignore_eos": True}).json()
    assert top1["choices"][0]["text"] == greedy["choices"][0]["text"]  # top_k 1 is the argmax
    # A bias of +100 on the end-of-sequence token ends at once, unless min_tokens bars it.
    models = httpx.get(llm_url + "/v1/models").json()
    assert models["data"][0]["id"] == MODEL
    eos = {"2": 100}  # the tiny tokenizer's </s>
    first = httpx.post(llm_url + "/v1/completions", json={**COMPLETION, "max_tokens": 8, "logit_bias": eos}).json()
    assert first["usage"]["completion_tokens"] == 1 and first["choices"][0]["finish_reason"] == "stop"
    held = httpx.post(llm_url + "/v1/completions", json={**COMPLETION, "max_tokens": 8, "logit_bias": eos, "min_tokens": 3}).json()
    assert held["usage"]["completion_tokens"] == 4 and held["choices"][0]["finish_reason"] == "stop"


def _in_order(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send ``bodies`` so that they reach the queue in this order (each waits for the one
    before to be queued), then wait for every answer. Streams are read to the end."""
    def send(body: dict[str, Any]) -> httpx.Response:
        if body.get("stream"):
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
                r.read()
                return r
        return httpx.post(url + "/v1/completions", json=body, timeout=120)

    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = []
        for i, body in enumerate(bodies):
            futures.append(pool.submit(send, body))
            wait_until(lambda: gauge(url, "mlshift_queue_depth") >= i + 1 or futures[0].done(), what=f"request {i} to queue")
        return [f.result() for f in futures]


def _text(r: httpx.Response) -> str:
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert all("error" not in e for e in events), events
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        return "".join(e["choices"][0]["text"] for e in events)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_a_fault_in_one_sequences_sampling_fails_that_request_alone(faulty_url: str, faults: Faults) -> None:
    """Four requests join one batch (they are queued in a fixed order and the batch waits to
    be full). Sampling raises for the sampled POISON request when it holds 5 tokens. Compared:
    the texts of the three greedy requests (one streamed) with those of the same four requests
    run again without the fault, the POISON one asking for 6 tokens, so that it leaves the batch
    after the same step: the batches are the same at every step, so the texts must be equal."""
    greedy = {"max_tokens": 24, "temperature": 0, "ignore_eos": True}
    bodies = [
        {"model": MODEL, "prompt": "first of three", **greedy},
        {"model": MODEL, "prompt": POISON + [9, 10, 11], "max_tokens": 24, "temperature": 1.0, "seed": 3, "ignore_eos": True},
        {"model": MODEL, "prompt": "second, a stream", "stream": True, **greedy},
        {"model": MODEL, "prompt": "and the third one, longer than the others", **greedy},
    ]
    faults.sample_fault_at = 5
    faulty = _in_order(faulty_url, bodies)
    assert faulty[1].status_code == 500, faulty[1].text
    error = faulty[1].json()["error"]
    assert error["code"] == "sequence_failed" and "RuntimeError: injected sampling fault" in error["message"]

    faults.sample_fault_at = None
    clean = _in_order(faulty_url, [bodies[0], {**bodies[1], "max_tokens": 6}, bodies[2], bodies[3]])
    assert clean[1].status_code == 200 and clean[1].json()["usage"]["completion_tokens"] == 6
    for i in (0, 2, 3):
        assert _text(faulty[i]) == _text(clean[i]) and _text(faulty[i])
    buckets = httpx.get(faulty_url + "/metrics").text
    assert 'mlshift_batch_size_bucket{le="4.0"}' in buckets
    assert httpx.get(faulty_url + "/health").status_code == 200


def test_a_forward_pass_that_fails_is_rebuilt_without_the_request_that_fails_alone(faulty_url: str, faults: Faults) -> None:
    """A decoding step raises while the POISON request is in the batch: the batch is rebuilt one
    request at a time; POISON fails alone (500), the three others finish all their tokens."""
    faults.forward_fault = True
    body = {"max_tokens": 20, "ignore_eos": True}
    out = _in_order(faulty_url, [
        {"model": MODEL, "prompt": "alpha", **body}, {"model": MODEL, "prompt": "beta gamma", "stream": True, **body},
        {"model": MODEL, "prompt": POISON + [12], **body}, {"model": MODEL, "prompt": "delta", **body},
    ])
    assert out[2].status_code == 500 and out[2].json()["error"]["code"] == "sequence_failed"
    assert "injected prefill fault" in out[2].json()["error"]["message"]
    for i in (0, 3):
        assert out[i].status_code == 200 and out[i].json()["usage"]["completion_tokens"] == 20
    assert _text(out[1])
    faults.forward_fault = False
    after = httpx.post(faulty_url + "/v1/completions", json={"model": MODEL, "prompt": POISON + [12], "max_tokens": 3}, timeout=60)
    assert after.status_code == 200


def test_a_device_loop_that_dies_fails_the_probes_and_its_requests_instead_of_hanging(tiny_llama: Path) -> None:
    """A bug that stops the device loop itself: the request in the batch gets a 503 (not a hang
    until its timeout), and /health and /ready answer 503 with the reason, so that the liveness
    probe restarts the pod."""
    made: list[Faults] = []

    def factory(settings: ServeSettings) -> Faults:
        made.append(Faults(settings))
        return made[-1]

    with running_server(model=str(tiny_llama), served_model_name=MODEL, engine_factory=factory) as url:
        assert httpx.get(url + "/health").status_code == 200
        made[0].loop_bug = True
        r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 4}, timeout=30)
        assert r.status_code == 503 and "device worker stopped" in r.json()["error"]["message"]
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["reason"] == "RuntimeError: injected bug in the device loop"
        assert httpx.get(url + "/ready").status_code == 503


# --------------------------------------------------------------------------- 2. text that is not valid Unicode
SURROGATE = "x \ud800 y"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"model": MODEL, "prompt": SURROGATE}, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": ["fine", SURROGATE]}, "prompt"),
    ("/v1/completions", {"model": SURROGATE, "prompt": "hi"}, "model"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "stop": SURROGATE}, "stop"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "stop": ["ok", SURROGATE]}, "stop"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "user": SURROGATE}, "user"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "suffix": SURROGATE}, "suffix"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "metadata": {SURROGATE: "v"}}, "metadata"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "logit_bias": {"5\udc00": 1}}, "logit_bias"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": SURROGATE}]}, "messages.0.content"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]}, "messages.0.content"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "ok", "name": SURROGATE}]}, "messages.0.name"),
    ("/v1/chat/completions", {"model": SURROGATE, "messages": [{"role": "user", "content": "ok"}]}, "model"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "ok"}], "stop": [SURROGATE]}, "stop"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "ok"}], "user": SURROGATE}, "user"),
])
def test_a_lone_surrogate_in_any_text_field_is_a_400_naming_it(llm_url: str, path: str, body: dict, param: str) -> None:
    r = post_raw(llm_url + path, json.dumps(body))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"].startswith(param) and "Unicode" in error["message"], error


@pytest.mark.parametrize("body, param", [
    ({"model": MODEL, "input": SURROGATE}, "input"), ({"model": MODEL, "input": ["a", SURROGATE]}, "input"),
    ({"model": SURROGATE, "input": "a"}, "model"), ({"model": MODEL, "input": "a", "user": SURROGATE}, "user"),
])
def test_a_lone_surrogate_in_an_embedding_request_is_a_400_naming_it(embed_url: str, body: dict, param: str) -> None:
    r = post_raw(embed_url + "/v1/embeddings", json.dumps(body))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(param), r.text


def test_bytes_that_are_not_utf8_are_a_400(llm_url: str) -> None:
    for raw in (b'{"model": "tiny", "prompt": "\xff\xfe"}', b'{"model": "tiny", "prompt": "\xed\xa0\x80"}'):
        r = post_raw(llm_url + "/v1/completions", raw)
        assert r.status_code == 400, r.text


# --------------------------------------------------------------------------- 3. heavy work off the event loop
def test_probes_answer_while_a_prompt_is_tokenised_or_a_chat_templated(faulty_url: str, faults: Faults) -> None:
    """Tokenising is held (the gate is shut) while a completion and a chat wait in it: /health,
    /ready and /metrics still answer, and both requests finish once it opens."""
    faults.text_gate.clear()
    with ThreadPoolExecutor(2) as pool:
        completion = pool.submit(httpx.post, faulty_url + "/v1/completions", json={"model": MODEL, "prompt": "held", "max_tokens": 2}, timeout=60)
        chat = pool.submit(httpx.post, faulty_url + "/v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=60)
        wait_until(lambda: faults.text_calls >= 1, what="tokenising to start")
        for path in ("/health", "/ready", "/metrics"):
            assert httpx.get(faulty_url + path, timeout=5).status_code == 200, path
        assert not completion.done() or not chat.done()
        faults.text_gate.set()
        assert completion.result().status_code == 200
        assert chat.result().status_code == 200


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "w" * (512 * 32 + 1)}, "prompt"),
    ("/v1/completions", {"prompt": ["short", "w" * (512 * 32 + 1)]}, "prompt"),
    ("/v1/completions", {"prompt": ["p"] * 9}, "prompt"),
    ("/v1/completions", {"prompt": [5] * 600}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "m"}] * 513}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "w" * 9000}] * 2}, "messages"),
])
def test_input_beyond_what_the_context_can_hold_is_refused_before_any_tokenising(
    faulty_url: str, faults: Faults, path: str, body: dict, param: str
) -> None:
    """The gate is shut: a request that reached the tokenizer would hang, so each answer shows
    the bound was applied first (characters: 32 a token of context; messages: one a token;
    prompts in one request: the queue's length, 8 here)."""
    faults.text_gate.clear()
    calls = faults.text_calls
    r = httpx.post(faulty_url + path, json={"model": MODEL, **body}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert faults.text_calls == calls


# --------------------------------------------------------------------------- 4. slow clients
@pytest.fixture(scope="module")
def strict_url(tiny_llama: Path) -> Iterator[str]:
    with running_server(model=str(tiny_llama), served_model_name=MODEL, header_timeout=1.0, body_timeout=1.0) as url:
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, the connection left open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_headers_that_never_finish_get_408_and_the_connection_closed(strict_url: str) -> None:
    sock = _connect(strict_url)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n")
    start, answer = time.monotonic(), b""
    while time.monotonic() - start < 8:  # a byte every 0.25 s does not extend the 1 s deadline
        if select.select([sock], [], [], 0.25)[0]:
            answer = _read_until_closed(sock)
            break
        sock.sendall(b"x")
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert time.monotonic() - start < 4


def test_a_connection_that_sends_nothing_is_closed(strict_url: str) -> None:
    assert _read_until_closed(_connect(strict_url)) == b""


def test_a_body_that_stops_arriving_closes_the_connection_and_the_server_goes_on(strict_url: str) -> None:
    sock = _connect(strict_url)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"model\"")
    assert _read_until_closed(sock) == b""
    assert httpx.post(strict_url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2}).status_code == 200


def test_a_slow_but_steady_body_and_a_kept_alive_connection_are_served(strict_url: str) -> None:
    body = json.dumps({"model": MODEL, "prompt": "steady", "max_tokens": 2}).encode()
    sock = _connect(strict_url)
    head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    sock.sendall(head)
    for i in range(0, len(body), 16):  # each piece within the body timeout, the whole past it
        time.sleep(0.4)
        sock.sendall(body[i : i + 16])
    first = _read_response(sock)
    assert first.startswith(b"HTTP/1.1 200") and b'"completion_tokens":2' in first, first
    # the same connection, kept alive: a second request whose headers stop half-way gets 408
    sock.sendall(b"GET /health HTTP/1.1\r\nhost")
    assert _read_until_closed(sock).startswith(b"HTTP/1.1 408")
