"""Dynamic batching: a bounded queue in front of one worker thread that owns the device.

The worker waits for the first request, then up to ``max_wait`` for the batch to fill to
``max_batch_size`` (TorchServe / Ray Serve semantics), and starts decoding. While a batch runs,
requests that arrive join it between two steps and finished, cancelled or timed-out ones leave
it, so a batch never waits for its slowest member (iteration-level scheduling). Beyond
``max_queue`` waiting requests, :meth:`Scheduler.submit` raises :class:`QueueFull` (HTTP 429).

One request's failure is its own. A sequence the engine fails on (its sampling raised, say)
leaves the batch with the error and the others go on. When a whole forward pass fails for a
reason other than memory, the batch is rebuilt one sequence at a time, each prefilled alone with
its tokens so far: the ones that fail alone get the error, the others go on together. A request
that was in ``MAX_BATCH_FAILURES`` failed batches fails too, so a fault that only shows in
company cannot loop forever.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from runtime.engine_base import Engine, Sequence
from runtime.errors import QueueFull, RequestError, RequestTimeout, SequenceFailed, ShuttingDown, is_out_of_memory, one_line
from runtime.metrics import Metrics

log = logging.getLogger("runtime.scheduler")

MAX_BATCH_FAILURES = 2


@dataclass
class Event:
    kind: str  # "token", "done", "embedding", "error"
    value: Any = None


@dataclass(eq=False)
class Ticket:
    """One request's place in the scheduler. ``notify`` is called from the worker thread."""

    notify: Callable[[Event], None]
    timeout: float
    seq: Sequence | None = None  # generation
    inputs: list[list[int]] | None = None  # embeddings
    stream_tokens: bool = False
    arrival: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    cancelled: bool = False
    stopped_early: bool = False  # ended by a stop string, not by the client
    batch_failures: int = 0  # failed forward passes this request was part of

    @property
    def deadline(self) -> float:
        return self.arrival + self.timeout

    @property
    def size(self) -> int:
        return len(self.inputs) if self.inputs is not None else 1


