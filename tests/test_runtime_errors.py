"""The answers the server's middleware gives before the application sees a request (the drain's
refusal, the body limit's 413): one raw ASGI response each, rendered by runtime/errors.py's
send_error from the error they are, byte for byte what a client gets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from runtime.drain import Drainer, DrainGuard
from runtime.errors import RequestError, ShuttingDown, error_body, send_error
from runtime.metrics import Metrics
from runtime.server import Guard

REFUSAL_BODY = (b'{"error": {"message": "The server is shutting down and takes no new requests; retry (another replica '
                b'will answer).", "type": "service_unavailable", "param": null, "code": "server_shutting_down"}}')
TOO_LARGE_BODY = (b'{"error": {"message": "The request body is larger than 1024 bytes.", "type": "invalid_request_error", '
                  b'"param": null, "code": "request_too_large"}}')


class App:
    """The application behind the middleware: answers 200 and remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})


def call(middleware: Any, path: str, *, headers: list[tuple[bytes, bytes]] = (), chunks: list[bytes] = (b"",)) -> list[dict]:
    """One HTTP request through ``middleware``; the ASGI messages it sent back, in order."""
    sent: list[dict] = []
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_a_request_while_draining_gets_the_refusal_and_the_connection_closes() -> None:
    app = App()
    drainer = Drainer(60, exempt={"/health", "/ready"})
    guard = DrainGuard(app, drainer=drainer)
    assert call(guard, "/v1/completions")[0]["status"] == 200  # before the drain: the application answers
    drainer.draining = True
    sent = call(guard, "/v1/completions")
    assert sent == [
        {"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(REFUSAL_BODY)).encode()),
            (b"retry-after", b"1"), (b"connection", b"close")]},
        {"type": "http.response.body", "body": REFUSAL_BODY},
    ]
    assert drainer.refused == 1 and len(app.seen) == 1  # refused before the application
    assert call(guard, "/health")[0]["status"] == 200 and drainer.refused == 1  # the probes are exempt


def test_a_body_over_the_limit_gets_413_declared_or_counted() -> None:
    app = App()
    metrics = Metrics()
    guard = Guard(app, metrics=metrics, max_body=1024, known={"/v1/completions"})
    expected = [
        {"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(TOO_LARGE_BODY)).encode())]},
        {"type": "http.response.body", "body": TOO_LARGE_BODY},
    ]
    assert call(guard, "/v1/completions", headers=[(b"content-length", b"2048")]) == expected
    assert call(guard, "/v1/completions", chunks=[b"x" * 1000, b"x" * 1000]) == expected  # no Content-Length: counted
    assert call(guard, "/v1/completions", chunks=[b"x" * 600, b"x" * 400])[0]["status"] == 200  # at the limit: through
    assert app.seen == [b"x" * 1000]
    assert metrics.registry.get_sample_value("mlshift_requests_total", {"endpoint": "/v1/completions", "status": "413"}) == 2


def test_send_error_renders_any_request_error_with_its_headers() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    error = RequestError("Too many.", status=429, type="rate_limit_error", param="n", code="queue_full",
                         headers={"Retry-After": "7", "X-Why": "queue"})
    asyncio.run(send_error(send, error))
    start, body = sent
    assert start["status"] == 429
    assert start["headers"][2:] == [(b"retry-after", b"7"), (b"x-why", b"queue")]
    assert json.loads(body["body"]) == error_body("Too many.", "rate_limit_error", "n", "queue_full") == {
        "error": {"message": "Too many.", "type": "rate_limit_error", "param": "n", "code": "queue_full"}}
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
    sent.clear()
    asyncio.run(send_error(send, ShuttingDown(), close=True))
    assert sent[0]["status"] == 503 and sent[0]["headers"][-2:] == [(b"retry-after", b"1"), (b"connection", b"close")]
