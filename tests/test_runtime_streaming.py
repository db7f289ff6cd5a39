"""From the device thread to a stream: events reach the event loop in order with one wake-up per
burst, tokens that arrived together go out as one delta, and the watchdog only fires for a
sequence that never ends."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from runtime.scheduler import Event, Scheduler, Ticket
from runtime.engine_base import SamplingParams, Sequence
from runtime.engine_transformers import TransformersEngine
from runtime.errors import RequestError, RequestTimeout
from runtime.metrics import Metrics
from runtime.serving import Generation, Mailbox, TextStream
from runtime.serving import Serving
from runtime.settings import ServeSettings
from runtime_helpers import tiny_llama  # noqa: F401


def test_a_burst_of_events_from_another_thread_arrives_in_order_with_few_wake_ups() -> None:
    async def main() -> tuple[list[list[int]], int]:
        loop = asyncio.get_running_loop()
        mailbox = Mailbox(loop)
        wake_ups = 0
        real = mailbox._deliver

        def counted() -> None:
            nonlocal wake_ups
            wake_ups += 1
            real()

        mailbox._deliver = counted  # type: ignore[method-assign]
        queues: list[asyncio.Queue[Event]] = [asyncio.Queue() for _ in range(16)]

        def device_thread() -> None:  # 200 "steps" of 16 streams, as the scheduler posts them
            for step in range(200):
                for q in queues:
                    mailbox.post(q, Event("token", step))

        thread = threading.Thread(target=device_thread)
        thread.start()
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(0.05)
        return [[q.get_nowait().value for _ in range(q.qsize())] for q in queues], wake_ups

    received, wake_ups = asyncio.run(main())
    assert received == [list(range(200))] * 16
    assert 1 <= wake_ups < 200 * 16


@pytest.fixture(scope="module")
def service(tiny_llama: Path) -> Serving:
    engine = TransformersEngine(ServeSettings(model=str(tiny_llama), dtype="float32"))
    engine.load()
    scheduler = Scheduler(engine, max_batch_size=4, max_queue=8, max_wait_s=0.0, metrics=Metrics())
    return Serving(engine, scheduler, Metrics(), model_name="tiny", request_timeout=5.0)


def generation_with(service: Serving, events: list[Event], stops: list[str] | None = None) -> Generation:
    ticket = Ticket(notify=lambda ev: None, timeout=5.0, stream_tokens=True)
    ticket.seq = Sequence(prompt_ids=[1], params=SamplingParams(max_tokens=8))
    queue: asyncio.Queue[Event] = asyncio.Queue()
    for ev in events:
        queue.put_nowait(ev)
    return Generation(ticket, queue, TextStream(service.engine.decode, stops or []), 1)


async def collect(service: Serving, generation: Generation) -> list[tuple[str, str | None]]:
    return [item async for item in service._events(generation)]


def test_tokens_that_arrived_together_go_out_as_one_delta(service: Serving) -> None:
    ids = service.engine.encode("Hello world! How are you today?")[:6]
    generation = generation_with(service, [Event("token", t) for t in ids] + [Event("done", "length")])
    out = asyncio.run(collect(service, generation))
    assert out == [(service.engine.decode(ids), "length")]


def test_nothing_after_the_end_is_read(service: Serving) -> None:
    """A watchdog event queued after "done" (it fired while the loop was busy) changes nothing."""
    ids = service.engine.encode("Hello world")
    generation = generation_with(service, [Event("token", t) for t in ids] + [Event("done", "stop"), Event("error", RequestTimeout(5.0))])
    assert asyncio.run(collect(service, generation)) == [(service.engine.decode(ids), "stop")]


def test_an_error_after_some_tokens_delivers_them_first(service: Serving) -> None:
    ids = service.engine.encode("Hello world")
    generation = generation_with(service, [Event("token", t) for t in ids] + [Event("error", RequestError("gone", status=503))])
    seen: list[tuple[str, str | None]] = []

    async def run() -> None:
        async for item in service._events(generation):
            seen.append(item)

    with pytest.raises(RequestError):
        asyncio.run(run())
    assert seen == [(service.engine.decode(ids), None)]


def test_a_stop_string_inside_a_burst_ends_the_text_before_it(service: Serving) -> None:
    ids = service.engine.encode("Hello world! How are you today?")
    generation = generation_with(service, [Event("token", t) for t in ids] + [Event("done", "length")], stops=["How"])
    out = asyncio.run(collect(service, generation))
    assert out == [(service.engine.decode(ids).split("How")[0], "stop")]


def test_the_watchdog_ends_a_sequence_the_device_never_answers(service: Serving) -> None:
    """The scheduler is not running here, so nothing is ever posted: one second after its
    timeout the request gets a timeout instead of waiting forever."""
    stuck = Serving(service.engine, service.scheduler, Metrics(), model_name="tiny", request_timeout=0.05)

    async def main() -> None:
        generation = stuck._submit([1, 2, 3], SamplingParams(max_tokens=4), [], True)
        with pytest.raises(RequestTimeout):
            await asyncio.wait_for(collect(stuck, generation), timeout=30)

    asyncio.run(main())
