"""Serving logic between the HTTP routes and the scheduler: turns OpenAI requests into sequences,
checks what cannot be served (400-class), assembles text (stop strings, incremental decoding)
and builds OpenAI responses and stream chunks. No HTTP here."""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runtime import protocol as p
from runtime.scheduler import Event, Scheduler, Ticket
from runtime.engine_base import Engine, SamplingParams, Sequence
from runtime.errors import RequestError, RequestTimeout, one_line
from runtime.metrics import Metrics

# Text longer than its context could hold at this many characters a token (far above any real
# tokenizer's average) is refused before it is tokenised: a bound on the work one request makes.
MAX_CHARS_PER_TOKEN = 32


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


@dataclass
class Generation:
    """One sequence on its way through the scheduler, seen from the event loop."""

    ticket: Ticket
    queue: asyncio.Queue[Event]
    text: TextStream | None
    prompt_tokens: int
    # What ends the wait if the device thread never answers (one timer, not one per event).
    watchdog: asyncio.TimerHandle | None = field(default=None, repr=False)


class Service:
    def __init__(self, engine: Engine, scheduler: Scheduler, metrics: Metrics, *, model_name: str, request_timeout: float):
        self.engine = engine
        self.scheduler = scheduler
        self.metrics = metrics
        self.model_name = model_name
        self.request_timeout = request_timeout
        self._mailbox: Mailbox | None = None
        # Tokenising and chat templates run here, off the event loop, so that probes and streams
        # keep answering while a long prompt is read. One thread: a tokenizer is not made for
        # concurrent calls, and the device thread never touches it.
        self._text = ThreadPoolExecutor(max_workers=1, thread_name_prefix="text")

    def close(self) -> None:
        self._text.shutdown(wait=False, cancel_futures=True)

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._text, fn, *args)

    @property
    def max_chars(self) -> int:
        return self.engine.max_model_len * MAX_CHARS_PER_TOKEN

    @property
    def vocab_size(self) -> int | None:
        size = getattr(getattr(self.engine, "tokenizer", None), "__len__", None)
        return size() if size else None

    # ---------------------------------------------------------------- checks
    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise RequestError(
                f"The model `{model}` does not exist; this server serves `{self.model_name}`.",
                status=404, type="invalid_request_error", param="model", code="model_not_found",
            )

    def _need(self, task: str, endpoint: str) -> None:
        if self.engine.task != task:
            what = "a generative model" if task == "generate" else "an encoder (embedding) model"
            raise RequestError(f"{endpoint} needs {what}; `{self.model_name}` is not one.", param="model", code="wrong_model_type")

    def _sampling(self, prompt_len: int, max_tokens: int | None, req: Any) -> SamplingParams:
        limit = self.engine.max_model_len
        if prompt_len >= limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens; the prompt has {prompt_len}.",
                param="messages" if isinstance(req, p.ChatCompletionRequest) else "prompt", code="context_length_exceeded",
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

    @staticmethod
    def _check_supported(req: p.CompletionRequest | p.ChatCompletionRequest) -> None:
        bad = p.unsupported(req)
        if bad:
            raise RequestError(bad[1], param=bad[0], code="unsupported_parameter")

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

    def _chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            return self.engine.chat_ids(messages)
        except ValueError as exc:
            raise RequestError(one_line(exc).removeprefix("ValueError: "), param="messages") from None
        except Exception as exc:  # noqa: BLE001 - a chat template that rejects these messages
            raise RequestError(f"The chat template rejected these messages: {one_line(exc)}", param="messages") from None

    # ---------------------------------------------------------------- generation
    def _submit(self, ids: list[int], params: SamplingParams, stops: list[str], stream: bool) -> Generation:
        loop = asyncio.get_running_loop()
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = Mailbox(loop)
        post = self._mailbox.post
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

    def _account(self, generations: list[Generation], endpoint: str) -> p.Usage:
        prompt = sum(j.prompt_tokens for j in generations)
        completion = sum(len(j.ticket.seq.output_ids) for j in generations if j.ticket.seq)
        self.metrics.prompt_tokens.inc(prompt)
        self.metrics.generation_tokens.inc(completion)
        for j in generations:
            if j.ticket.first_token_at is not None:
                self.metrics.ttft.observe(j.ticket.first_token_at - j.ticket.arrival)
        return p.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def cancel(self, generations: list[Generation]) -> None:
        for generation in generations:
            self.scheduler.cancel(generation.ticket)
            if generation.watchdog is not None:
                generation.watchdog.cancel()

    async def start_completion(self, req: p.CompletionRequest) -> list[Generation]:
        self.check_model(req.model)
        self._need("generate", "/v1/completions")
        self._check_supported(req)
        prompts = await self._prompts(req.prompt)
        params = [self._sampling(len(ids), req.max_tokens, req) for ids in prompts]
        return self._submit_all(prompts, params, _stops(req.stop), req.stream)

    async def start_chat(self, req: p.ChatCompletionRequest) -> list[Generation]:
        self.check_model(req.model)
        self._need("generate", "/v1/chat/completions")
        self._check_supported(req)
        limit = self.engine.max_model_len
        if len(req.messages) > limit:
            raise RequestError(f"{len(req.messages)} messages cannot fit in this model's context of {limit} tokens.", param="messages",
                               code="context_length_exceeded")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        chars = sum(len(m["content"]) for m in messages)
        if chars > self.max_chars:
            raise RequestError(
                f"Messages of {chars} characters cannot fit in this model's context of {limit} tokens "
                f"(at most {self.max_chars} characters are read).", param="messages", code="context_length_exceeded",
            )
        ids = await self._off_loop(self._chat_ids, messages)
        max_tokens = req.max_completion_tokens or req.max_tokens
        params = self._sampling(len(ids), max_tokens, req)
        return self._submit_all([ids], [params], _stops(req.stop), req.stream)

    def _submit_all(self, prompts: list[list[int]], params: list[SamplingParams], stops: list[str], stream: bool) -> list[Generation]:
        generations: list[Generation] = []
        try:
            for ids, sp in zip(prompts, params):
                generations.append(self._submit(ids, sp, stops, stream))
        except RequestError:
            self.cancel(generations)
            raise
        return generations

    async def finish_completion(self, req: p.CompletionRequest, generations: list[Generation]) -> p.CompletionResponse:
        results = await asyncio.gather(*(self._collect(j) for j in generations))
        choices = [p.CompletionChoice(text=t, index=i, finish_reason=r) for i, (t, r) in enumerate(results)]
        return p.CompletionResponse(
            id=p.new_id("cmpl"), created=p.now(), model=self.model_name, choices=choices, usage=self._account(generations, "completions")
        )

    async def finish_chat(self, req: p.ChatCompletionRequest, generations: list[Generation]) -> p.ChatCompletionResponse:
        text, reason = await self._collect(generations[0])
        return p.ChatCompletionResponse(
            id=p.new_id("chatcmpl"), created=p.now(), model=self.model_name,
            choices=[p.ChatChoice(index=0, message=p.AssistantMessage(content=text), finish_reason=reason)],
            usage=self._account(generations, "chat"),
        )

    async def _collect(self, generation: Generation) -> tuple[str, str | None]:
        parts: list[str] = []
        reason: str | None = None
        async for delta, finish in self._events(generation):
            parts.append(delta)
            reason = finish or reason
        return "".join(parts), reason

    async def stream_completion(self, req: p.CompletionRequest, generations: list[Generation]) -> AsyncIterator[str]:
        rid, created = p.new_id("cmpl"), p.now()

        def chunk(index: int, text: str, reason: str | None) -> str:
            return p.CompletionResponse(
                id=rid, created=created, model=self.model_name,
                choices=[p.CompletionChoice(text=text, index=index, finish_reason=reason)],
            ).model_dump_json(exclude={"usage"})

        async for index, delta, reason in _merge([self._events(j) for j in generations]):
            yield chunk(index, delta, reason)
        usage = self._account(generations, "completions")
        if req.stream_options and req.stream_options.include_usage:
            yield p.CompletionResponse(id=rid, created=created, model=self.model_name, choices=[], usage=usage).model_dump_json()

    async def stream_chat(self, req: p.ChatCompletionRequest, generations: list[Generation]) -> AsyncIterator[str]:
        rid, created = p.new_id("chatcmpl"), p.now()

        def chunk(delta: p.Delta, reason: str | None) -> str:
            return p.ChatCompletionChunk(
                id=rid, created=created, model=self.model_name,
                choices=[p.ChatChunkChoice(index=0, delta=delta, finish_reason=reason)],
            ).model_dump_json(exclude={"usage"})

        yield chunk(p.Delta(role="assistant", content=""), None)
        async for delta, reason in self._events(generations[0]):
            if reason:
                if delta:
                    yield chunk(p.Delta(content=delta), None)
                yield chunk(p.Delta(), reason)
            else:
                yield chunk(p.Delta(content=delta), None)
        usage = self._account(generations, "chat")
        if req.stream_options and req.stream_options.include_usage:
            yield p.ChatCompletionChunk(id=rid, created=created, model=self.model_name, choices=[], usage=usage).model_dump_json()

    # ---------------------------------------------------------------- embeddings
    async def embeddings(self, req: p.EmbeddingRequest) -> p.EmbeddingResponse:
        self.check_model(req.model)
        self._need("embed", "/v1/embeddings")
        if req.dimensions is not None:
            raise RequestError("dimensions is not supported by this server; leave it unset.", param="dimensions", code="unsupported_parameter")
        inputs = await self._prompts(req.input, "input")
        limit = self.engine.max_model_len
        for ids in inputs:
            if len(ids) > limit:
                raise RequestError(
                    f"This model's maximum context length is {limit} tokens; an input has {len(ids)}.",
                    param="input", code="context_length_exceeded",
                )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        ticket = Ticket(notify=lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev), timeout=self.request_timeout, inputs=inputs)
        self.scheduler.submit(ticket)
        try:
            ev = await asyncio.wait_for(queue.get(), timeout=self.request_timeout + 1.0)
        except asyncio.TimeoutError:
            raise RequestTimeout(self.request_timeout) from None
        finally:
            self.scheduler.cancel(ticket)
        if ev.kind == "error":
            raise ev.value
        tokens = sum(len(i) for i in inputs)
        self.metrics.prompt_tokens.inc(tokens)
        data = [p.EmbeddingData(embedding=_encode_vector(v, req.encoding_format), index=i) for i, v in enumerate(ev.value)]
        return p.EmbeddingResponse(data=data, model=self.model_name, usage=p.Usage(prompt_tokens=tokens, total_tokens=tokens))


def _stops(stop: p.Stop) -> list[str]:
    """The stop strings (their number and length are bounded by the request model)."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _encode_vector(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def _merge(streams: list[AsyncIterator[tuple[str, str | None]]]) -> AsyncIterator[tuple[int, str, str | None]]:
    """Interleave several (delta, reason) streams as (index, delta, reason)."""
    if len(streams) == 1:
        async for delta, reason in streams[0]:
            yield 0, delta, reason
        return
    queue: asyncio.Queue[tuple[int, Any, Any]] = asyncio.Queue()

    async def pump(i: int, s: AsyncIterator[tuple[str, str | None]]) -> None:
        try:
            async for delta, reason in s:
                await queue.put((i, delta, reason))
            await queue.put((i, None, StopAsyncIteration))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put((i, None, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        live = len(tasks)
        while live:
            i, delta, reason = await queue.get()
            if reason is StopAsyncIteration:
                live -= 1
            elif isinstance(reason, Exception):
                raise reason
            else:
                yield i, delta, reason
    finally:
        for t in tasks:
            t.cancel()
