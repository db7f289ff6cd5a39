"""What every endpoint shares, between the HTTP routes and the scheduler: the model check, request
bounds, tokenising off the event loop, submission to the scheduler and its events back as text
(stop strings, incremental decoding), usage accounting, and the answer as one JSON body or as
server-sent events. Each endpoint is a subclass of :class:`Serving` in ``runtime/serving_*.py``
(vLLM's ``OpenAIServing`` and its subclasses)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from runtime import protocol as p
from runtime.engine_base import Engine, SamplingParams, Sequence
from runtime.errors import RequestError, RequestTimeout, error_body
from runtime.metrics import Metrics
from runtime.ratelimit import Quota
from runtime.scheduler import Event, Scheduler, Ticket

log = logging.getLogger("runtime.server")

# Text longer than its context could hold at this many characters a token (far above any real
# tokenizer's average) is refused before it is tokenised: a bound on the work one request makes.
MAX_CHARS_PER_TOKEN = 32


class JSON(JSONResponse):
    """JSON with non-ASCII escaped: a body is valid UTF-8 whatever text went into it."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class TextStream:
    """Incremental detokenisation with stop strings.

    Text is released only once it is valid UTF-8 and cannot be the start of a stop string, so a
    streamed answer never shows a stop string or half a character.
    """

    def __init__(self, decode: Callable[[list[int]], str], stops: list[str]):
        self.decode = decode
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False
        self._prefix = 0
        self._read = 0

    def push(self, *tokens: int) -> str:
        """Add tokens; return the text that may be released now."""
        if self.stopped:
            return ""
        self.ids.extend(tokens)
        before = self.decode(self.ids[self._prefix : self._read])
        after = self.decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
        for stop in self.stops:
            at = self.text.find(stop, max(0, self.sent - len(stop)))
            if at != -1:
                self.text = self.text[:at]
                self.stopped = True
        limit = len(self.text) if self.stopped else len(self.text) - self.hold
        return self._release(limit)

    def finish(self) -> str:
        """The rest of the text at the end of generation."""
        if not self.stopped:
            full = self.decode(self.ids)
            if full.startswith(self.text):
                self.text = full
        return self._release(len(self.text))

    def _release(self, limit: int) -> str:
        if limit <= self.sent:
            return ""
        out = self.text[self.sent : limit]
        self.sent = limit
        return out


