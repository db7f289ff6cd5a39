"""Per-key rate limits: the token bucket and a request's quota with an injected clock, then the
real server on loopback (its clock injected too: refills come from advancing it, never from
sleeping): bursts and 429s with OpenAI's headers, refills, reservations given back, keys that do
not share, and the per-key metrics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.errors import RequestError
from runtime.metrics import Metrics
from runtime.ratelimit import RateLimited, RateLimiter, TokenBucket, duration
from runtime.settings import RateLimit, ServeSettings
from runtime_helpers import FakeClock, running_server, tiny_llama, wait_until, write_secret  # noqa: F401

MODEL = "tiny"
RPM, TPM = 4, 300  # the server's limits below; its model's context is 512 tokens
KEYS = {name: f"sk-{name}-4e1d9a7c2b" for name in ("burst", "other", "tokens", "fits", "stop", "hangup", "stream", "chat")}


# --------------------------------------------------------------------------- the bucket and the quota alone
def test_a_bucket_gives_its_minute_at_once_then_refills_at_a_sixtieth_per_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(120, clock())
    assert bucket.take(120, clock()) == 0.0 and bucket.remaining(clock()) == 0
    assert bucket.take(1, clock()) == pytest.approx(0.5)  # 2 a second
    clock.advance(0.5)
    assert bucket.take(1, clock()) == 0.0
    assert bucket.take(10, clock()) == pytest.approx(5.0)
    assert bucket.reset_after(clock()) == pytest.approx(60.0)
    clock.advance(3600)  # never more than the minute's worth
    assert bucket.remaining(clock()) == 120 and bucket.reset_after(clock()) == 0
    bucket.give(50, clock())
    assert bucket.remaining(clock()) == 120


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-1, "0s"), (0.0004, "1ms"), (0.25, "250ms"), (1, "1s"), (1.5, "1.5s"), (12.0001, "12.001s"), (60, "1m0s"), (75.25, "1m15.25s"),
])
def test_reset_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def limiter(clock: FakeClock, rpm: int | None = 6, tpm: int | None = 600) -> RateLimiter:
    return RateLimiter(RateLimit(requests_per_minute=rpm, tokens_per_minute=tpm), clock=clock, metrics=Metrics())


def test_a_quota_reserves_tokens_and_gives_back_what_was_not_generated() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    quota = limits.quota("k")
    quota.admit()
    quota.reserve(500)
    generated = [0]
    quota.track(lambda: generated[0])
    assert dict(quota.headers())[b"x-ratelimit-remaining-tokens"] == b"100"
    generated[0] = 120
    assert quota.settle() == 120 and quota.settle() == 0  # once
    assert dict(quota.headers())[b"x-ratelimit-remaining-tokens"] == b"480"
    assert dict(quota.headers())[b"x-ratelimit-remaining-requests"] == b"5"
    assert dict(quota.headers())[b"x-ratelimit-reset-tokens"] == b"12s"  # 120 tokens at 10 a second


def test_a_refused_reservation_costs_nothing_and_says_when_it_will_fit() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    first = limits.quota("k")
    first.admit()
    first.reserve(550)
    second = limits.quota("k")
    second.admit()
    with pytest.raises(RateLimited) as info:
        second.reserve(100)
    err = info.value
    assert err.status == 429 and err.type == "tokens" and err.code == "rate_limit_exceeded"
    assert err.headers == {"Retry-After": "5"}  # 50 missing at 10 a second
    assert "'k'" in err.message and "600 generated tokens per minute" in err.message
    assert dict(second.headers())[b"x-ratelimit-remaining-requests"] == b"5"  # the refused request was given back
    with pytest.raises(RequestError) as never:
        second.reserve(601)
    assert never.value.status == 400 and never.value.param == "max_tokens" and "set max_tokens to 600 or less" in never.value.message
    second.settle()  # nothing reserved, nothing tracked: nothing changes
    assert dict(second.headers())[b"x-ratelimit-remaining-tokens"] == b"50"


def test_requests_run_out_per_key_and_retry_after_is_rounded_up() -> None:
    clock = FakeClock()
    limits = limiter(clock, rpm=7, tpm=None)
    for _ in range(7):
        limits.quota("a").admit()
    with pytest.raises(RateLimited) as info:
        limits.quota("a").admit()
    assert info.value.headers["Retry-After"] == str(math.ceil(60 / 7)) and info.value.type == "requests"
    limits.quota("b").admit()  # another key has its own bucket
    assert all(not name.startswith(b"x-ratelimit-limit-tokens") for name, _ in limits.quota("a").headers())
    clock.advance(60 / 7)
    limits.quota("a").admit()


def test_no_limits_means_no_headers_and_no_refusals() -> None:
    limits = limiter(FakeClock(), rpm=None, tpm=None)
    for _ in range(1000):
        quota = limits.quota("k")
        quota.admit()
        quota.reserve(10**9)
        assert quota.headers() == []


# --------------------------------------------------------------------------- the settings
def test_the_limits_are_config_keys_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli import build_parser, main, serve_settings
    from runtime.settings import load_deployment_config

    config = tmp_path / "config.yaml"
    config.write_text("inference:\n  model: m\n  rate_limit:\n    requests_per_minute: 60\n    tokens_per_minute: 10000\n")
    base = load_deployment_config(config)
    assert base.serve.rate_limit == RateLimit(requests_per_minute=60, tokens_per_minute=10000)
    args = build_parser().parse_args(["serve", "--config", str(config), "--rate-limit-tokens-per-minute", "500"])
    assert serve_settings(args, base).rate_limit == RateLimit(requests_per_minute=60, tokens_per_minute=500)  # the flag wins, the file's other limit stays
    config.write_text("inference:\n  model: m\n  rate_limit:\n")
    assert not load_deployment_config(config).serve.rate_limit.limited
    assert main(["serve", "--model", "m", "--rate-limit-requests-per-minute", "0"]) == 2
    assert "greater than or equal to 1" in capsys.readouterr().err  # refused for the limit, not for the model
    config.write_text("inference:\n  model: m\n  rate_limit:\n    requests_per_minute: -1\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "greater than or equal to 1" in capsys.readouterr().err


def test_a_bad_limit_is_one_line_naming_the_flag_or_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli import main

    assert main(["serve", "--model", "m", "--rate-limit-tokens-per-minute", "many"]) == 2
    assert capsys.readouterr().err.startswith("error: --rate-limit-tokens-per-minute 'many': input should be a valid integer")
    config = tmp_path / "config.yaml"
    config.write_text("inference:\n  model: m\n  rate_limit:\n    rpm: 60\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"error: {config}: inference.rate_limit.rpm 60: extra inputs are not permitted\n"


def test_the_wizard_inherits_the_key_and_refuses_it_where_nothing_enforces_it() -> None:
    from wizard.errors import ConfigError
    from wizard.loader import validate

    served = {"application": {"name": "demo", "type": "model_server"}, "resources": {"gpus": 0},
              "inference": {"enabled": True, "engine": "transformers", "model": "m", "rate_limit": {"tokens_per_minute": 1000}}}
    assert validate(served, source="config.yaml").inference.rate_limit.tokens_per_minute == 1000
    served["inference"]["engine"] = "vllm"
    served["resources"]["gpus"] = 1
    with pytest.raises(ConfigError, match="vLLM's server has no rate limits"):
        validate(served, source="config.yaml")


def test_the_engine_settings_carry_the_limits_to_the_server() -> None:
    s = ServeSettings(model="m", rate_limit={"requests_per_minute": 5})
    assert s.rate_limit.requests_per_minute == 5 and s.rate_limit.limited
    assert not ServeSettings(model="m").rate_limit.limited


# --------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def url(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory, clock: FakeClock) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("secret") / "api-keys"
    write_secret(folder, KEYS)
    with running_server(model=str(tiny_llama), served_model_name=MODEL, api_keys_dir=str(folder), clock=clock,
                        rate_limit={"requests_per_minute": RPM, "tokens_per_minute": TPM}) as base:
        yield base


def post(url: str, key: str, path: str = "/v1/completions", **body: object) -> httpx.Response:
    payload = {"model": MODEL, "prompt": "Tell me a story", "max_tokens": 2, "ignore_eos": True, **body}
    if path == "/v1/chat/completions":
        payload["messages"] = [{"role": "user", "content": str(payload.pop("prompt"))}]
    return httpx.post(url + path, json=payload, headers={"Authorization": f"Bearer {KEYS[key]}"}, timeout=120)


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_burst_then_429_with_openai_headers_then_a_refill(url: str, clock: FakeClock) -> None:
    seen = []
    for _ in range(RPM):
        r = post(url, "burst")
        assert r.status_code == 200
        seen.append(r.headers["x-ratelimit-remaining-requests"])
        assert r.headers["x-ratelimit-limit-requests"] == str(RPM) and r.headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert seen == ["3", "2", "1", "0"]
    refused = post(url, "burst")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded" and "'burst'" in error["message"]
    assert refused.headers["retry-after"] == "15"  # one request at 4 a minute
    assert refused.headers["x-ratelimit-remaining-requests"] == "0" and refused.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert refused.headers["x-ratelimit-remaining-tokens"] == str(TPM - 2 * RPM)
    assert post(url, "other").status_code == 200  # another key is not held back
    assert metric(url, "mlshift_key_rate_limited_requests_total", key="burst", limit="requests") == 1
    assert metric(url, "mlshift_key_rate_limited_requests_total", key="other") == 0
    clock.advance(15)
    again = post(url, "burst")
    assert again.status_code == 200 and again.headers["x-ratelimit-remaining-requests"] == "0"
    assert post(url, "burst").status_code == 429  # one request came back in 15 s, and it was used


def test_the_openai_client_sees_a_rate_limit_error_and_the_chat_endpoint_is_metered(url: str, clock: FakeClock) -> None:
    """(The client would wait out Retry-After by itself; here the test's clock moves instead.)"""
    for _ in range(RPM):
        assert post(url, "chat", path="/v1/chat/completions").status_code == 200
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["chat"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert info.value.response.headers["retry-after"] == "15"
    clock.advance(15)
    r = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.headers["x-ratelimit-remaining-requests"] == "0" and r.parse().usage.completion_tokens >= 1


def test_tokens_are_reserved_up_front_and_a_reservation_that_does_not_fit_waits(url: str, clock: FakeClock) -> None:
    first = post(url, "tokens", max_tokens=250)
    assert first.status_code == 200 and first.json()["usage"]["completion_tokens"] == 250
    assert first.headers["x-ratelimit-remaining-tokens"] == "50"
    refused = post(url, "tokens", path="/v1/chat/completions", max_tokens=100)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert refused.headers["retry-after"] == "10"  # 50 missing at 5 a second
    assert refused.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)  # the refused one cost nothing
    assert metric(url, "mlshift_key_rate_limited_requests_total", key="tokens", limit="tokens") == 1
    clock.advance(10)
    ok = post(url, "tokens", path="/v1/chat/completions", max_tokens=100)
    assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_request_that_can_never_fit_is_400(url: str) -> None:
    too_many = post(url, "fits", max_tokens=TPM + 1)
    assert too_many.status_code == 400
    error = too_many.json()["error"]
    assert error["param"] == "max_tokens" and error["code"] == "max_tokens_above_rate_limit"
    assert f"set max_tokens to {TPM} or less" in error["message"]
    # a chat without max_tokens may fill the context (512 tokens): more than the minute (completions default to 16)
    absent = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                        headers={"X-API-Key": KEYS["fits"]})
    assert absent.status_code == 400 and "without one" in absent.json()["error"]["message"]
    assert absent.headers["x-ratelimit-remaining-requests"] == str(RPM)  # refused: nothing counted


