"""Read timeouts for the server's connections, which uvicorn does not have.

uvicorn closes a connection that stays idle after a response (``timeout_keep_alive``), but a
client that opens a connection and never finishes its headers, or trickles its body a byte at a
time, holds it forever. Traffic from outside the cluster passes OpenShift's HAProxy router,
which has limits of its own; in-cluster callers and ``oc port-forward`` reach the pod directly.

:func:`timed_protocol` makes a subclass of uvicorn's h11 protocol (the pure-Python one, always
installed with uvicorn) with two limits, HAProxy's ``timeout http-request`` and a read timeout:

- the headers of a request must be complete within ``header_timeout`` seconds of its first
  byte (or of the connection opening); otherwise the answer is ``408`` and the connection is
  closed (or it is just closed when nothing at all was sent);
- while a body is arriving, ``body_timeout`` seconds without a byte close the connection (the
  application sees the client go away).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("runtime.server")

_408 = json.dumps({"error": {
    "message": "The request did not arrive in time.", "type": "invalid_request_error", "param": None, "code": "request_timeout",
}}).encode()
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_408)).encode() + b"\r\n\r\n" + _408
)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a body read timeout (see the module)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading_headers = False
        self._bytes_seen = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._bytes_seen = True
        if self.conn.their_state is h11.IDLE and not self._reading_headers:
            self._start_headers()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE:
            return  # still reading headers: the deadline stands, it is not renewed by each byte
        self._reading_headers = False
        if state is h11.SEND_BODY:
            self._arm(self.body_timeout, self._body_timed_out)
        else:
            self._stop_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:
            self._stop_timer()  # uvicorn's keep-alive timeout takes over until the next byte
            self._bytes_seen = False

    # ------------------------------------------------------------------ timers
    def _start_headers(self) -> None:
        self._reading_headers = True
        self._arm(self.header_timeout, self._headers_timed_out)

    def _arm(self, seconds: float, callback: Any) -> None:
        self._stop_timer()
        self._read_timer = self.loop.call_later(seconds, callback)

    def _stop_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _headers_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE or self.cycle and not self.cycle.response_complete:
            return
        if self._bytes_seen:
            log.info("closing a connection from %s: headers not complete after %g s", _peer(self.client), self.header_timeout)
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        log.info("closing a connection from %s: no body bytes for %g s", _peer(self.client), self.body_timeout)
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def timed_protocol(header_timeout: float, body_timeout: float) -> type[TimedH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout, "body_timeout": body_timeout})
