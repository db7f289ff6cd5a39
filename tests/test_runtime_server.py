"""The transformers engine's server, driven over loopback with the official openai client."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime_helpers import ROOT, free_port, running_server, tiny_encoder, tiny_llama, wait_until  # noqa: F401

MODEL = "tiny"


@pytest.fixture(scope="module")
def llm_url(tiny_llama: Path) -> Iterator[str]:
    with running_server(model=str(tiny_llama), served_model_name=MODEL, max_batch_size=8, max_body_bytes=64 * 1024) as url:
        yield url


@pytest.fixture(scope="module")
def client(llm_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def embed_url(tiny_encoder: Path) -> Iterator[str]:
    with running_server(model=str(tiny_encoder), served_model_name="tiny-embed") as url:
        yield url


def metrics(url: str) -> dict[str, list]:
    text = httpx.get(url + "/metrics").text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def sample(families: dict[str, list], name: str, **labels: str) -> float:
    return sum(
        s.value for samples in families.values() for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# --------------------------------------------------------------------------- probes and models
def test_health_ready_and_models(llm_url: str, client: openai.OpenAI) -> None:
    assert httpx.get(llm_url + "/health").json() == {"status": "ok"}
    assert httpx.get(llm_url + "/ready").status_code == 200
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")


def test_openapi_docs_are_served(llm_url: str) -> None:
    spec = httpx.get(llm_url + "/openapi.json").json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models"} <= set(spec["paths"])
    assert httpx.get(llm_url + "/docs").status_code == 200


# --------------------------------------------------------------------------- completions and chat
def test_completion_returns_text_and_usage(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="Hello world", max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.model == MODEL
    assert isinstance(r.choices[0].text, str) and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8


def test_greedy_results_do_not_depend_on_batching(client: openai.OpenAI, llm_url: str) -> None:
    prompts = [f"Prompt number {i}: " + "the quick brown fox " * (i % 4 + 1) for i in range(10)]
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}).choices[0].text for p in prompts]

    async def together() -> list[str]:
        async with openai.AsyncOpenAI(base_url=llm_url + "/v1", api_key="unused", max_retries=0) as ac:
            rs = await asyncio.gather(*(ac.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}) for p in prompts))
        return [r.choices[0].text for r in rs]

    assert asyncio.run(together()) == alone
    assert sample(metrics(llm_url), "mlshift_batch_size_sum") > sample(metrics(llm_url), "mlshift_batch_size_count")  # some batches > 1


def test_list_prompt_gives_one_choice_per_prompt(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=["one", "two two", "three"], max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 12


def test_token_id_prompt_is_accepted(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=3, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 3


def test_chat_completion(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        max_tokens=6, temperature=0, extra_body={"ignore_eos": True},
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and isinstance(r.choices[0].message.content, str)
    assert r.usage.completion_tokens == 6


def test_sampling_with_a_seed_is_reproducible(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=1.0, top_p=0.9, seed=7, extra_body={"ignore_eos": True})
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, prompt="The quick brown fox", max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), full
    r = client.completions.create(stop=[stop], **kw)
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(stop=[stop], stream=True, **kw))
    assert streamed == r.choices[0].text


# --------------------------------------------------------------------------- streaming
def test_streamed_completion_matches_the_plain_one(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, prompt="Hello world", max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    plain = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10


def test_streamed_chat_has_role_content_reason_and_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_raw_stream_is_server_sent_events_ending_with_done(llm_url: str) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", llm_url + "/v1/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    json.loads(events[0].removeprefix("data: "))


# --------------------------------------------------------------------------- embeddings
def test_embeddings_from_an_encoder(embed_url: str) -> None:
    c = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    r = c.embeddings.create(model="tiny-embed", input=["hello world", "a much longer sentence about batch inference"])
    assert [d.index for d in r.data] == [0, 1]
    for d in r.data:
        assert len(d.embedding) == 64 and math.isclose(math.sqrt(sum(x * x for x in d.embedding)), 1.0, rel_tol=1e-4)
    assert r.usage.prompt_tokens > 0
    raw = httpx.post(embed_url + "/v1/embeddings", json={"model": "tiny-embed", "input": "hello world", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<64f", base64.b64decode(raw["data"][0]["embedding"]))
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(decoded, r.data[0].embedding))


def test_generation_on_an_encoder_and_embeddings_on_a_decoder_are_400(embed_url: str, client: openai.OpenAI) -> None:
    c = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="tiny-embed", prompt="hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="hi")


# --------------------------------------------------------------------------- impossible and malformed requests
@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": MODEL, "prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": 100000}, "max_tokens"),
        ({"model": MODEL, "prompt": "word " * 600, "max_tokens": 1}, "prompt"),
        ({"model": MODEL, "prompt": "hi", "temperature": 5}, "temperature"),
        ({"model": MODEL, "prompt": "hi", "n": 2}, "n"),
        ({"model": MODEL, "prompt": [999999]}, "prompt"),
        ({"model": MODEL, "prompt": ""}, "prompt"),
        ({"model": MODEL}, "prompt"),
        ({"prompt": "hi"}, "model"),
    ],
)
def test_impossible_completion_requests_are_400(llm_url: str, body: dict, param: str) -> None:
    r = httpx.post(llm_url + "/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_prompt_longer_than_context_says_so(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="word " * 600, max_tokens=1)
    assert "maximum context length is 512" in str(info.value)


def test_unknown_model_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=1)
    assert info.value.body["code"] == "model_not_found"


def test_malformed_json_and_wrong_types_are_400(llm_url: str) -> None:
    r = httpx.post(llm_url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(llm_url + "/v1/chat/completions", json={"model": MODEL, "messages": "hello"})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages")
    r = httpx.post(llm_url + "/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert r.status_code == 400


def test_oversize_body_is_413(llm_url: str) -> None:
    r = httpx.post(llm_url + "/v1/completions", json={"model": MODEL, "prompt": "x" * 100_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    r = httpx.post(llm_url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_path_is_404_in_openai_shape(llm_url: str) -> None:
    r = httpx.get(llm_url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


# --------------------------------------------------------------------------- metrics
def test_metrics_parse_and_count(llm_url: str, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="count me", max_tokens=3, temperature=0, extra_body={"ignore_eos": True})
    httpx.post(llm_url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 0})
    m = metrics(llm_url)
    assert sample(m, "mlshift_requests_total", endpoint="/v1/completions", status="200") >= 1
    assert sample(m, "mlshift_requests_total", endpoint="/v1/completions", status="400") >= 1
    assert sample(m, "mlshift_request_latency_seconds_count", endpoint="/v1/completions") >= 2
    assert sample(m, "mlshift_time_to_first_token_seconds_count") >= 1
    assert sample(m, "mlshift_generation_tokens_total") >= 3 and sample(m, "mlshift_prompt_tokens_total") >= 1
    assert sample(m, "mlshift_batch_size_count") >= 1
    assert sample(m, "mlshift_max_batch_size") == 8
    assert "mlshift_queue_depth" in m and "mlshift_running_requests" in m
    assert sample(m, "mlshift_model_ready") == 1


# --------------------------------------------------------------------------- overload, timeouts, disconnects
def test_overload_burst_gets_429_with_retry_after_and_no_5xx(tiny_llama: Path) -> None:
    with running_server(model=str(tiny_llama), served_model_name=MODEL, max_batch_size=2, max_queue=2, max_wait_ms=0) as url:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as ac:
                body = {"model": MODEL, "prompt": "load", "max_tokens": 32, "ignore_eos": True}
                return await asyncio.gather(*(ac.post(url + "/v1/completions", json=body) for _ in range(24)))

        responses = asyncio.run(burst())
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429}, statuses
        # The first max_queue arrivals always find room; how many more do depends on timing.
        assert statuses.count(429) >= 1 and statuses.count(200) >= 2
        for r in responses:
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["type"] == "rate_limit_error"
        assert sample(metrics(url), "mlshift_rejected_requests_total") == statuses.count(429)
        # the openai client backs off on 429 and gets through
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        assert c.completions.create(model=MODEL, prompt="after", max_tokens=2).usage.completion_tokens >= 1


def test_request_timeout_is_408(tiny_llama: Path) -> None:
    with running_server(model=str(tiny_llama), served_model_name=MODEL, request_timeout=0.001) as url:
        r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "slow", "max_tokens": 400, "ignore_eos": True}, timeout=60)
        assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout"
        assert sample(metrics(url), "mlshift_timed_out_requests_total") == 1


def test_client_disconnect_frees_its_slot(llm_url: str) -> None:
    before = sample(metrics(llm_url), "mlshift_cancelled_requests_total")
    body = {"model": MODEL, "prompt": "go on", "max_tokens": 480, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", llm_url + "/v1/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # one token seen; now hang up
    wait_until(lambda: sample(metrics(llm_url), "mlshift_cancelled_requests_total") > before, what="the slot to be freed")
    wait_until(lambda: sample(metrics(llm_url), "mlshift_running_requests") == 0, what="the batch to empty")


# --------------------------------------------------------------------------- API key and the command line
def test_api_key_from_environment_guards_the_api_not_the_probes(tiny_llama: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "RUNTIME_API_KEY": "s3cret", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "serve", "--engine", "transformers", "--model", str(tiny_llama), "--host", "127.0.0.1",
         "--port", str(port), "--served-model-name", MODEL, "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(base + "/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, what="the server process")
        assert httpx.get(base + "/health").status_code == 200
        assert httpx.get(base + "/metrics").status_code == 200
        with pytest.raises(openai.AuthenticationError) as info:
            openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
        assert info.value.body["code"] == "invalid_api_key"
        assert httpx.get(base + "/v1/models").status_code == 401  # no key at all
        assert httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": "hi"}, headers={"Authorization": "Basic s3cret"}).status_code == 401
        good = openai.OpenAI(base_url=base + "/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM)  # a graceful stop (uvicorn re-raises the signal)


def test_no_api_key_means_open_api(client: openai.OpenAI) -> None:
    assert client.models.list().data
