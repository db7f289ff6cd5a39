"""The runtime's errors: a small tree, turned into one-line messages at the command line and
into OpenAI-shaped error bodies by the server."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any


def is_out_of_memory(exc: BaseException) -> bool:
    """An out-of-memory error from the device (torch raises ``torch.OutOfMemoryError``, a
    RuntimeError subclass; older builds a RuntimeError saying so). Checked without torch."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (for logs and for the one client an error concerns)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class RuntimeFailure(Exception):
    """Base of every error the runtime raises on purpose."""

    exit_code = 1


class UsageError(RuntimeFailure):
    """A mistake the user can fix: a bad flag, a missing file, a missing optional dependency."""

    exit_code = 2


class RequestError(RuntimeFailure):
    """A request the server refuses; carries the HTTP status and OpenAI error fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


class QueueFull(RequestError):
    """The bounded queue is full: 429 with Retry-After."""

    def __init__(self, retry_after: int):
        super().__init__(
            "The server is at capacity; retry later.",
            status=429,
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )


class SequenceFailed(RequestError):
    """The engine failed on this one request (the others in its batch went on)."""

    def __init__(self, reason: str):
        super().__init__(
            f"The model failed on this request ({reason}); no other request was affected.",
            status=500,
            type="server_error",
            code="sequence_failed",
        )


class RequestTimeout(RequestError):
    def __init__(self, seconds: float):
        super().__init__(
            f"The request did not finish within {seconds:g} seconds.",
            status=408,
            type="timeout_error",
            code="request_timeout",
        )


class ShuttingDown(RequestError):
    """The server is stopping (runtime/drain.py): a request it no longer takes, or one still
    running when the drain ran out of time. Retrying it reaches another replica."""

    def __init__(self, message: str = "The server is shutting down; this request was stopped before it finished. Retry it.") -> None:
        super().__init__(message, status=503, type="service_unavailable", code="server_shutting_down",
                         headers={"Retry-After": "1"})


class NotReady(RequestError):
    def __init__(self) -> None:
        super().__init__(
            "The model is still loading; retry when /ready answers 200.",
            status=503,
            type="service_unavailable",
            code="model_loading",
            headers={"Retry-After": "5"},
        )


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    from runtime import protocol as p  # here: the wizard imports this module, and needs no request models

    return p.ErrorResponse(error=p.ErrorDetail(message=message, type=type, param=param, code=code)).model_dump()


async def send_error(send: Callable[[dict[str, Any]], Awaitable[None]], error: RequestError, *, close: bool = False) -> None:
    """Answer with ``error`` as a raw ASGI response, for the middleware that answers before the
    application does (the body limit, the drain): its status, its JSON body in OpenAI's shape, its
    headers (``Retry-After``...) and, with ``close``, ``Connection: close`` (the connection ends
    after this answer)."""
    body = json.dumps(error_body(error.message, error.type, error.param, error.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