class Scheduler:
    def __init__(self, engine: Engine, *, max_batch_size: int, max_queue: int, max_wait_s: float, metrics: Metrics):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self._waiting: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._future: Future[None] | None = None
        self._avg_request_s = 1.0
        self.failure: str | None = None  # why the device loop stopped, if it did
        self._batch: Any = None  # the running batch (seen by the guard if the loop dies)

    # ---------------------------------------------------------------- caller side
    def start(self, executor: Executor | None = None) -> None:
        """Run the device loop: on ``executor`` (the thread that loaded the model) when given.

        All device work should stay on the thread that loaded the model: on CPUs, torch run
        from a second thread once another has used it went at half speed in our measurements
        (docs/performance.md)."""
        target = self._guard(self._run_generate if self.engine.task == "generate" else self._run_embed)
        if executor is not None:
            self._future = executor.submit(target)
            return
        self._thread = threading.Thread(target=target, name="device-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._future is not None:
            with contextlib.suppress(FutureTimeout):
                self._future.result(timeout=30)
        for ticket in self._drain():
            ticket.notify(Event("error", ShuttingDown()))

    def submit(self, ticket: Ticket) -> None:
        with self._cond:
            if self._stopping:
                raise ShuttingDown()
            if len(self._waiting) >= self.max_queue:
                self.metrics.rejected.inc()
                raise QueueFull(self.retry_after())
            self._waiting.append(ticket)
            self.metrics.queue_depth.set(len(self._waiting))
            self._cond.notify()

    def cancel(self, ticket: Ticket, *, stop_string: bool = False) -> None:
        """The client went away (or a stop string ended the text): free its place at the next step."""
        ticket.stopped_early = ticket.stopped_early or stop_string
        ticket.cancelled = True
        with self._cond:
            self._cond.notify()

    def retry_after(self) -> int:
        """Seconds until the queue has probably drained by one batch."""
        return max(1, math.ceil(self._avg_request_s))

    # ---------------------------------------------------------------- worker side
    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a bug: keep the reason, fail liveness (the pod restarts)
                log.exception("the device worker stopped")
                self.failure = one_line(exc)
                running = [s.tag for s in self._batch.seqs] if self._batch is not None else []
                for ticket in running + self._drain():
                    ticket.notify(Event("error", RequestError("The server's device worker stopped.", status=503, type="service_unavailable")))
        return run

    def _drain(self) -> list[Ticket]:
        with self._cond:
            out = list(self._waiting)
            self._waiting.clear()
            self.metrics.queue_depth.set(0)
        return out

    def _wait_for_work(self, busy: bool) -> bool:
        """Under the lock: block until there is something to do; False when stopping."""
        while not self._stopping and not self._waiting and not busy:
            self._cond.wait()
        if self._stopping:
            return False
        if not busy and self._waiting:
            fill_by = self._waiting[0].arrival + self.max_wait_s
            while not self._stopping and sum(t.size for t in self._waiting) < self.max_batch_size:
                remaining = fill_by - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        return not self._stopping

    def _take(self, room: int) -> list[Ticket]:
        """Under the lock: up to ``room`` live waiting requests (the rest stay queued)."""
        taken: list[Ticket] = []
        now = time.monotonic()
        used = 0
        while self._waiting:
            ticket = self._waiting[0]
            if ticket.cancelled:
                self._waiting.popleft()
                self.metrics.cancelled.inc()
                continue
            if now > ticket.deadline:
                self._waiting.popleft()
                self.metrics.timed_out.inc()
                ticket.notify(Event("error", RequestTimeout(ticket.timeout)))
                continue
            if taken and used + ticket.size > room:
                break
            if not taken and used + ticket.size > room and room < self.max_batch_size:
                break
            taken.append(self._waiting.popleft())
            used += ticket.size
            if used >= room:
                break
        self.metrics.queue_depth.set(len(self._waiting))
        return taken

    def _run_generate(self) -> None:
        engine = self.engine
        batch = self._batch = engine.new_batch()
        while True:
            with self._cond:
                if not self._wait_for_work(busy=bool(batch.seqs)):
                    break
                new = self._take(self.max_batch_size - len(batch.seqs))
            batch, stepped, tokens = self._advance(batch, new)
            self._batch = batch
            if not stepped:
                continue
            self.metrics.batch_size.observe(len(stepped))
            self.metrics.running.set(len(batch.seqs))
            if engine.oom_splits:
                self.metrics.oom_splits.inc(engine.oom_splits)
                engine.oom_splits = 0
            now = time.monotonic()
            leaving: list[Sequence] = []
            for ticket, token in zip(stepped, tokens):
                seq = ticket.seq
                assert seq is not None
                if ticket.first_token_at is None:
                    ticket.first_token_at = now
                reason = seq.append(token, engine.eos_token_ids, engine.max_model_len)
                if reason == "error":
                    leaving.append(seq)
                    ticket.notify(Event("error", SequenceFailed(seq.error or "unknown")))
                    continue
                if ticket.stream_tokens and not ticket.cancelled:
                    ticket.notify(Event("token", token))
                if reason:
                    leaving.append(seq)
                    ticket.notify(Event("done", reason))
                    self._avg_request_s = 0.9 * self._avg_request_s + 0.1 * (now - ticket.arrival)
            for seq in batch.seqs:
                ticket = seq.tag
                if seq.finished:
                    continue
                if ticket.cancelled:
                    leaving.append(seq)
                    if not ticket.stopped_early:
                        self.metrics.cancelled.inc()
                elif now > ticket.deadline:
                    leaving.append(seq)
                    self.metrics.timed_out.inc()
                    ticket.notify(Event("error", RequestTimeout(ticket.timeout)))
            if leaving:
                batch.remove(leaving)
                self.metrics.running.set(len(batch.seqs))
        for seq in batch.seqs:
            seq.tag.notify(Event("error", ShuttingDown()))

    def _advance(self, batch: Any, new: list[Ticket]) -> tuple[Any, list[Ticket], list[int]]:
        """Join ``new`` to the batch (or step it when there is nothing new): the batch after,
        the tickets that got a token, and their tokens. A failure is contained here."""
        stepped = new if new else [s.tag for s in batch.seqs]
        if not stepped:
            return batch, [], []
        try:
            tokens = batch.add([t.seq for t in new]) if new else batch.step()
            return batch, stepped, tokens
        except Exception as exc:  # noqa: BLE001 - the requests get the error, the server lives on
            everyone = list(({id(s.tag): s.tag for s in batch.seqs} | {id(t): t for t in stepped}).values())
            del batch  # what the old batch held on the device is released before a new one is made
            if not is_out_of_memory(exc) and len(everyone) > 1:
                return self._one_by_one(everyone, exc)
            if len(everyone) > 1:
                self._preempt(everyone)
            else:
                log.warning("a request failed alone: %s", one_line(exc))
                everyone[0].notify(Event("error", _device_error(exc)))
            return self.engine.new_batch(), [], []

    def _one_by_one(self, tickets: list[Ticket], exc: Exception) -> tuple[Any, list[Ticket], list[int]]:
        """A forward pass of several sequences failed: prefill each alone, with its tokens so
        far, into a new batch. The ones that fail alone (or were in too many failed batches)
        get the error; the rest go on, together."""
        log.warning("a batch of %d failed (%s); running each request alone to find which", len(tickets), one_line(exc))
        batch = self.engine.new_batch()
        stepped: list[Ticket] = []
        tokens: list[int] = []
        for ticket in tickets:
            ticket.batch_failures += 1
            if ticket.cancelled:
                continue
            if ticket.batch_failures >= MAX_BATCH_FAILURES:
                ticket.notify(Event("error", _device_error(exc)))
                continue
            try:
                tokens += batch.add([ticket.seq])
            except Exception as alone:  # noqa: BLE001 - this request fails; the others go on
                log.warning("a request failed alone: %s", one_line(alone))
                ticket.notify(Event("error", _device_error(alone)))
                continue
            stepped.append(ticket)
        return batch, stepped, tokens

    def _preempt(self, tickets: list[Ticket]) -> None:
        """The batch ran out of device memory even after splitting (what it keeps between steps
        has outgrown the memory the batch size was probed for): put its requests back at the
        head of the queue, oldest first, each keeping its tokens so far (it is prefilled with
        them when it comes back, and goes on where it stopped), and halve the batch size."""
        self.max_batch_size = max(1, min(self.max_batch_size, len(tickets)) // 2)
        with self._cond:
            self._waiting.extendleft(reversed(tickets))
            self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.preempted.inc(len(tickets))
        self.metrics.max_batch_size.set(self.max_batch_size)
        self.metrics.running.set(0)
        log.warning("out of device memory with %d sequences; they resume in batches of at most %d "
                    "(set --max-batch-size to choose)", len(tickets), self.max_batch_size)

    def _run_embed(self) -> None:
        while True:
            with self._cond:
                if not self._wait_for_work(busy=False):
                    break
                tickets = self._take(self.max_batch_size)
            if not tickets:
                continue
            self._embed(tickets)

    def _embed(self, tickets: list[Ticket]) -> None:
        """Embed the tickets' inputs in one pass; if it fails, each ticket alone (so one bad
        request fails alone)."""
        engine = self.engine
        inputs = [ids for t in tickets for ids in (t.inputs or [])]
        try:
            vectors = engine.embed(inputs)
        except Exception as exc:  # noqa: BLE001 - the requests get the error, the server lives on
            if len(tickets) > 1:
                log.warning("an embedding batch of %d failed (%s); embedding each request alone", len(inputs), one_line(exc))
                for t in tickets:
                    self._embed([t])
                return
            log.warning("an embedding request failed alone: %s", one_line(exc))
            tickets[0].notify(Event("error", _device_error(exc)))
            return
        self.metrics.batch_size.observe(len(inputs))
        if engine.oom_splits:
            self.metrics.oom_splits.inc(engine.oom_splits)
            engine.oom_splits = 0
        start = 0
        now = time.monotonic()
        for t in tickets:
            t.first_token_at = now
            t.notify(Event("embedding", vectors[start : start + t.size]))
            start += t.size


def _device_error(exc: Exception) -> RequestError:
    if is_out_of_memory(exc):
        return RequestError(
            "The device ran out of memory for this request alone; send a shorter prompt or fewer tokens.",
            status=503, type="service_unavailable", code="out_of_memory",
        )
    return SequenceFailed(one_line(exc))
