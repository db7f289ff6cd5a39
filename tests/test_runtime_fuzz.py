"""Fuzzing the OpenAI request schemas against a running tiny-model server while a legitimate
stream is always in flight: no answer is a 5xx, and every legitimate request completes.

Bodies are built from the request models' own field names (so a new field is fuzzed too), with
values that are now plausible, now hostile: huge and negative integers, NaN and infinities, lone
surrogates and NUL characters, wrong types, nesting, unknown keys, and bytes that are not JSON.
``FUZZ_EXAMPLES`` sets the number of bodies (200 by default; the run is derandomised so that CI
is repeatable: set ``FUZZ_SEED`` to explore other bodies).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from runtime import protocol as p
from runtime_helpers import running_server, tiny_llama  # noqa: F401

MODEL = "tiny"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))

HOSTILE_TEXT = ["", "\ud800", "x \udfff y", "\x00", "tiny\n", "😀" * 3, "$(reboot)", "'\"", "a" * 5000, "tiny\ud800"]
EXTREME_INTS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**40]
EXTREME_FLOATS = [0.0, -0.0, 1e-300, 5e-324, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), 2.0000001, 1e-5]

texts = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT), st.builds(lambda a, b: a + b, st.text(max_size=8), st.sampled_from(HOSTILE_TEXT)))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EXTREME_INTS), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EXTREME_FLOATS), texts,
)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=3), max_leaves=12)
token_ids = st.lists(st.one_of(st.integers(0, 300), st.sampled_from(EXTREME_INTS)), min_size=0, max_size=20)

# Plausible values per field name; every field also gets ``anything`` now and then.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from([MODEL, MODEL, "gpt-4", ""]),
    "prompt": st.one_of(texts, st.lists(texts, max_size=3), token_ids, st.lists(token_ids, max_size=3)),
    "input": st.one_of(texts, st.lists(texts, max_size=3), token_ids),
    "max_tokens": st.integers(-2, 80), "max_completion_tokens": st.integers(-2, 80), "min_tokens": st.integers(-1, 20),
    "temperature": st.floats(-1, 3), "top_p": st.floats(-0.5, 1.5), "top_k": st.integers(-3, 400), "min_p": st.floats(-0.5, 1.5),
    "frequency_penalty": st.floats(-3, 3), "presence_penalty": st.floats(-3, 3), "repetition_penalty": st.floats(-1, 3),
    "seed": st.sampled_from(EXTREME_INTS), "n": st.integers(-1, 3), "best_of": st.integers(-1, 3),
    "stop": st.one_of(texts, st.lists(texts, max_size=6)),
    "logit_bias": st.dictionaries(st.one_of(st.integers(-5, 400).map(str), texts), st.floats(-150, 150), max_size=3),
    "stream": st.booleans(), "echo": st.booleans(), "ignore_eos": st.booleans(), "logprobs": st.one_of(st.booleans(), st.integers(-1, 5)),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans(), "bogus": anything}),
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant", "tool", "root"])},
            optional={"content": st.one_of(texts, st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": texts}), max_size=2)),
                      "name": texts, "tool_calls": anything},
        ),
        max_size=4,
    ),
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "xml"])}),
    "encoding_format": st.sampled_from(["float", "base64", "hex"]), "dimensions": st.integers(-1, 100),
}


short_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
# Values the server must serve (a 200), from one edge of the allowed range to the other.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "model": st.just(MODEL), "prompt": st.one_of(short_text, st.lists(st.integers(0, 400), min_size=1, max_size=20)),
    "max_tokens": st.integers(1, 40), "min_tokens": st.integers(0, 1), "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1, exclude_min=True), "top_k": st.integers(-1, 600), "min_p": st.floats(0, 1),
    "frequency_penalty": st.floats(-2, 2), "presence_penalty": st.floats(-2, 2), "repetition_penalty": st.floats(0, 2, exclude_min=True),
    "seed": st.integers(p.SEED_MIN, p.SEED_MAX), "stop": st.lists(short_text, max_size=4),
    "logit_bias": st.dictionaries(st.integers(0, 400).map(str), st.floats(-100, 100), max_size=3),
    "stream": st.booleans(), "ignore_eos": st.booleans(), "user": short_text,
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": short_text}), min_size=1, max_size=3),
    "input": st.one_of(short_text, st.lists(short_text, min_size=1, max_size=3)),
}


def body_for(model: type[p.BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    fields = list(model.model_fields)
    values = {name: st.one_of(PLAUSIBLE.get(name, anything), anything) if name in PLAUSIBLE else anything for name in fields}
    required = {name: values[name] for name, f in model.model_fields.items() if f.is_required()}
    optional = {name: values[name] for name in fields if name not in required}
    known = st.fixed_dictionaries(required, optional=optional)
    # Plausible values only: near the edges of what is allowed, so that many reach the engine.
    plausible = st.fixed_dictionaries(
        {name: PLAUSIBLE.get(name, anything) for name in required},
        optional={name: PLAUSIBLE[name] for name in optional if name in PLAUSIBLE},
    )
    valid = st.fixed_dictionaries(
        {name: VALID.get(name, anything) for name in required}, optional={name: VALID[name] for name in optional if name in VALID},
    )
    unknown = st.dictionaries(st.sampled_from(["top_logprobs", "guided_json", "tools", "bogus", "\ud800"]), anything, max_size=2)
    # Complete bodies, plausible or hostile; sometimes a required field goes missing or unknown ones come along.
    return st.one_of(
        valid, valid, plausible, known, st.builds(lambda a, b: {**a, **b}, known, unknown),
        st.dictionaries(st.sampled_from(fields), anything, max_size=4),
    )


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()  # NaN and Infinity as Python writes them; surrogates as \ud800


requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/completions"), body_for(p.CompletionRequest).map(encoded)),
    st.tuples(st.just("POST"), st.just("/v1/chat/completions"), body_for(p.ChatCompletionRequest).map(encoded)),
    st.tuples(st.just("POST"), st.just("/v1/embeddings"), body_for(p.EmbeddingRequest).map(encoded)),
    st.tuples(st.just("POST"), st.sampled_from(["/v1/completions", "/v1/chat/completions"]), st.binary(max_size=64)),
    st.tuples(st.just("GET"), texts.map(lambda t: "/v1/models/" + quote(t.encode("utf-8", "surrogatepass"), safe="")), st.just(b"")),
)


class Legitimate:
    """Streams completions one after another until stopped; records every outcome."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.outcomes: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        body = {"model": MODEL, "prompt": "a legitimate request", "max_tokens": 16, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": 0}
        while not self.stop.is_set():
            try:
                with httpx.stream("POST", self.url + "/v1/completions", json=body, timeout=120) as r:
                    events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
                ok = r.status_code == 200 and events and events[-1]["usage"]["completion_tokens"] == 16 and not any("error" in e for e in events)
                self.outcomes.append("ok" if ok else f"{r.status_code}: {events[-1:]}")
            except httpx.HTTPError as exc:
                self.outcomes.append(f"{type(exc).__name__}: {exc}")