def test_a_generation_that_stops_early_gives_its_tokens_back(url: str, tiny_llama: Path) -> None:
    # The end of text made certain after five tokens (min_tokens holds it back until then): an
    # early end that does not hang on what a random model happens to write.
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_llama).eos_token_id
    r = post(url, "stop", max_tokens=280, min_tokens=5, logit_bias={str(eos): 100}, ignore_eos=False)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop", r.json()
    used = r.json()["usage"]["completion_tokens"]
    assert 5 <= used < 12, r.json()
    # settled before the answer went: 300 - what it generated (a token more may have been
    # generated between the end and the sequence leaving the batch)
    assert TPM - used - 1 <= int(r.headers["x-ratelimit-remaining-tokens"]) <= TPM - used
    assert post(url, "stop", max_tokens=TPM - used - 1).status_code == 200  # without the refund, 20 were left


def test_a_client_that_hangs_up_gets_its_unused_tokens_back(url: str) -> None:
    body = {"model": MODEL, "prompt": "go on", "max_tokens": 280, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers={"X-API-Key": KEYS["hangup"]}, timeout=60) as r:
        assert r.headers["x-ratelimit-remaining-tokens"] == "20"  # reserved when the stream began
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break
    wait_until(lambda: metric(url, "mlshift_key_generation_tokens_total", key="hangup") > 0, what="the quota to be settled")
    generated = metric(url, "mlshift_key_generation_tokens_total", key="hangup")
    assert generated < 280
    assert post(url, "hangup", max_tokens=250).status_code == 200  # without the refund, 20 were left


