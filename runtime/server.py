"""The HTTP face of the transformers engine: an app factory and a lifespan that loads the model
in the background (``/health`` answers at once, readiness once the model is loaded) and releases
it at shutdown. Routes only hand each request to its endpoint's serving object
(:mod:`runtime.serving` and its subclasses, one for each endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import __version__
from runtime import protocol as p
from runtime.engine_base import Engine
from runtime.drain import Drainer, DrainGuard
from runtime.errors import NotReady, RequestError, error_body, send_error
from runtime.keys import ANONYMOUS, KeyRing
from runtime.metrics import Metrics
from runtime.ratelimit import Metering, RateLimiter
from runtime.scheduler import Scheduler
from runtime.serving import JSON, Channels
from runtime.serving_chat import ServingChat
from runtime.serving_completions import ServingCompletions
from runtime.serving_embeddings import ServingEmbeddings
from runtime.serving_models import ServingModels
from runtime.settings import ServeSettings

log = logging.getLogger("runtime.server")

EngineFactory = Callable[[ServeSettings], Engine]
S = TypeVar("S")


def uvicorn_config(app: ASGIApp, settings: ServeSettings, **options: Any) -> Any:
    """uvicorn's configuration for ``app``: the h11 protocol with read timeouts
    (:mod:`runtime.connections`); uvicorn's own graceful stop (Ctrl-C) waits for the requests in
    flight as long as the drain on SIGTERM does (``drain_timeout``, :mod:`runtime.drain`)."""
    import uvicorn

    from runtime.connections import timed_protocol

    options.setdefault("timeout_graceful_shutdown", settings.drain_timeout)
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, lifespan="on",
        http=timed_protocol(settings.header_timeout, settings.body_timeout), **options,
    )


class State:
    """What the routes share: settings, metrics, the models listing, and (once loaded) engine,
    scheduler and the serving object of each endpoint."""

    def __init__(self, settings: ServeSettings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.models = ServingModels(settings.model_name)
        self.engine: Engine | None = None
        self.scheduler: Any = None
        self.channels: Channels | None = None
        self.chat: ServingChat | None = None
        self.embeddings: ServingEmbeddings | None = None
        self.completions: ServingCompletions | None = None  # set last when loading: readiness
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.completions is not None


def _default_engine(settings: ServeSettings) -> Engine:
    from runtime.engine_transformers import TransformersEngine

    return TransformersEngine(settings)


def _loaded(serving: S | None) -> S:
    if serving is None:
        raise NotReady()
    return serving


def create_app(
    settings: ServeSettings,
    *,
    engine_factory: EngineFactory = _default_engine,
    on_load_error: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The server for ``settings``; the model loads when the app starts (lifespan). ``clock``
    times the rate limits and the looks at the API keys folder (the tests advance their own)."""
    metrics = Metrics()
    state = State(settings, metrics)
    # Read now: a keys folder that is missing or unreadable stops the server before it loads a model.
    keys = state.keys = KeyRing(settings.api_keys_dir, settings.api_key, clock=clock)
    limiter = state.limiter = RateLimiter(settings.rate_limit, clock=clock, metrics=metrics)

    async def cut() -> None:
        # The drain's deadline (runtime/drain.py): the requests still running end with the
        # scheduler's 503 "shutting down" error (a stream: an error event, then [DONE]).
        if state.scheduler is not None:
            await asyncio.to_thread(state.scheduler.stop)

    # SIGTERM's drain; the probes and the metrics answer throughout it.
    drainer = state.drainer = Drainer(settings.drain_timeout, cut=cut,
                                      exempt={settings.health_path, settings.ready_path, settings.metrics_path or ""})

    def load() -> None:
        engine = engine_factory(settings)
        engine.load()
        state.engine = engine
        scheduler = Scheduler(
            engine, max_batch_size=engine.max_batch_size, max_queue=settings.max_queue,
            max_wait_s=settings.max_wait_ms / 1000.0, metrics=metrics,
        )
        scheduler.start(device)
        state.scheduler = scheduler
        metrics.max_batch_size.set(engine.max_batch_size)
        channels = state.channels = Channels()
        shared: dict[str, Any] = {"model_name": settings.model_name, "request_timeout": settings.request_timeout, "channels": channels}
        state.chat = ServingChat(engine, scheduler, metrics, **shared)
        state.embeddings = ServingEmbeddings(engine, scheduler, metrics, **shared)
        state.models.max_model_len = engine.max_model_len
        state.completions = ServingCompletions(engine, scheduler, metrics, **shared)
        metrics.ready.set(1)

    # One thread does all device work: loading, then the scheduler's loop (see Scheduler.start).
    device = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device")

    async def load_in_background() -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(device, load)
        except Exception as exc:  # noqa: BLE001 - reported in one line; the process then stops
            state.load_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("cannot load the model: %s", state.load_error)
            if on_load_error:
                on_load_error(state.load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            if not task.done():
                # Loading cannot be interrupted; wait for it so that the model is released.
                with contextlib.suppress(Exception):
                    await task
            if state.scheduler is not None:
                await asyncio.to_thread(state.scheduler.stop)
            if state.channels is not None:
                state.channels.close()
            if state.engine is not None:
                await asyncio.to_thread(state.engine.close)
            device.shutdown(wait=False)
            state.completions = state.chat = state.embeddings = None
            state.models.max_model_len = None
            metrics.ready.set(0)

    app = FastAPI(
        title="mlshift runtime",
        version=__version__,
        summary="OpenAI-compatible completions, chat and embeddings.",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.state.runtime = state
    _install_error_handlers(app)
    open_paths = {settings.health_path, settings.ready_path, settings.metrics_path, "/docs", "/openapi.json", "/redoc"}
    app.add_middleware(DrainGuard, drainer=drainer)  # inside Guard too: its 503s are counted
    app.add_middleware(Metering, metrics=metrics)  # inside Guard: Guard records the status it answered
    app.add_middleware(Guard, metrics=metrics, max_body=settings.max_body_bytes, known=_known_paths(settings))

    async def authorised(request: Request) -> None:
        """The caller's key, by name, in ``request.state.key`` (``anonymous`` on a server without
        keys); 401 without a key that matches (runtime/keys.py)."""
        if request.url.path in open_paths:
            return
        if not keys.closed:
            request.state.key = ANONYMOUS
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        name = keys.match(token.strip() if scheme.lower() == "bearer" else None, request.headers.get("x-api-key", "").strip())
        if name is None:
            raise RequestError(
                "Incorrect or missing API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                status=401, type="invalid_request_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
            )
        request.state.key = name

    async def limited(request: Request) -> None:
        """The request counts against its key's limits (runtime/ratelimit.py): 429 beyond them."""
        quota = request.state.quota = limiter.quota(getattr(request.state, "key", ANONYMOUS))
        quota.admit()

    guarded = [Depends(authorised)]
    metered = [Depends(authorised), Depends(limited)]  # the endpoints that do work on the device

    # ---------------------------------------------------------------- probes and metrics
    @app.get(settings.health_path, tags=["probes"], summary="Liveness: the process is up")
    async def health() -> Response:
        failure = state.scheduler.failure if state.scheduler is not None else None
        if failure:  # the device worker stopped: fail liveness so that the pod restarts
            return JSON({"status": "failed", "reason": failure}, status_code=503)
        return JSON({"status": "ok"})

    if settings.ready_path != settings.health_path:
        @app.get(settings.ready_path, tags=["probes"], summary="Readiness: the model is loaded", responses={503: {"model": p.ErrorResponse}})
        async def ready() -> Response:
            if drainer.draining:  # stopping (SIGTERM): no new requests here; liveness stays 200
                return JSON({"status": "draining"}, status_code=503)
            if state.ready and not state.scheduler.failure:
                return JSON({"status": "ready"})
            body = {"status": "failed" if state.load_error else "loading"}
            return JSON(body, status_code=503)

    if settings.metrics_path:
        @app.get(settings.metrics_path, tags=["probes"], summary="Prometheus metrics", response_class=Response)
        async def metrics_endpoint() -> Response:
            return Response(metrics.render(), media_type=metrics.content_type)

    # ---------------------------------------------------------------- OpenAI API
    @app.get("/v1/models", dependencies=guarded, response_model=p.ModelList, tags=["openai"])
    async def list_models() -> p.ModelList:
        return state.models.list_models()

    @app.get("/v1/models/{model_id:path}", dependencies=guarded, response_model=p.ModelCard, tags=["openai"])
    async def get_model(model_id: str) -> p.ModelCard:
        return state.models.show_model(model_id)

    @app.post("/v1/completions", dependencies=metered, response_model=p.CompletionResponse, tags=["openai"],
              responses={400: {"model": p.ErrorResponse}, 429: {"model": p.ErrorResponse}})
    async def completions(body: p.CompletionRequest, request: Request) -> Response:
        return await _loaded(state.completions).create_completion(body, request)

    @app.post("/v1/chat/completions", dependencies=metered, response_model=p.ChatCompletionResponse, tags=["openai"],
              responses={400: {"model": p.ErrorResponse}, 429: {"model": p.ErrorResponse}})
    async def chat_completions(body: p.ChatCompletionRequest, request: Request) -> Response:
        return await _loaded(state.chat).create_chat_completion(body, request)

    @app.post("/v1/embeddings", dependencies=metered, response_model=p.EmbeddingResponse, tags=["openai"],
              responses={400: {"model": p.ErrorResponse}, 429: {"model": p.ErrorResponse}})
    async def embeddings(body: p.EmbeddingRequest) -> p.EmbeddingResponse:
        return await _loaded(state.embeddings).create_embedding(body)

    return app


def _known_paths(settings: ServeSettings) -> set[str]:
    return {
        settings.health_path, settings.ready_path, settings.metrics_path or "", "/v1/models",
        "/v1/completions", "/v1/chat/completions", "/v1/embeddings",
    }


# --------------------------------------------------------------------------- errors
def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSON(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # Our own checks (value errors) say more than a union's "not a string, not a list".
        first = next((e for e in errors if e.get("type") == "value_error"), errors[0] if errors else {})
        if first.get("type") == "json_invalid":
            return JSON(error_body("The request body is not valid JSON.", "invalid_request_error"), status_code=400)
        loc = _param_path(first.get("loc", ()))
        param = ".".join(loc) or None
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        code = "invalid_value"
        if first.get("type") == "missing":
            msg = "is required"
        elif first.get("type") == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1] if loc else "", p.FIELD_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            msg, code = f"is not a parameter this server knows{hint}; it would be ignored, so it is refused", "unsupported_parameter"
        message = f"{param}: {msg}" if param else msg
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return JSON(error_body(message, "invalid_request_error", param, code), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSON(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSON(error_body("The server failed on this request.", "server_error"), status_code=500)


def _param_path(loc: Any) -> list[str]:
    """The parameter an error is about, as OpenAI names it (``messages.0.content``): field names
    and indexes, without the union members pydantic tried (``str``, ``list[int]``), and cut
    before a dictionary key, which is the caller's text."""
    path: list[str] = []
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path.append(str(part))
        elif isinstance(part, str) and (part in {"str", "int", "float", "bool", "none", "dict", "list"} or "[" in part):
            continue
        elif isinstance(part, str) and part.isidentifier() and part.isascii() and len(part) <= 64:
            path.append(part)
        else:
            break
    return path


# --------------------------------------------------------------------------- middleware
class Guard:
    """Pure ASGI middleware: refuses bodies over ``max_body`` bytes (413) and records each
    request's status and latency (to the last byte, streams included)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int, known: set[str]):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.known = known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in self.known else "other"
        start = time.monotonic()
        status = 500
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._too_large(send)
            self._record(endpoint, 413, start)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # A body without a declared length is read (and counted) before the app sees it.
            messages: list[Message] = []
            seen = 0
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    await self._too_large(send)
                    self._record(endpoint, 413, start)
                    return
                if not message.get("more_body", False):
                    break
            replay = iter(messages)

            async def replaying_receive() -> Message:
                return next(replay, None) or await receive()

            receive = replaying_receive

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._record(endpoint, status, start)

        await self.app(scope, receive, recording_send)

    async def _too_large(self, send: Send) -> None:
        await send_error(send, RequestError(f"The request body is larger than {self.max_body} bytes.", status=413,
                                            code="request_too_large"))

    def _record(self, endpoint: str, status: int, start: float) -> None:
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.metrics.latency.labels(endpoint=endpoint).observe(time.monotonic() - start)
