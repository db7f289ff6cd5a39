"""The engine on a CUDA GPU (skipped without one): half precision, the batch size probed from
free memory, and real out-of-memory errors, induced by capping the process's share of the GPU
(``--gpu-memory-utilization``), split in halves and retried without changing any output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from runtime.engine_base import SamplingParams, Sequence, generate_all
from runtime.engine_transformers import GPU_BATCH_CAP, TransformersEngine
from runtime.settings import ServeSettings
from runtime_helpers import tiny_llama  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPT_TOKENS, BATCH, NEW_TOKENS = 1500, 48, 6


@pytest.fixture(scope="module")
def wide_mlp_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One layer with a wide MLP: a prefill's short-lived activations are several times the
    key/value cache it leaves behind, so a memory cap can sit between the two."""
    from runtime.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("wide-mlp"), layers=1, hidden=256, intermediate=4096, context=2048)


@pytest.fixture(autouse=True)
def uncapped() -> Iterator[None]:
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def load(model: Path, **settings: object) -> TransformersEngine:
    engine = TransformersEngine(ServeSettings(model=str(model), **settings))  # type: ignore[arg-type]
    engine.load()
    return engine


def long_prompts(engine: TransformersEngine) -> list[Sequence]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 500, (BATCH, PROMPT_TOKENS), generator=g).tolist()
    return [Sequence(prompt_ids=p, params=SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)) for p in ids]


def test_loads_in_half_precision_and_probes_a_batch_size(tiny_llama: Path) -> None:
    engine = load(tiny_llama)
    assert engine.device.type == "cuda"
    assert engine.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert next(engine.model.parameters()).dtype == engine.dtype
    assert engine.fast is not None  # the direct decoding step agreed with transformers' in half precision
    assert engine.probed_batch_size == engine.max_batch_size
    assert 1 <= engine.max_batch_size <= GPU_BATCH_CAP
    figures = engine.probe_figures
    assert figures["per_sequence_bytes"] > 0 and figures["available_bytes"] > 0
    engine.close()


def test_a_smaller_share_of_the_gpu_probes_a_smaller_batch(wide_mlp_llama: Path) -> None:
    total = torch.cuda.mem_get_info()[1]
    roomy = load(wide_mlp_llama, max_model_len=2048)
    roomy_size, per_seq = roomy.max_batch_size, roomy.probe_figures["per_sequence_bytes"]
    roomy.close()
    # A share that leaves room for about ten probe-sized sequences beyond what is held now.
    share = (torch.cuda.memory_reserved() + 12 * per_seq) / total
    tight = load(wide_mlp_llama, max_model_len=2048, gpu_memory_utilization=share)
    assert 1 <= tight.max_batch_size < roomy_size
    assert tight.max_batch_size <= 12
    tight.close()


def uncapped_run(engine: TransformersEngine) -> tuple[list[Sequence], int]:
    """The long prompts with the whole GPU: the sequences and the peak above what was held."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seqs = long_prompts(engine)
    list(generate_all(engine, seqs, BATCH))
    return seqs, torch.cuda.max_memory_allocated() - base


def cap_at(extra: int) -> int:
    """Limit the process to what it holds now plus ``extra`` bytes; returns the cap."""
    torch.cuda.empty_cache()
    cap = torch.cuda.memory_reserved() + extra
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.mem_get_info()[1])
    return cap


def test_a_batch_that_runs_out_of_memory_is_split_and_gives_the_same_tokens(wide_mlp_llama: Path) -> None:
    engine = load(wide_mlp_llama, dtype="float32", max_batch_size=BATCH)
    expected, peak = uncapped_run(engine)
    assert engine.oom_splits == 0
    kv_bytes = 2 * BATCH * (PROMPT_TOKENS + NEW_TOKENS) * 256 * 4  # keys and values, one layer, float32

    # Cap the process a little above what the split run needs and well below the whole batch's peak.
    assert max(peak // 2, 4 * kv_bytes) < peak, "the model's activations do not outweigh its cache"
    cap_at(max(peak // 2, 4 * kv_bytes))
    got = long_prompts(engine)
    list(generate_all(engine, got, BATCH))
    assert engine.oom_splits > 0
    assert [s.output_ids for s in got] == [s.output_ids for s in expected]
    assert all(len(s.output_ids) == NEW_TOKENS for s in got)
    engine.close()


def test_out_of_memory_splits_in_half_precision_finish_every_sequence(wide_mlp_llama: Path) -> None:
    engine = load(wide_mlp_llama, max_batch_size=BATCH)
    _, peak = uncapped_run(engine)
    cap_at(peak // 2)
    got = long_prompts(engine)
    done = list(generate_all(engine, got, BATCH))
    assert engine.oom_splits > 0 and len(done) == BATCH
    assert all(len(s.output_ids) == NEW_TOKENS for s in got)
    engine.close()