class Mailbox:
    """Events from the device thread to the event loop's queues, with one wake-up of the loop
    for all the events posted before it runs (a decoding step of 16 streams is one wake-up, not
    16). Order is kept per queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._items: deque[tuple[asyncio.Queue[Event], Event]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, queue: asyncio.Queue[Event], event: Event) -> None:
        with self._lock:
            self._items.append((queue, event))
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._scheduled = False
        for queue, event in items:
            queue.put_nowait(event)


class Channels:
    """How a request crosses threads, one for all the endpoints: the text thread, where tokenising
    and chat templates run off the event loop (so that probes and streams keep answering while a
    long prompt is read; one thread, as a tokenizer is not made for concurrent calls and the
    device thread never touches it), and the mailbox from the device thread."""

    def __init__(self) -> None:
        self.text = ThreadPoolExecutor(max_workers=1, thread_name_prefix="text")
        self.mailbox: Mailbox | None = None  # made on first use, for the running loop

    def close(self) -> None:
        self.text.shutdown(wait=False, cancel_futures=True)


@dataclass
class Generation:
    """One sequence on its way through the scheduler, seen from the event loop."""

    ticket: Ticket
    queue: asyncio.Queue[Event]
    text: TextStream | None
    prompt_tokens: int
    # What ends the wait if the device thread never answers (one timer, not one per event).
    watchdog: asyncio.TimerHandle | None = field(default=None, repr=False)


class Serving:
    """The base of each endpoint's serving object. ``path`` and ``task`` say which endpoint it is
    and what kind of model it needs."""

    path = ""
    task = "generate"

    def __init__(self, engine: Engine, scheduler: Scheduler, metrics: Metrics, *, model_name: str, request_timeout: float,
                 channels: Channels | None = None):
        self.engine = engine
        self.scheduler = scheduler
        self.metrics = metrics
        self.model_name = model_name
        self.request_timeout = request_timeout
        self.channels = channels or Channels()

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.channels.text, fn, *args)

    @property
    def max_chars(self) -> int:
        return self.engine.max_model_len * MAX_CHARS_PER_TOKEN

    @property
    def vocab_size(self) -> int | None:
        size = getattr(getattr(self.engine, "tokenizer", None), "__len__", None)
        return size() if size else None

    # ---------------------------------------------------------------- checks
    def check_model(self, model: str) -> None:
        """The model asked for is the one served here, and of the kind this endpoint needs."""
        if model != self.model_name:
            raise RequestError(
                f"The model `{model}` does not exist; this server serves `{self.model_name}`.",
                status=404, type="invalid_request_error", param="model", code="model_not_found",
            )
        if self.engine.task != self.task:
            what = "a generative model" if self.task == "generate" else "an encoder (embedding) model"
            raise RequestError(f"{self.path} needs {what}; `{self.model_name}` is not one.", param="model", code="wrong_model_type")

    @staticmethod
    def _check_supported(req: p.CompletionRequest | p.ChatCompletionRequest) -> None:
        bad = p.unsupported(req)
        if bad:
            raise RequestError(bad[1], param=bad[0], code="unsupported_parameter")

    def _sampling(self, prompt_len: int, max_tokens: int | None, req: Any, prompt_param: str = "prompt") -> SamplingParams:
        limit = self.engine.max_model_len
        if prompt_len >= limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens; the prompt has {prompt_len}.",
                param=prompt_param, code="context_length_exceeded",
            )
        if max_tokens is None:
            max_tokens = limit - prompt_len
        elif prompt_len + max_tokens > limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} in the completion).",
                param="max_tokens", code="context_length_exceeded",
            )
        if req.min_tokens > max_tokens:
            raise RequestError(f"min_tokens ({req.min_tokens}) is more than max_tokens ({max_tokens}).", param="min_tokens")
        return SamplingParams(
            max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed, ignore_eos=req.ignore_eos,
            top_k=req.top_k, min_p=req.min_p, repetition_penalty=req.repetition_penalty,
            frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
            logit_bias=self._logit_bias(req.logit_bias), min_tokens=req.min_tokens,
        )

    def _logit_bias(self, bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
        size = self.vocab_size
        out = []
        for key, value in (bias or {}).items():
            token = int(key)
            if size is not None and token >= size:
                raise RequestError(f"logit_bias: token id {token} is not in the vocabulary (0 to {size - 1}).", param="logit_bias")
            out.append((token, float(value)))
        return tuple(out)

    def _items(self, prompt: Any, param: str) -> list[Any]:
        """The prompts of a request (one text, one list of ids, or a list of either), bounded
        before any tokenising: their number, each one's characters or ids."""
        if isinstance(prompt, str):
            items: list[Any] = [prompt]
        elif prompt and all(isinstance(x, int) for x in prompt):
            items = [prompt]
        else:
            items = list(prompt)
        if not items:
            raise RequestError("The prompt is empty.", param=param)
        if len(items) > self.scheduler.max_queue:
            raise RequestError(f"At most {self.scheduler.max_queue} prompts fit in one request; this one has {len(items)}.", param=param)
        limit = self.engine.max_model_len
        for item in items:
            if not item:
                raise RequestError("The prompt is empty.", param=param)
            if isinstance(item, str) and len(item) > self.max_chars:
                raise RequestError(
                    f"A text of {len(item)} characters cannot fit in this model's context of {limit} tokens "
                    f"(at most {self.max_chars} characters are read).", param=param, code="context_length_exceeded",
                )
            if not isinstance(item, str) and len(item) > limit:
                raise RequestError(
                    f"This model's maximum context length is {limit} tokens; a prompt has {len(item)}.",
                    param=param, code="context_length_exceeded",
                )
        return items

    def _token_ids(self, items: list[Any], param: str) -> list[list[int]]:
        """Token ids of each item (texts are tokenised: call this off the event loop)."""
        size = self.vocab_size
        out = []
        for item in items:
            ids = self.engine.encode(item) if isinstance(item, str) else list(item)
            if not ids:
                raise RequestError("The prompt is empty.", param=param)
            if size is not None and any(i < 0 or i >= size for i in ids):
                raise RequestError(f"Token ids must be between 0 and {size - 1}.", param=param)
            out.append(ids)
        return out

    async def _prompts(self, prompt: Any, param: str = "prompt") -> list[list[int]]:
        return await self._off_loop(self._token_ids, self._items(prompt, param), param)

    # ---------------------------------------------------------------- generation
    def _submit(self, ids: list[int], params: SamplingParams, stops: list[str], stream: bool) -> Generation:
        loop = asyncio.get_running_loop()
        channels = self.channels
        if channels.mailbox is None or channels.mailbox.loop is not loop:
            channels.mailbox = Mailbox(loop)
        post = channels.mailbox.post
        queue: asyncio.Queue[Event] = asyncio.Queue()
        ticket = Ticket(notify=lambda ev: post(queue, ev), timeout=self.request_timeout)
        ticket.seq = Sequence(prompt_ids=ids, params=params, tag=ticket)
        # Tokens travel one by one only when someone looks at them (streams, stop strings).
        ticket.stream_tokens = stream or bool(stops)
        self.scheduler.submit(ticket)
        generation = Generation(ticket, queue, TextStream(self.engine.decode, stops), len(ids))
        stuck = Event("error", RequestTimeout(ticket.timeout))
        generation.watchdog = loop.call_at(loop.time() + ticket.timeout + 1.0, queue.put_nowait, stuck)
        return generation

    def _submit_all(self, prompts: list[list[int]], params: list[SamplingParams], stops: list[str], stream: bool,
                    quota: Quota | None = None) -> list[Generation]:
        """Queue one sequence per prompt, after reserving from ``quota`` (the caller's rate limit)
        the most tokens they may generate; the quota then counts what they did generate."""
        if quota is not None:
            quota.reserve(sum(sp.max_tokens for sp in params))
        generations: list[Generation] = []
        try:
            for ids, sp in zip(prompts, params):
                generations.append(self._submit(ids, sp, stops, stream))
        except RequestError:
            self.cancel(generations)
            raise
        if quota is not None:
            quota.track(lambda: sum(len(j.ticket.seq.output_ids) for j in generations if j.ticket.seq))
        return generations

    def cancel(self, generations: list[Generation]) -> None:
        for generation in generations:
            self.scheduler.cancel(generation.ticket)
            if generation.watchdog is not None:
                generation.watchdog.cancel()

    async def _events(self, generation: Generation) -> AsyncIterator[tuple[str, str | None]]:
        """(text delta, finish reason or None) until the sequence ends. Tokens that arrived
        together (the loop was busy for a step or more) go out as one delta."""
        assert generation.text is not None
        try:
            while True:
                events = [await generation.queue.get()]
                while not generation.queue.empty():
                    events.append(generation.queue.get_nowait())
                tokens: list[int] = []
                end: Event | None = None  # "done" or "error": nothing comes after it
                for ev in events:
                    if ev.kind != "token":
                        end = ev
                        break
                    tokens.append(ev.value)
                delta = generation.text.push(*tokens) if tokens else ""
                if generation.text.stopped:
                    self.scheduler.cancel(generation.ticket, stop_string=True)
                    yield delta + generation.text.finish(), "stop"
                    return
                if end is None:
                    if delta:
                        yield delta, None
                elif end.kind == "done":
                    if not generation.ticket.stream_tokens:
                        assert generation.ticket.seq is not None
                        yield self.engine.decode(generation.ticket.seq.output_ids), end.value
                    else:
                        yield delta + generation.text.finish(), end.value
                    return
                else:
                    if delta:
                        yield delta, None
                    raise end.value
        finally:
            if generation.watchdog is not None:
                generation.watchdog.cancel()

    async def _collect(self, generation: Generation) -> tuple[str, str | None]:
        parts: list[str] = []
        reason: str | None = None
        async for delta, finish in self._events(generation):
            parts.append(delta)
            reason = finish or reason
        return "".join(parts), reason

    def _account(self, generations: list[Generation]) -> p.Usage:
        prompt = sum(j.prompt_tokens for j in generations)
        completion = sum(len(j.ticket.seq.output_ids) for j in generations if j.ticket.seq)
        self.metrics.prompt_tokens.inc(prompt)
        self.metrics.generation_tokens.inc(completion)
        for j in generations:
            if j.ticket.first_token_at is not None:
                self.metrics.ttft.observe(j.ticket.first_token_at - j.ticket.arrival)
        return p.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    # ---------------------------------------------------------------- answers
    def _sse_response(self, chunks: AsyncIterator[str], generations: list[Generation]) -> StreamingResponse:
        """A streamed answer; the generations are cancelled (their batch slots freed) when it
        ends, the client gone or not."""
        return _sse(chunks, lambda: self.cancel(generations))

    async def _json_response(self, request: Request, result: Awaitable[BaseModel], generations: list[Generation],
                             quota: Quota | None = None) -> Response:
        """One JSON body; the generations are cancelled if the client goes away first. The quota
        is settled before the answer goes, so that its rate-limit headers count the tokens given back."""
        body = await _unless_disconnected(request, result, lambda: self.cancel(generations))
        if quota is not None:
            quota.settle()
        return JSON(body.model_dump(mode="json"))


def stop_strings(stop: p.Stop) -> list[str]:
    """The stop strings (their number and length are bounded by the request model)."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _sse(chunks: AsyncIterator[str], on_close: Callable[[], None]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for data in chunks:
                yield f"data: {data}\n\n"
        except RequestError as exc:
            yield f"data: {json.dumps(error_body(exc.message, exc.type, exc.param, exc.code))}\n\n"
        except Exception:  # noqa: BLE001 - a bug: this stream ends with an error event, nothing else does
            log.exception("a stream failed")
            yield f"data: {json.dumps(error_body('The server failed on this request.', 'server_error'))}\n\n"
        finally:
            on_close()  # a client that went away frees its place in the batch
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _unless_disconnected(request: Request, work: Awaitable[Any], on_disconnect: Callable[[], None]) -> Any:
    """Await ``work``; if the client disconnects first, cancel it and free its place."""

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    on_disconnect()
    raise RequestError("The client closed the connection.", status=499, type="client_closed_request")
