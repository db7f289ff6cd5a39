"""The transformers engine without HTTP: batching that does not change results, joins and
leaves between steps, and out-of-memory batches split in halves and retried."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runtime.engine_base import SamplingParams, Sequence, generate_all
from runtime.engine_transformers import TransformersEngine
from runtime.errors import is_out_of_memory as is_oom
from runtime.serving import TextStream
from runtime.settings import ServeSettings
from runtime_helpers import tiny_encoder, tiny_llama  # noqa: F401

PROMPTS = ["Hello world", "The quick brown fox jumps over", "A", "Kubernetes and OpenShift schedule pods onto nodes"]


@pytest.fixture(scope="module", params=["direct-decode", "transformers-decode"])
def engine(tiny_llama: Path, request: pytest.FixtureRequest) -> TransformersEngine:
    """Every test runs with both decoding steps: the direct one (runtime/fast_decode.py) and
    transformers' modules. float32 on a GPU too: these tests compare tokens exactly (half
    precision: test_runtime_gpu.py)."""
    direct = request.param == "direct-decode"
    e = TransformersEngine(ServeSettings(model=str(tiny_llama), dtype="float32", direct_decode=direct))
    e.load()
    assert (e.fast is not None) == direct
    return e


@pytest.fixture(scope="module")
def encoder(tiny_encoder: Path) -> TransformersEngine:
    e = TransformersEngine(ServeSettings(model=str(tiny_encoder)))
    e.load()
    return e


def seqs(engine: TransformersEngine, n: int = 12) -> list[Sequence]:
    return [Sequence(prompt_ids=engine.encode(p), params=SamplingParams(max_tokens=n, ignore_eos=True)) for p in PROMPTS]


def reference(engine: TransformersEngine, n: int = 12) -> list[list[int]]:
    out = []
    for p in PROMPTS:
        ids = torch.tensor([engine.encode(p)], device=engine.device)
        gen = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=engine.pad_id)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def test_loads_in_float32_with_context_and_default_batch(engine: TransformersEngine) -> None:
    assert engine.task == "generate" and engine.dtype == torch.float32 and engine.max_model_len == 512
    if engine.device.type == "cpu":
        assert engine.max_batch_size == 32


def test_padded_batches_give_the_same_tokens_as_one_at_a_time(engine: TransformersEngine) -> None:
    expected = reference(engine)
    for batch_size in (1, 2, 4):
        s = seqs(engine)
        list(generate_all(engine, s, batch_size))
        assert [x.output_ids for x in s] == expected


def test_a_sequence_can_join_and_leave_a_running_batch(engine: TransformersEngine) -> None:
    expected = reference(engine)
    first, _, _, last = seqs(engine)
    batch = engine.new_batch()
    first.append(batch.add([first])[0], engine.eos_token_ids, engine.max_model_len)
    for _ in range(4):
        first.append(batch.step()[0], engine.eos_token_ids, engine.max_model_len)
    last.append(batch.add([last])[0], engine.eos_token_ids, engine.max_model_len)
    while batch.seqs:
        for s, t in zip(list(batch.seqs), batch.step()):
            if s.append(t, engine.eos_token_ids, engine.max_model_len):
                batch.remove([s])
    assert first.output_ids == expected[0] and last.output_ids == expected[3]


def test_out_of_memory_batches_are_split_in_halves_and_retried(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reference(engine)
    sizes: list[int] = []
    decode_sizes: list[int] = []

    def fits_two(real, rows_of, seen):  # type: ignore[no-untyped-def]
        def run(*args):  # type: ignore[no-untyped-def]
            seen.append(rows_of(args))
            if rows_of(args) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(*args)
        return run

    monkeypatch.setattr(engine, "_forward", fits_two(engine._forward, lambda a: a[0].shape[0], sizes))
    if engine.fast is not None:  # decoding steps do not go through _forward then
        monkeypatch.setattr(engine.fast, "step", fits_two(engine.fast.step, lambda a: a[0].shape[0], decode_sizes))
    engine.oom_splits = 0
    s = seqs(engine)
    list(generate_all(engine, s, 4))
    assert [x.output_ids for x in s] == expected
    steps = decode_sizes if engine.fast is not None else sizes
    assert engine.oom_splits > 0 and 4 in sizes and max(sizes) == 4 and 4 in steps and 2 in steps


def test_out_of_memory_on_a_single_sequence_is_raised(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*args):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(engine, "_forward", no_memory)
    with pytest.raises(RuntimeError):
        list(generate_all(engine, seqs(engine)[:1], 1))


def test_other_errors_are_not_mistaken_for_out_of_memory() -> None:
    assert is_oom(torch.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA out of memory"))
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("out of memory"))


def test_embeddings_split_on_out_of_memory_too(encoder: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = [encoder.encode(p) for p in PROMPTS]
    expected = torch.tensor(encoder.embed(inputs))
    real_model = encoder.model

    class Picky(torch.nn.Module):
        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            if input_ids.shape[0] > 1:
                raise torch.OutOfMemoryError("out of memory")
            return real_model(input_ids=input_ids, attention_mask=attention_mask)

    monkeypatch.setattr(encoder, "model", Picky())
    got = torch.tensor(encoder.embed(inputs))
    assert torch.allclose(got, expected, atol=1e-5)


def test_text_stream_releases_text_and_honours_stop_strings(engine: TransformersEngine) -> None:
    ids = engine.encode("Hello world! How are you today?")
    stream = TextStream(engine.decode, [])
    assert "".join(stream.push(t) for t in ids) + stream.finish() == engine.decode(ids)
    stream = TextStream(engine.decode, ["How"])
    out = "".join(stream.push(t) for t in ids)
    assert stream.stopped and out + stream.finish() == "Hello world! "


def test_the_cache_grows_in_place_past_its_first_room_without_changing_tokens(engine: TransformersEngine) -> None:
    """80 new tokens cross the room the first growth leaves (64 positions beyond the prompt)."""
    expected = reference(engine, n=80)
    s = seqs(engine, n=80)
    list(generate_all(engine, s, 4))
    assert [x.output_ids for x in s] == expected


def test_sliding_window_models_give_the_same_tokens_as_generate(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from runtime.engine_transformers import uses_sliding_window

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    config = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, sliding_window=8,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(tmp_path / "mistral")
    tok.save_pretrained(tmp_path / "mistral")
    assert uses_sliding_window(config) and not uses_sliding_window(engine_config(tiny_llama))
    e = TransformersEngine(ServeSettings(model=str(tmp_path / "mistral"), dtype="float32"))
    e.load()
    expected = reference(e, n=20)
    s = seqs(e, n=20)
    list(generate_all(e, s, 4))
    assert [x.output_ids for x in s] == expected


def engine_config(path: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


@pytest.mark.parametrize("joined", [False, True])
def test_a_step_that_grows_the_cache_lets_each_old_buffer_go_at_once(
    engine: TransformersEngine, joined: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holding the old buffers until the step ends would need the whole cache twice over: the
    first layer's old buffers must be gone while the later layers are still growing."""
    import weakref

    from runtime.engine_transformers import GrowingLayer

    first, second = seqs(engine)[:2]
    batch = engine.new_batch()
    batch.add([first])
    if joined:  # a sequence joining a running batch makes new tensors by concatenation
        batch.step()
        batch.add([second])
    k, v = batch.rows.kv[0]
    old = [weakref.ref(t._base if t._base is not None else t) for t in (k, v)]
    del k, v
    alive: list[int] = []
    real_update = GrowingLayer.update

    def spy(self, key_states, value_states, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real_update(self, key_states, value_states, *args, **kwargs)
        alive.append(sum(ref() is not None for ref in old))
        return out

    monkeypatch.setattr(GrowingLayer, "update", spy)
    batch.step()
    assert len(alive) == len(engine.model.model.layers) and alive == [0] * len(alive)


@pytest.fixture
def room_for_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device whose memory holds the caches of four sequences for their first three tokens and
    of two after that: a step with more runs out of memory, whatever the split (what caches
    outgrowing the probed memory look like)."""
    from runtime.engine_transformers import TransformersBatch

    real_step = TransformersBatch.step

    def step(self):  # type: ignore[no-untyped-def]
        if len(self.seqs) > 2 and max(len(s.output_ids) for s in self.seqs) >= 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real_step(self)

    monkeypatch.setattr(TransformersBatch, "step", step)


def test_a_batch_out_of_memory_goes_on_in_smaller_batches_with_the_same_tokens(engine: TransformersEngine, room_for_two: None) -> None:
    """The batch runner: the four sequences stop at three tokens and go on two at a time,
    prefilled with their tokens so far, to the tokens of an uninterrupted run."""
    expected = reference(engine)
    s = seqs(engine)
    done = list(generate_all(engine, s, 4))
    assert len(done) == 4 and [x.output_ids for x in s] == expected


def test_the_server_puts_preempted_requests_back_and_they_resume(engine: TransformersEngine, room_for_two: None) -> None:
    """The scheduler: 4 requests admitted together, then after a few steps memory runs out; they
    go back to the queue with their tokens and finish with the tokens of an uninterrupted run."""
    import threading

    from runtime.scheduler import Scheduler, Ticket
    from runtime.metrics import Metrics

    expected = reference(engine)
    metrics = Metrics()
    scheduler = Scheduler(engine, max_batch_size=4, max_queue=16, max_wait_s=0.5, metrics=metrics)
    finished = threading.Semaphore(0)
    events: list[list[object]] = [[] for _ in PROMPTS]

    def notify(i: int):  # type: ignore[no-untyped-def]
        def on(event):  # type: ignore[no-untyped-def]
            events[i].append((event.kind, event.value))
            if event.kind in ("done", "error"):
                finished.release()
        return on

    tickets = [Ticket(notify=notify(i), timeout=60, seq=s, stream_tokens=True) for i, s in enumerate(seqs(engine))]
    for t in tickets:
        t.seq.tag = t  # as the service does
        scheduler.submit(t)
    scheduler.start()
    try:
        for _ in tickets:
            assert finished.acquire(timeout=60)
    finally:
        scheduler.stop()
    assert [t.seq.output_ids for t in tickets] == expected
    assert [[v for k, v in e if k == "token"] for e in events] == expected  # each token streamed once
    assert all(e[-1] == ("done", "length") for e in events)
    assert metrics.preempted._value.get() >= 4 and scheduler.max_batch_size == 2


def test_joining_rows_releases_each_layer_of_the_parts_as_it_goes(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Joining (a sequence joining a batch, halves rejoined after a split) must not hold the parts
    and the result whole at once: the parts' first layer is gone before the second is copied."""
    import weakref

    from runtime import engine_transformers as et

    first, second = seqs(engine)[:2]
    a, b = engine.prefill([first.prompt_ids]), engine.prefill([second.prompt_ids])
    first_layer = [weakref.ref(t) for part in (a, b) for t in part.kv[0]]
    second_layer = {id(t) for part in (a, b) for t in part.kv[1]}
    alive_when_second_copied: list[int] = []
    real_pad = et._pad_left

    def pad(t, length, dim, value=0):  # type: ignore[no-untyped-def]
        if id(t) in second_layer:
            alive_when_second_copied.append(sum(ref() is not None for ref in first_layer))
        return real_pad(t, length, dim, value)

    monkeypatch.setattr(et, "_pad_left", pad)
    joined = et.Rows.concat([a, b])
    del a, b
    assert len(joined) == 2 and alive_when_second_copied and alive_when_second_copied == [0] * len(alive_when_second_copied)
