"""Per-key rate limits of the included server: token buckets, a reservation per generation, and
the ``x-ratelimit-*`` headers (OpenAI's names).

Each key name (runtime/keys.py; ``anonymous`` for every caller of a server without keys) has a
bucket of requests and a bucket of tokens, each as deep as its per-minute limit and refilled at
a sixtieth of it per second: a key may spend a minute's worth at once, then at the steady rate.

* A request to a metered endpoint takes one request from its key's bucket, or is refused (429).
* A generation reserves the tokens it may generate (its ``max_tokens``, or what is left of the
  context without one; for several prompts, the sum) before it is queued, and gets back what it
  did not generate when it is over: answered, streamed to the end, failed, timed out or
  abandoned by its client (:class:`Metering` settles every request when its answer is over).
  A reservation larger than the whole bucket can never be served and is a 400; one larger than
  what is left now is a 429 whose ``Retry-After`` is when it will fit. A refused request costs
  its key nothing.

Limits are per process: a Deployment of N replicas admits up to N times them, as the Service
spreads callers over the pods. Everything here runs on the server's event loop (no locks).
The clock is injectable: the tests advance it instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import RequestError
from runtime.settings import RateLimit

Clock = Callable[[], float]
# Refills are sums of float products: a unit one part in a million short of whole counts as there.
SLACK = 1e-6


class TokenBucket:
    """``capacity`` units, refilled continuously at ``capacity`` per minute."""

    __slots__ = ("capacity", "rate", "level", "stamp")

    def __init__(self, per_minute: int, now: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # per second
        self.level = self.capacity
        self.stamp = now

    def _fill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` if it is there: 0.0; otherwise take nothing and return the seconds
        until it will be (``amount`` must fit in the bucket)."""
        self._fill(now)
        if self.level + SLACK >= amount:
            self.level = max(0.0, self.level - amount)
            return 0.0
        return (amount - self.level) / self.rate

    def give(self, amount: float, now: float) -> None:
        self._fill(now)
        self.level = min(self.capacity, self.level + amount)

    def remaining(self, now: float) -> int:
        self._fill(now)
        return int(self.level + SLACK)

    def reset_after(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        self._fill(now)
        return max(0.0, self.capacity - self.level - SLACK) / self.rate


def duration(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: ``0s``, ``250ms``, ``1.5s``, ``1m0s``."""
    if seconds <= 0:
        return "0s"
    ms = math.ceil(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{secs}" if minutes else secs


class RateLimiter:
    """The buckets of every key name seen, for one server."""

    def __init__(self, limits: RateLimit, *, clock: Clock = time.monotonic, metrics: Any = None):
        self.requests_per_minute = limits.requests_per_minute
        self.tokens_per_minute = limits.tokens_per_minute
        self.clock = clock
        self.metrics = metrics
        self._buckets: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}

    def buckets(self, key: str) -> tuple[TokenBucket | None, TokenBucket | None]:
        found = self._buckets.get(key)
        if found is None:
            now = self.clock()
            rpm, tpm = self.requests_per_minute, self.tokens_per_minute
            found = self._buckets[key] = (TokenBucket(rpm, now) if rpm else None, TokenBucket(tpm, now) if tpm else None)
        return found

    def quota(self, key: str) -> "Quota":
        """A request of ``key``'s share (it takes its request with :meth:`Quota.admit`)."""
        return Quota(self, key, *self.buckets(key))

    def refused(self, key: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.key_rate_limited.labels(key=key, limit=kind).inc()


class RateLimited(RequestError):
    """429 in OpenAI's shape (type ``requests`` or ``tokens``, code ``rate_limit_exceeded``)
    with ``Retry-After`` in whole seconds, rounded up."""

    def __init__(self, message: str, *, kind: str, retry_after: float):
        super().__init__(message, status=429, type=kind, code="rate_limit_exceeded",
                         headers={"Retry-After": str(_whole(retry_after))})


def _whole(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))


class Quota:
    """One request's share: the request it took, the tokens it reserved, and how to count what
    it generated (set once its generations are queued). :meth:`settle` gives back the unused
    tokens and counts the generated ones by key name, once."""

    __slots__ = ("limiter", "key", "requests", "tokens", "reserved", "counter", "settled")

    def __init__(self, limiter: RateLimiter, key: str, requests: TokenBucket | None, tokens: TokenBucket | None):
        self.limiter = limiter
        self.key = key
        self.requests = requests
        self.tokens = tokens
        self.reserved = 0
        self.counter: Callable[[], int] | None = None
        self.settled = False

    def admit(self) -> None:
        """Take this request from the key's requests bucket, or refuse it (429)."""
        if self.requests is None:
            return
        wait = self.requests.take(1, self.limiter.clock())
        if wait:
            self.limiter.refused(self.key, "requests")
            raise RateLimited(
                f"Rate limit reached for key {self.key!r}: {self.limiter.requests_per_minute} requests per minute. "
                f"Retry in {_whole(wait)} s.", kind="requests", retry_after=wait,
            )

    def reserve(self, tokens: int) -> None:
        """Reserve ``tokens`` generated tokens: a 400 when they exceed the key's whole minute,
        a 429 (and the request given back) when they exceed what is left now."""
        bucket = self.tokens
        if bucket is None or tokens <= 0:
            return
        limit = self.limiter.tokens_per_minute
        now = self.limiter.clock()
        if tokens > bucket.capacity:
            self._give_back_request(now)
            raise RequestError(
                f"This request may generate up to {tokens} tokens (its max_tokens, or the rest of the context without "
                f"one), more than the {limit} tokens per minute key {self.key!r} may use; set max_tokens to {limit} or less.",
                param="max_tokens", code="max_tokens_above_rate_limit",
            )
        wait = bucket.take(tokens, now)
        if wait:
            left = bucket.remaining(now)
            self._give_back_request(now)
            self.limiter.refused(self.key, "tokens")
            raise RateLimited(
                f"Rate limit reached for key {self.key!r}: {limit} generated tokens per minute; this request reserves "
                f"{tokens} (its max_tokens) and {left} are left. Retry in {_whole(wait)} s.",
                kind="tokens", retry_after=wait,
            )
        self.reserved = tokens

    def _give_back_request(self, now: float) -> None:
        if self.requests is not None:
            self.requests.give(1, now)

    def track(self, counter: Callable[[], int]) -> None:
        """How many tokens this request's generations have generated so far."""
        self.counter = counter

    def settle(self) -> int:
        """The request is over: give back what it reserved and did not generate; count what it
        generated. Idempotent; returns the tokens generated."""
        if self.settled:
            return 0
        self.settled = True
        used = self.counter() if self.counter is not None else 0
        if self.tokens is not None and self.reserved > used:
            self.tokens.give(self.reserved - used, self.limiter.clock())
        metrics = self.limiter.metrics
        if used and metrics is not None:
            metrics.key_generation_tokens.labels(key=self.key).inc(used)
        return used

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the limits that are set."""
        out: list[tuple[bytes, bytes]] = []
        now = self.limiter.clock()
        for kind, bucket, limit in (("requests", self.requests, self.limiter.requests_per_minute),
                                    ("tokens", self.tokens, self.limiter.tokens_per_minute)):
            if bucket is None:
                continue
            out += [
                (b"x-ratelimit-limit-" + kind.encode(), str(limit).encode()),
                (b"x-ratelimit-remaining-" + kind.encode(), str(bucket.remaining(now)).encode()),
                (b"x-ratelimit-reset-" + kind.encode(), duration(bucket.reset_after(now)).encode()),
            ]
        return out


class Metering:
    """Pure ASGI middleware around the routes: adds the ``x-ratelimit-*`` headers to the answer
    of a request that took a quota (refusals included), and once the request is over (the app
    returned: answered, streamed to the end, failed or abandoned) settles its quota and counts
    it under its key's name. The routes put the key's name and the quota in the request's state
    (``request.state.key``, ``request.state.quota``)."""

    def __init__(self, app: ASGIApp, *, metrics: Any):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                quota = state.get("quota")
                extra = quota.headers() if quota is not None else None
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        finally:
            quota = state.get("quota")
            if quota is not None:
                quota.settle()
            key = state.get("key")
            if key is not None:
                self.metrics.key_requests.labels(key=key).inc()
