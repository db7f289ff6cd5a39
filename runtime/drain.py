"""Stopping without dropping requests: what the included server does on SIGTERM.

Kubernetes stops a pod (a rollout, a scale-down, a node drain) in this order: the pod is marked
terminating and leaves the Service's endpoints, which each router and kube-proxy notice some
seconds later; the container's preStop hook runs (the manifests give it ``sleep N``: the pause,
during which the server still serves as usual the requests the routers still send); then
SIGTERM; then, ``terminationGracePeriodSeconds`` after the start (the pause included), SIGKILL.
The wizard sizes that grace period as the pause + ``drain_timeout`` + a margin
(``wizard/blueprint.py``), so SIGKILL never comes while the drain below is still inside its limit.

On SIGTERM the server drains (:class:`DrainingServer`):

1. at once: readiness answers 503 (liveness stays 200: nothing should restart the container),
   and each new API request gets 503 in OpenAI's shape with ``Retry-After`` and ``Connection:
   close``. The listening socket stays open meanwhile, so that a router that has not caught up
   yet gets an answer that says to retry, and a kept-alive connection is closed after it;
2. the requests in flight, streams included, go on to their end, for up to ``drain_timeout``
   seconds (whatever finishes earlier ends the wait earlier);
3. at that deadline, those still running are cut: the scheduler stops, and each one ends with
   the server's 503 "shutting down" error (a stream: an error event, then ``[DONE]``) within
   :data:`CUT_GRACE` seconds;
4. then uvicorn's own shutdown: it closes the listening socket (a request now is refused, which
   a client or proxy retries elsewhere) and the idle connections, waits at most CUT_GRACE for
   any connection left, and runs the application's shutdown, which releases the model. The
   process exits with 0. One line is logged when the drain starts and one when it ends, with
   how many requests finished, how many were cut and how many new ones were refused.

Why not uvicorn's SIGTERM handling alone: it closes the listening socket at once and waits
(``timeout_graceful_shutdown``) for the connections in flight, which is right for them, but a
request that arrives meanwhile is refused without a word, readiness cannot answer, and uvicorn
re-raises the signal when it is done, so the process dies of SIGTERM (exit 143) instead of
exiting 0. So SIGTERM starts the drain, and uvicorn's shutdown runs after it with nothing left to
wait for. SIGINT (Ctrl-C in a terminal) keeps uvicorn's behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import ShuttingDown, send_error

log = logging.getLogger("runtime.server")

# Seconds the cut requests get to send their error and close, and then uvicorn's wait for any
# connection left. The wizard's margin in the grace period (STOP_MARGIN_SECONDS) covers both.
CUT_GRACE = 5.0
# A new request while the server drains: ShuttingDown (Retry-After 1: another replica can take it at once).
REFUSAL = "The server is shutting down and takes no new requests; retry (another replica will answer)."


class Drainer:
    """The drain's state, shared by the middleware (:class:`DrainGuard`), the readiness route and
    the server (:class:`DrainingServer`). Requests on the ``exempt`` paths (the probes and the
    metrics) are neither counted nor refused.

    ``cut`` is awaited at the deadline: it makes the requests still running end (the server
    stops its scheduler)."""

    def __init__(self, timeout: float, *, exempt: Iterable[str], cut: Callable[[], Awaitable[None]] | None = None):
        self.timeout = timeout
        self.exempt = frozenset(exempt)
        self.cut = cut
        self.draining = False
        self.in_flight = 0
        self.refused = 0
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def _until_idle(self, seconds: float) -> bool:
        """Wait until no request is in flight, for at most ``seconds``; whether none is."""
        if self.in_flight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        return self.in_flight == 0

    async def run(self) -> tuple[int, int]:
        """The drain (steps 1 to 3 of the module's list): (requests finished, requests cut)."""
        self.draining = True  # from here on, new requests are refused and readiness is 503
        start, running = time.monotonic(), self.in_flight
        log.info("draining: %d request%s in flight, given up to %g s to finish; new requests get 503",
                 running, "" if running == 1 else "s", self.timeout)
        cut = 0
        if not await self._until_idle(self.timeout):
            cut = self.in_flight
            if self.cut is not None:
                await self.cut()
            await self._until_idle(CUT_GRACE)
        finished = running - cut
        log.info("drained in %.1f s: %d finished, %d cut, %d new request%s refused",
                 time.monotonic() - start, finished, cut, self.refused, "" if self.refused == 1 else "s")
        return finished, cut


class DrainGuard:
    """Pure ASGI middleware: counts the API requests in flight (until their last byte, streams
    included) and, while the server drains, refuses new ones with 503 and closes the connection
    after each answer."""

    def __init__(self, app: ASGIApp, *, drainer: Drainer):
        self.app = app
        self.drainer = drainer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drainer = self.drainer
        if scope["type"] != "http" or scope["path"] in drainer.exempt:
            await self.app(scope, receive, send)
            return
        if drainer.draining:
            drainer.refused += 1
            await send_error(send, ShuttingDown(REFUSAL), close=True)
            return

        async def closing_send(message: Message) -> None:
            # An answer that starts while the server drains closes its connection after it.
            if message["type"] == "http.response.start" and drainer.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        drainer.enter()
        try:
            await self.app(scope, receive, closing_send)
        finally:
            drainer.leave()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM starting the drain (see the module) instead of its own stop."""

    def __init__(self, config: uvicorn.Config, drainer: Drainer):
        super().__init__(config)
        self.drainer = drainer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False
        self._drain_task: asyncio.Task[Any] | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)  # Ctrl-C, or a stop before the loop runs: uvicorn's own
            return
        if not self._drain_started:  # a second SIGTERM changes nothing
            self._drain_started = True
            # The handler runs between two steps of the event loop's thread: the drain starts on the loop.
            self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await self.drainer.run()
        except Exception:  # noqa: BLE001 - a bug here must still let the process stop
            log.exception("the drain failed; stopping now")
        finally:
            # What is left for uvicorn's shutdown was cut already: a short wait.
            self.config.timeout_graceful_shutdown = CUT_GRACE
            self.should_exit = True