def test_a_streamed_answer_carries_the_headers_and_is_counted_when_it_ends(url: str) -> None:
    body = {"model": MODEL, "prompt": "stream me", "max_tokens": 20, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers={"X-API-Key": KEYS["stream"]}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == str(TPM - 20)
        assert r.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    wait_until(lambda: metric(url, "mlshift_key_generation_tokens_total", key="stream") == 20, what="the stream's tokens counted")
    assert post(url, "stream", max_tokens=TPM - 20).status_code == 200


def test_metrics_are_by_key_name_and_never_show_a_key(url: str) -> None:
    post(url, "other")
    text = httpx.get(url + "/metrics").text
    assert metric(url, "mlshift_key_requests_total", key="other") >= 2
    assert metric(url, "mlshift_key_generation_tokens_total", key="other") >= 4
    for key in KEYS.values():
        assert key not in text


def test_without_keys_every_caller_shares_one_anonymous_bucket(tiny_llama: Path) -> None:
    clock = FakeClock()
    with running_server(model=str(tiny_llama), served_model_name=MODEL, clock=clock, rate_limit={"requests_per_minute": 2}) as base:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
        assert httpx.post(base + "/v1/completions", json=body).status_code == 200
        assert httpx.post(base + "/v1/completions", json=body, headers={"Authorization": "Bearer anything"}).status_code == 200
        refused = httpx.post(base + "/v1/completions", json=body)
        assert refused.status_code == 429 and "'anonymous'" in refused.json()["error"]["message"]
        assert "x-ratelimit-limit-tokens" not in refused.headers  # only the limits that are set
        assert httpx.get(base + "/v1/models").status_code == 200  # listing the model is not metered (but counted)
        assert metric(base, "mlshift_key_requests_total", key="anonymous") == 4
