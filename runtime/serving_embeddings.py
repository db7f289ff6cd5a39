"""``POST /v1/embeddings``: all the inputs of a request go to the scheduler as one ticket, and
come back as floats or base64 little-endian float32."""

from __future__ import annotations

import asyncio
import base64
import struct

from runtime import protocol as p
from runtime.errors import RequestError, RequestTimeout
from runtime.scheduler import Event, Ticket
from runtime.serving import Serving


class ServingEmbeddings(Serving):
    path = "/v1/embeddings"
    task = "embed"

    async def create_embedding(self, req: p.EmbeddingRequest) -> p.EmbeddingResponse:
        self.check_model(req.model)
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


def _encode_vector(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
