"""Sampling parameters of the transformers engine, checked against transformers' own logits
processors (the library's code as the reference), and one sequence's sampling failure kept to
that sequence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from runtime.engine_base import SamplingParams, Sequence, generate_all
from runtime.engine_transformers import TransformersEngine, distribution
from runtime.settings import ServeSettings
from runtime_helpers import tiny_llama  # noqa: F401


@pytest.fixture(scope="module")
def engine(tiny_llama: Path) -> TransformersEngine:
    e = TransformersEngine(ServeSettings(model=str(tiny_llama), dtype="float32"))
    e.load()
    return e


def support(probs: torch.Tensor) -> set[int]:
    return set((probs > 0).nonzero().flatten().tolist())


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", [
    (1.0, -1, 1.0, 0.0), (0.7, 5, 1.0, 0.0), (1.3, -1, 0.8, 0.0), (1.0, -1, 1.0, 0.2), (0.5, 20, 0.9, 0.05), (2.0, 1, 1.0, 0.0),
])
def test_the_distribution_is_transformers_warpers_in_vllms_order(temperature: float, top_k: int, top_p: float, min_p: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(300) * 3
    params = SamplingParams(max_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    ours = distribution(logits, params)
    chain = [TemperatureLogitsWarper(temperature)]
    if top_k > 0:
        chain.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        chain.append(TopPLogitsWarper(top_p))
    if min_p > 0:
        chain.append(MinPLogitsWarper(min_p))
    scores = LogitsProcessorList(chain)(torch.zeros(1, 1, dtype=torch.long), logits[None].clone())[0]
    theirs = torch.softmax(scores, dim=-1)
    assert support(ours) == support(theirs)
    assert torch.allclose(ours / ours.sum(), theirs, atol=1e-6)


def test_repetition_penalty_is_transformers_processor(engine: TransformersEngine) -> None:
    torch.manual_seed(1)
    logits = torch.randn(len(engine.tokenizer))
    seq = Sequence(prompt_ids=[3, 5, 5, 9], output_ids=[9, 17], params=SamplingParams(max_tokens=4, repetition_penalty=1.7))
    ours = engine.shape_logits(logits, seq)
    theirs = RepetitionPenaltyLogitsProcessor(1.7)(torch.tensor([[3, 5, 5, 9, 9, 17]]), logits[None].clone())[0]
    assert torch.allclose(ours, theirs)


def test_frequency_and_presence_penalties_follow_openai(engine: TransformersEngine) -> None:
    logits = torch.zeros(len(engine.tokenizer))
    seq = Sequence(prompt_ids=[4], output_ids=[7, 7, 7, 8], params=SamplingParams(max_tokens=9, frequency_penalty=0.5, presence_penalty=1.0))
    row = engine.shape_logits(logits, seq)
    assert row[7] == pytest.approx(-(3 * 0.5 + 1.0)) and row[8] == pytest.approx(-(0.5 + 1.0))
    assert row[4] == 0  # prompt tokens are not penalised (OpenAI, vLLM)
    assert int((row != 0).sum()) == 2


def test_logit_bias_and_min_tokens_shape_the_greedy_choice(engine: TransformersEngine) -> None:
    logits = torch.randn(len(engine.tokenizer))
    seq = Sequence(prompt_ids=[4], params=SamplingParams(max_tokens=9, logit_bias=((11, 100.0),)))
    assert engine.sample_row(logits, seq) == 11
    eos = min(engine.eos_token_ids)
    seq = Sequence(prompt_ids=[4], params=SamplingParams(max_tokens=9, logit_bias=((eos, 100.0),), min_tokens=2))
    assert engine.sample_row(logits, seq) != eos  # barred until two tokens were generated
    seq.output_ids = [5, 6]
    assert engine.sample_row(logits, seq) == eos


@pytest.mark.parametrize("seed", [0, 2**64 - 1, -(2**63), 123456789])
def test_extreme_seeds_and_temperatures_sample_without_error(engine: TransformersEngine, seed: int) -> None:
    logits = torch.randn(len(engine.tokenizer))
    for temperature, top_p in ((1e-300, 1.0), (1e-5, 1.0), (2.0, 1e-300), (2.0, 1.0)):
        a = engine.sample_row(logits, Sequence(prompt_ids=[1], params=SamplingParams(max_tokens=1, temperature=temperature, top_p=top_p, seed=seed)))
        b = engine.sample_row(logits, Sequence(prompt_ids=[1], params=SamplingParams(max_tokens=1, temperature=temperature, top_p=top_p, seed=seed)))
        assert a == b and 0 <= a < len(engine.tokenizer)
    # a repetition penalty that overflows the division still leaves a distribution to draw from
    tiny = SamplingParams(max_tokens=1, temperature=1.0, repetition_penalty=5e-324, seed=seed)
    assert 0 <= engine.sample_row(logits, Sequence(prompt_ids=[1, 2, 3], params=tiny)) < len(engine.tokenizer)
    # below vLLM's threshold a temperature is greedy: no division that overflows
    assert engine.sample_row(logits, Sequence(prompt_ids=[1], params=SamplingParams(max_tokens=1, temperature=1e-300))) == int(logits.argmax())


class FailingRow(TransformersEngine):
    """Sampling raises for sequences whose prompt starts with ``POISON`` once they hold
    ``at`` tokens: a fault inside one sequence's sampling."""

    POISON = [7, 7, 7]

    def __init__(self, settings: ServeSettings, at: int):
        super().__init__(settings)
        self.at = at

    def sample_row(self, logits: torch.Tensor, seq: Sequence) -> int:
        poisoned = seq.prompt_ids[:3] == self.POISON or getattr(seq.tag, "id", None) == "poison"
        if poisoned and len(seq.output_ids) == self.at:
            raise RuntimeError("injected fault")
        return super().sample_row(logits, seq)


def test_a_sequence_whose_sampling_fails_ends_alone_with_the_reason(tiny_llama: Path) -> None:
    engine = FailingRow(ServeSettings(model=str(tiny_llama), dtype="float32"), at=3)
    engine.load()
    prompts = [engine.encode(t) for t in ("one two", "three four five", "six")]
    poisoned = Sequence(prompt_ids=FailingRow.POISON + [9], params=SamplingParams(max_tokens=10, temperature=1.0, seed=1, ignore_eos=True))
    others = [Sequence(prompt_ids=p, params=SamplingParams(max_tokens=10, ignore_eos=True)) for p in prompts]
    finished = list(generate_all(engine, [others[0], poisoned, *others[1:]], batch_size=4))
    assert poisoned.finish_reason == "error" and poisoned.error == "RuntimeError: injected fault"
    assert len(poisoned.output_ids) == 3
    assert all(s.finish_reason == "length" and len(s.output_ids) == 10 for s in others)
    assert len(finished) == 4


def test_the_batch_runner_writes_an_error_row_for_that_record_and_goes_on(tiny_llama: Path, tmp_path: Path) -> None:
    from runtime.batch import run_batch, transformers_backend

    engine = FailingRow(ServeSettings(model=str(tiny_llama), dtype="float32"), at=2)
    engine.load()
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"record {i}"}) + "\n" for i in ("a", "poison", "b")))
    out = tmp_path / "out.jsonl"
    summary = run_batch(transformers_backend(engine, 4), src, out, max_tokens=6, temperature=0.5, progress=False)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["poison"]["error"] == "RuntimeError: injected fault" and rows["poison"]["text"] is None
    assert rows["a"]["text"] is not None and rows["b"]["text"] is not None and "error" not in rows["a"]
    assert summary.failed == 1 and summary.generated == 3
