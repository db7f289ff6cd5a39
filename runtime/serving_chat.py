"""``POST /v1/chat/completions``: the messages through the model's chat template, one sequence;
streamed, the role comes first and the finish reason in a chunk of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from runtime import protocol as p
from runtime.errors import RequestError, one_line
from runtime.ratelimit import Quota
from runtime.serving import Generation, Serving, stop_strings


class ServingChat(Serving):
    path = "/v1/chat/completions"

    async def create_chat_completion(self, req: p.ChatCompletionRequest, request: Request) -> Response:
        quota: Quota | None = getattr(request.state, "quota", None)  # the caller's rate limit (runtime/ratelimit.py)
        generations = await self._start(req, quota)
        if req.stream:
            return self._sse_response(self._chunks(req, generations), generations)
        return await self._json_response(request, self._result(req, generations), generations, quota)

    async def _start(self, req: p.ChatCompletionRequest, quota: Quota | None = None) -> list[Generation]:
        self.check_model(req.model)
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
        params = self._sampling(len(ids), max_tokens, req, prompt_param="messages")
        return self._submit_all([ids], [params], stop_strings(req.stop), req.stream, quota)

    def _chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            return self.engine.chat_ids(messages)
        except ValueError as exc:
            raise RequestError(one_line(exc).removeprefix("ValueError: "), param="messages") from None
        except Exception as exc:  # noqa: BLE001 - a chat template that rejects these messages
            raise RequestError(f"The chat template rejected these messages: {one_line(exc)}", param="messages") from None

    async def _result(self, req: p.ChatCompletionRequest, generations: list[Generation]) -> p.ChatCompletionResponse:
        text, reason = await self._collect(generations[0])
        return p.ChatCompletionResponse(
            id=p.new_id("chatcmpl"), created=p.now(), model=self.model_name,
            choices=[p.ChatChoice(index=0, message=p.AssistantMessage(content=text), finish_reason=reason)],
            usage=self._account(generations),
        )

    async def _chunks(self, req: p.ChatCompletionRequest, generations: list[Generation]) -> AsyncIterator[str]:
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
        usage = self._account(generations)
        if req.stream_options and req.stream_options.include_usage:
            yield p.ChatCompletionChunk(id=rid, created=created, model=self.model_name, choices=[], usage=usage).model_dump_json()
