"""The direct decoding step (runtime/fast_decode.py): the same tokens as transformers' own
``generate`` for every family it takes (grouped-query attention, projection biases, padding,
joins), and transformers' path for everything else, or when the load-time check disagrees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from runtime.engine_base import SamplingParams, Sequence, generate_all
from runtime.engine_transformers import TransformersEngine
from runtime.fast_decode import FastDecoder
from runtime.settings import ServeSettings
from runtime_helpers import tiny_llama  # noqa: F401

PROMPTS = ["Hello world", "The quick brown fox jumps over", "A", "Kubernetes and OpenShift schedule pods onto nodes",
           "Once upon a time there was a small language model"]


def save(tiny_llama: Path, folder: Path, config_class: str, model_class: str, **extra: object) -> Path:
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    config = getattr(transformers, config_class)(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **extra,
    )
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


SMALL = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "max_position_embeddings": 256}

FAMILIES = {
    # grouped-query attention: 4 query heads share 2 key/value heads
    "llama-gqa": ("LlamaConfig", "LlamaForCausalLM", {**SMALL, "num_attention_heads": 4, "num_key_value_heads": 2}),
    # biases on the projections, and a head size that is not hidden / heads
    "llama-bias-headdim": ("LlamaConfig", "LlamaForCausalLM", {**SMALL, "num_attention_heads": 2, "num_key_value_heads": 1,
                                                               "head_dim": 48, "attention_bias": True, "mlp_bias": True}),
    # Llama 3's rotary scaling
    "llama3-rope": ("LlamaConfig", "LlamaForCausalLM", {**SMALL, "num_attention_heads": 4, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**SMALL, "num_attention_heads": 4, "num_key_value_heads": 2}),
    # a norm over each query and key head
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**SMALL, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**SMALL, "num_attention_heads": 4, "num_key_value_heads": 1,
                                                         "sliding_window": None}),
}


def load(path: Path, **settings: object) -> TransformersEngine:
    engine = TransformersEngine(ServeSettings(model=str(path), dtype="float32", **settings))  # type: ignore[arg-type]
    engine.load()
    return engine


def generate_reference(engine: TransformersEngine, n: int) -> list[list[int]]:
    out = []
    for p in PROMPTS:
        ids = torch.tensor([engine.encode(p)], device=engine.device)
        gen = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                    eos_token_id=None, pad_token_id=engine.pad_id)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_decodes_directly_to_the_tokens_of_generate(family: str, tiny_llama: Path, tmp_path: Path) -> None:
    """Five prompts of different lengths through batches of two: padded rows, sequences joining
    a running batch and leaving it, and a cache that grows past its first room (80 tokens)."""
    config_class, model_class, extra = FAMILIES[family]
    engine = load(save(tiny_llama, tmp_path / family, config_class, model_class, **extra))
    assert engine.fast is not None
    expected = generate_reference(engine, 80)
    seqs = [Sequence(prompt_ids=engine.encode(p), params=SamplingParams(max_tokens=80, ignore_eos=True)) for p in PROMPTS]
    calls = 0
    real = engine.fast.step

    def counted(*args):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(*args)

    engine.fast.step = counted  # type: ignore[method-assign]
    list(generate_all(engine, seqs, 2))
    assert [s.output_ids for s in seqs] == expected
    assert calls >= 79 * 3  # every decoding step took the direct path


def test_other_models_decode_through_transformers(tiny_llama: Path, tmp_path: Path) -> None:
    """GPT-2 has no direct step, nor has a sliding-window Mistral: both still generate exactly."""
    gpt2 = save(tiny_llama, tmp_path / "gpt2", "GPT2Config", "GPT2LMHeadModel", n_embd=64, n_layer=2, n_head=2, n_positions=256)
    mistral = save(tiny_llama, tmp_path / "mistral-window", "MistralConfig", "MistralForCausalLM",
                   **{**SMALL, "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 8})
    for path in (gpt2, mistral):
        engine = load(path)
        assert engine.fast is None
        expected = generate_reference(engine, 20)
        seqs = [Sequence(prompt_ids=engine.encode(p), params=SamplingParams(max_tokens=20, ignore_eos=True)) for p in PROMPTS]
        list(generate_all(engine, seqs, 3))
        assert [s.output_ids for s in seqs] == expected


def test_what_the_direct_step_refuses_and_why(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM

    from runtime.fast_decode import _unsupported

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert _unsupported(model) is None

    class Adapted(torch.nn.Linear):  # what a LoRA or quantized layer looks like to the check
        pass

    proj = model.model.layers[1].self_attn.v_proj
    model.model.layers[1].self_attn.v_proj = Adapted(proj.in_features, proj.out_features, bias=False)
    assert "not a plain Linear" in (_unsupported(model) or "")
    model.model.layers[1].self_attn.v_proj = proj
    model.config.hidden_act = "gelu"
    assert "activation" in (_unsupported(model) or "")


def test_a_direct_step_that_disagrees_at_load_is_not_used(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    real = FastDecoder.step

    def off_by_a_little(self, *args):  # type: ignore[no-untyped-def]
        return real(self, *args) + 0.01

    monkeypatch.setattr(FastDecoder, "step", off_by_a_little)
    with caplog.at_level(logging.WARNING, logger="runtime.engine"):
        engine = load(tiny_llama)
    assert engine.fast is None
    assert "does not match" in caplog.text


def test_the_flag_turns_the_direct_step_off(tiny_llama: Path) -> None:
    from runtime.cli import build_parser, serve_settings
    from runtime.settings import RuntimeConfig

    for argv, expected in ((["--no-direct-decode"], False), ([], True)):
        args = build_parser().parse_args(["serve", "--model", str(tiny_llama), *argv])
        assert serve_settings(args, RuntimeConfig()).direct_decode is expected
    assert load(tiny_llama, direct_decode=False).fast is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="exact on a CPU; GPU kernels may round differently (test_runtime_gpu.py)")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_takes_the_direct_step_to_the_same_tokens(tiny_llama: Path, dtype: str) -> None:
    """The load-time check accepts half precision (its tolerance is looser there), and on a CPU
    both paths give the same tokens, as they do the same arithmetic."""
    outputs = []
    for direct in (True, False):
        engine = TransformersEngine(ServeSettings(model=str(tiny_llama), dtype=dtype, direct_decode=direct))  # type: ignore[arg-type]
        engine.load()
        assert (engine.fast is not None) == direct and engine.model.dtype == getattr(torch, dtype)
        seqs = [Sequence(prompt_ids=engine.encode(p), params=SamplingParams(max_tokens=24, ignore_eos=True)) for p in PROMPTS]
        list(generate_all(engine, seqs, 3))
        outputs.append([s.output_ids for s in seqs])
    assert outputs[0] == outputs[1]
