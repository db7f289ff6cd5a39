"""A direct decoding step for Llama-family models (Llama, Mistral, Qwen2, Qwen3).

A decoding step feeds one token per sequence. Its matrix products are small, so a step through
transformers' modules spends as much time in the modules' own bookkeeping (hundreds of small
operations and Python calls: mask building, cache dispatch, output objects, the rotary helper)
as in arithmetic. :class:`FastDecoder` runs the same arithmetic as transformers' Llama code,
operation for operation (same weights, same dtypes, same order of reductions, the same
grouped-query packing for a single query), straight over the model's parameters and the
engine's growing cache. On our 2-core CPU a step at batch 16 takes about 4 ms against 6
(docs/performance.md); on a GPU the same cut removes kernel launches.

Nothing is assumed: :meth:`FastDecoder.build` accepts only transformers' own classes for these
models with the plain structure (SiLU MLP, RMS norms, rotary embeddings, no sliding window), and
the engine compares one step of both paths at load time and keeps transformers' path when they
disagree (:meth:`FastDecoder.agrees`). Prefills always go through transformers: they are
arithmetic-bound, and its kernels are the right ones there.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

log = logging.getLogger("runtime.engine")

# model_type -> the prefix of its transformers classes (LlamaForCausalLM, LlamaDecoderLayer, LlamaAttention, ...).
FAMILIES = {
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",  # Llama's layer plus an RMS norm over each head of the queries and keys
}


def _unsupported(model: Any) -> str | None:
    """Why ``model`` cannot take the direct step (None when it can)."""
    config = model.config
    prefix = FAMILIES.get(getattr(config, "model_type", ""))
    if prefix is None:
        return f"model type {config.model_type!r} has no direct step (it has for {', '.join(FAMILIES)})"
    expected = {
        type(model): f"{prefix}ForCausalLM",
        type(getattr(model, "model", None)): f"{prefix}Model",
    }
    inner = model.model
    for layer in inner.layers:
        expected.update({
            type(layer): f"{prefix}DecoderLayer",
            type(layer.self_attn): f"{prefix}Attention",
            type(layer.mlp): f"{prefix}MLP",
            type(layer.input_layernorm): f"{prefix}RMSNorm",
            type(layer.post_attention_layernorm): f"{prefix}RMSNorm",
        })
        for name in ("q_norm", "k_norm"):
            if hasattr(layer.self_attn, name):
                expected[type(getattr(layer.self_attn, name))] = f"{prefix}RMSNorm"
    expected[type(inner.norm)] = f"{prefix}RMSNorm"
    for cls, name in expected.items():
        if cls.__name__ != name or not cls.__module__.startswith("transformers.models."):
            return f"{cls.__module__}.{cls.__name__} is not transformers' {name}"
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {getattr(config, 'hidden_act', None)!r} (the direct step knows silu)"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    if len(inner.layers) != config.num_hidden_layers:
        return "the model runs a different number of layers than it has"
    for layer in inner.layers:
        a = layer.self_attn
        if any(type(getattr(a, n)) is not torch.nn.Linear for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
            return "an attention projection is not a plain Linear (quantized or adapted)"
        if any(type(getattr(layer.mlp, n)) is not torch.nn.Linear for n in ("gate_proj", "up_proj", "down_proj")):
            return "an MLP projection is not a plain Linear (quantized or adapted)"
        if getattr(a, "sliding_window", None):
            return "sliding-window attention"
    return None


class FastDecoder:
    """One decoding step over a growing cache (see the module's docstring)."""

    def __init__(self, model: Any):
        inner = model.model
        config = model.config
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.norm = inner.norm
        self.lm_head = model.lm_head
        self.layers = list(inner.layers)
        attn = self.layers[0].self_attn
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.group = self.heads // self.kv_heads
        self.scaling = attn.scaling
        self.head_norms = hasattr(attn, "q_norm")

    @classmethod
    def build(cls, model: Any) -> "FastDecoder | None":
        reason = _unsupported(model)
        if reason:
            log.info("decoding through transformers' modules: %s", reason)
            return None
        return cls(model)

    @staticmethod
    def _rms(x: torch.Tensor, norm: Any) -> torch.Tensor:
        # transformers' LlamaRMSNorm: in float32, then back to the input's dtype, times the weight.
        return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=norm.variance_epsilon).to(x.dtype)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits ``[B, V]`` for ``tokens`` ``[B]`` at ``positions`` ``[B]``; ``mask`` ``[B, L+1]``
        covers the cache and the new token; each layer of ``cache`` (growing) gains one position."""
        rows = tokens.shape[0]
        x = self.embed(tokens[:, None])  # [B, 1, hidden]
        cos, sin = self.rotary(x, positions[:, None])  # [B, 1, head_dim], for q and k as [B, heads, 1, head_dim]
        attend = mask.bool()[:, None, None, :]  # [B, 1, 1, L+1], shared by every head
        for layer, cached in zip(self.layers, cache.layers):
            a = layer.self_attn
            h = self._rms(x, layer.input_layernorm)
            q = a.q_proj(h).view(rows, self.heads, 1, self.head_dim)
            k = a.k_proj(h).view(rows, self.kv_heads, 1, self.head_dim)
            v = a.v_proj(h).view(rows, self.kv_heads, 1, self.head_dim)
            if self.head_norms:
                q, k = self._rms(q, a.q_norm), self._rms(k, a.k_norm)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)  # transformers' own (the same in each family)
            keys, values = cached.update(k, v)
            # One query per sequence: the heads sharing a key/value head become its queries
            # (transformers' pack_gqa), so keys and values are never repeated.
            out = F.scaled_dot_product_attention(
                q.view(rows, self.kv_heads, self.group, self.head_dim), keys, values,
                attn_mask=attend, scale=self.scaling,
            )
            x = x + a.o_proj(out.reshape(rows, 1, self.heads * self.head_dim))
            h = self._rms(x, layer.post_attention_layernorm)
            m = layer.mlp
            x = x + m.down_proj(F.silu(m.gate_proj(h)) * m.up_proj(h))
        return self.lm_head(self._rms(x, self.norm))[:, -1, :]

    @staticmethod
    def agrees(reference: torch.Tensor, direct: torch.Tensor) -> bool:
        """Whether two steps' logits match: to float32 rounding, or half precision's."""
        tolerance = 1e-4 if reference.dtype == torch.float32 else 2e-2
        scale = 1.0 + float(reference.float().abs().max())
        return bool((reference.float() - direct.float()).abs().max() <= tolerance * scale)