@pytest.fixture(scope="module")
def fuzz_url(tiny_llama: Path) -> Iterator[str]:
    with running_server(model=str(tiny_llama), served_model_name=MODEL, max_model_len=64, max_batch_size=8, max_queue=16,
                        max_body_bytes=64 * 1024) as url:
        yield url


def test_fuzzed_requests_get_no_5xx_and_a_legitimate_stream_always_completes(fuzz_url: str) -> None:
    legit = Legitimate(fuzz_url)
    legit.thread.start()
    seen: dict[int, int] = {}
    client = httpx.Client(base_url=fuzz_url, timeout=60)

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=SEED == 0,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests)
    def one(request: tuple[str, str, bytes]) -> None:
        method, path, body = request
        r = client.request(method, path, content=body or None, headers={"content-type": "application/json"})
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (method, path, body[:300], r.status_code, r.text[:300])
        if r.status_code >= 400:
            error = r.json()["error"]  # OpenAI's shape, even for the worst input
            assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]

    try:
        one()
    finally:
        legit.stop.set()
        legit.thread.join(timeout=120)
        client.close()
    print(f"statuses {dict(sorted(seen.items()))}, legitimate streams {len(legit.outcomes)}")
    assert legit.outcomes and all(o == "ok" for o in legit.outcomes), legit.outcomes
    assert seen.get(200, 0) >= 1 and seen.get(400, 0) >= 1, seen  # both kinds were reached
    assert httpx.get(fuzz_url + "/health").status_code == 200
