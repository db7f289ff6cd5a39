"""``POST /v1/completions``: each prompt of a request is one sequence; streamed, their chunks
interleave, each naming its prompt's index."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from runtime import protocol as p
from runtime.ratelimit import Quota
from runtime.serving import Generation, Serving, stop_strings


class ServingCompletions(Serving):
    path = "/v1/completions"

    async def create_completion(self, req: p.CompletionRequest, request: Request) -> Response:
        quota: Quota | None = getattr(request.state, "quota", None)  # the caller's rate limit (runtime/ratelimit.py)
        generations = await self._start(req, quota)
        if req.stream:
            return self._sse_response(self._chunks(req, generations), generations)
        return await self._json_response(request, self._result(req, generations), generations, quota)

    async def _start(self, req: p.CompletionRequest, quota: Quota | None = None) -> list[Generation]:
        self.check_model(req.model)
        self._check_supported(req)
        prompts = await self._prompts(req.prompt)
        params = [self._sampling(len(ids), req.max_tokens, req) for ids in prompts]
        return self._submit_all(prompts, params, stop_strings(req.stop), req.stream, quota)

    async def _result(self, req: p.CompletionRequest, generations: list[Generation]) -> p.CompletionResponse:
        results = await asyncio.gather(*(self._collect(j) for j in generations))
        choices = [p.CompletionChoice(text=t, index=i, finish_reason=r) for i, (t, r) in enumerate(results)]
        return p.CompletionResponse(
            id=p.new_id("cmpl"), created=p.now(), model=self.model_name, choices=choices, usage=self._account(generations)
        )

    async def _chunks(self, req: p.CompletionRequest, generations: list[Generation]) -> AsyncIterator[str]:
        rid, created = p.new_id("cmpl"), p.now()

        def chunk(index: int, text: str, reason: str | None) -> str:
            return p.CompletionResponse(
                id=rid, created=created, model=self.model_name,
                choices=[p.CompletionChoice(text=text, index=index, finish_reason=reason)],
            ).model_dump_json(exclude={"usage"})

        async for index, delta, reason in _merge([self._events(j) for j in generations]):
            yield chunk(index, delta, reason)
        usage = self._account(generations)
        if req.stream_options and req.stream_options.include_usage:
            yield p.CompletionResponse(id=rid, created=created, model=self.model_name, choices=[], usage=usage).model_dump_json()


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
