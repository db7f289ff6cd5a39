"""What an engine is to the rest of the runtime. Engines know nothing about HTTP.

A generative engine hands out :class:`DecodeBatch` objects: a set of sequences that advance one
token per :meth:`DecodeBatch.step`, that new sequences can join (:meth:`DecodeBatch.add`) and that
finished or abandoned ones leave (:meth:`DecodeBatch.remove`). The scheduler (serving) and the
batch runner (offline) drive them; all calls come from one thread, which owns the device.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.errors import is_out_of_memory

log = logging.getLogger("runtime.engine")

Task = Literal["generate", "embed"]


# Temperatures below this are greedy (as in vLLM): dividing logits by less overflows.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens, applied in vLLM's order: logit bias, penalties and
    ``min_tokens`` on the logits, then temperature, ``top_k``, ``top_p``, ``min_p``."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    top_k: int = -1  # -1 or 0: every token
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # over prompt and output tokens (transformers' and vLLM's rule)
    frequency_penalty: float = 0.0  # over output tokens, times each one's count (OpenAI's rule)
    presence_penalty: float = 0.0  # over output tokens, once each
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_tokens: int = 0  # end-of-sequence tokens are barred until this many were generated

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def plain_argmax(self) -> bool:
        """The next token is the argmax of the model's logits as they are."""
        return self.greedy and not self.logit_bias and self.min_tokens == 0 and (
            self.repetition_penalty == 1.0 and self.frequency_penalty == 0.0 and self.presence_penalty == 0.0
        )


@dataclass(eq=False)
class Sequence:
    """One prompt being generated (or embedded)."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=16))
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    tag: Any = None  # the caller's handle (a request, an input record)
    engine_state: Any = None  # engine-private (a random generator, for example)
    error: str | None = None  # why this sequence alone failed (set by the engine; ends it)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token: int, eos_ids: frozenset[int], max_model_len: int) -> str | None:
        """Record one generated token; return and remember why the sequence ends, if it does
        (``"error"``, without the token, when the engine failed on this sequence)."""
        if self.error is not None:
            self.finish_reason = "error"
            return self.finish_reason
        self.output_ids.append(token)
        if not self.params.ignore_eos and token in eos_ids:
            self.finish_reason = "stop"
        elif len(self.output_ids) >= self.params.max_tokens:
            self.finish_reason = "length"
        elif len(self.prompt_ids) + len(self.output_ids) >= max_model_len:
            self.finish_reason = "length"
        return self.finish_reason


class DecodeBatch(ABC):
    """Sequences advancing together on the device."""

    seqs: list[Sequence]

    @abstractmethod
    def add(self, seqs: list[Sequence]) -> list[int]:
        """Prefill ``seqs`` and join them to the batch; return each one's first token."""

    @abstractmethod
    def step(self) -> list[int]:
        """One decoding step: the next token of every sequence, in ``self.seqs`` order."""

    @abstractmethod
    def remove(self, seqs: Iterable[Sequence]) -> None:
        """Drop sequences (finished, cancelled, timed out), freeing their share of the device."""


class Engine(ABC):
    """A loaded model and its tokenizer."""

    task: Task = "generate"
    max_model_len: int = 2048
    max_batch_size: int = 16
    eos_token_ids: frozenset[int] = frozenset()
    oom_splits: int = 0

    @abstractmethod
    def load(self) -> None: ...

    def close(self) -> None:
        """Release the model and the device memory it holds."""

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    def chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        raise NotImplementedError

    def new_batch(self) -> DecodeBatch:
        raise NotImplementedError

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        raise NotImplementedError


def generate_all(engine: Engine, seqs: list[Sequence], batch_size: int) -> Iterator[Sequence]:
    """Run ``seqs`` to completion in batches of at most ``batch_size``, in the given order,
    refilling the batch as sequences finish; yield each sequence as it finishes.

    If the device runs out of memory with several sequences in the batch (what the batch keeps
    between steps has outgrown the memory), they go back to the front of the line with their
    tokens so far and the batch size is halved; a single sequence that does not fit raises."""
    pending = list(reversed(seqs))
    batch = engine.new_batch()
    while pending or batch.seqs:
        room = batch_size - len(batch.seqs)
        new: list[Sequence] = []
        try:
            if pending and (not batch.seqs or room >= max(1, batch_size // 4)):
                new = [pending.pop() for _ in range(min(room, len(pending)))]
                tokens = batch.add(new)
                new_seqs = new
            else:
                tokens = batch.step()
                new_seqs = list(batch.seqs)
        except Exception as exc:
            back = list(batch.seqs) + new
            if not is_out_of_memory(exc) or len(back) <= 1:
                raise
            batch = engine.new_batch()
            pending.extend(reversed(back))
            batch_size = max(1, min(batch_size, len(back)) // 2)
            log.warning("out of device memory with %d sequences; going on in batches of at most %d", len(back), batch_size)
            continue
        done = [s for s, t in zip(new_seqs, tokens) if s.append(t, engine.eos_token_ids, engine.max_model_len)]
        if done:
            batch.remove(done)
            yield from done
