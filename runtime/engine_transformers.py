"""The transformers engine: a Hugging Face model on CPU or one GPU.

Generation runs on padded batches with a key/value cache that sequences can join and leave
between steps (continuous batching over ordinary padded tensors; on CPUs and for small models
this beats paged attention). Encoders answer embeddings (mean pooling, L2-normalised).

GPU behaviour: half precision on CUDA, one thread owns the device (the caller guarantees it;
:attr:`device_lock` guards the few calls made from elsewhere), a batch size probed from free
memory at start-up, and a forward pass that runs out of memory is split in halves and retried.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import DynamicCache, DynamicLayer

from runtime.engine_base import DecodeBatch, Engine, Sequence
from runtime.errors import UsageError, is_out_of_memory, one_line
from runtime.fast_decode import FastDecoder
from runtime.settings import ServeSettings

log = logging.getLogger("runtime.engine")

KV = list[tuple[torch.Tensor, torch.Tensor]]

CPU_BATCH_SIZE = 32
GPU_BATCH_CAP = 256
ENCODER_TYPES = {
    "bert", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "mpnet", "electra",
    "albert", "camembert", "modernbert", "nomic_bert", "xlm", "e5", "new",
}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is half precision on CUDA (bfloat16 where supported) and float32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def is_generative(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    if archs:
        return any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs)
    return config.model_type not in ENCODER_TYPES


def finite(row: torch.Tensor) -> torch.Tensor:
    """Logits after arithmetic that may overflow (a repetition penalty of 1e-300, a temperature
    of 1e-5): too large becomes the largest float, NaN is never chosen, -inf stays barred."""
    return torch.nan_to_num(row, nan=-float("inf"), posinf=torch.finfo(row.dtype).max, neginf=-float("inf"))


def distribution(logits: torch.Tensor, p: Any) -> torch.Tensor:
    """The probabilities to draw from for one row of (shaped) float logits: temperature, then
    ``top_k``, ``top_p`` and ``min_p``, in vLLM's order. The most likely token always stays."""
    row = finite(logits / p.temperature)
    if 0 < p.top_k < row.shape[0]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, -float("inf"))
    probs = torch.softmax(row, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < p.top_p
        keep[0] = True  # a top_p too small for float32 still keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs * keep)
    if p.min_p > 0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0)
    return probs


# --------------------------------------------------------------------------- padded tensors
def _pad_left(t: torch.Tensor, length: int, dim: int, value: float = 0) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.full(shape, value, dtype=t.dtype, device=t.device), t], dim=dim)


class Rows:
    """The device state of some sequences: per-layer keys/values ``[B, H, L, D]`` (left-padded),
    the attention mask ``[B, L]``, each row's next position, and the last sampled token."""

    def __init__(self, kv: KV | None, mask: torch.Tensor, positions: torch.Tensor, logits: torch.Tensor | None = None,
                 cache: DynamicCache | None = None):
        self._kv = kv
        self.cache = cache  # the cache behind ``kv``; rows made by select/concat start a new one
        self.mask = mask
        self.positions = positions
        self.logits = logits  # of the last forward pass, [B, V]
        self.tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def kv(self) -> KV:
        """Per-layer keys and values. With a growing cache they are views of its buffers, made
        when asked for: holding them across a step would keep each buffer that grows alive."""
        if self._kv is None:
            assert self.cache is not None and _grows(self.cache)
            used = self.mask.shape[1]
            self._kv = [(layer._k[..., :used, :], layer._v[..., :used, :]) for layer in self.cache.layers]
        return self._kv

    @kv.setter
    def kv(self, value: KV) -> None:
        self._kv = value

    def let_go(self) -> None:
        """Drop the views of a growing cache (they can be made again from the cache)."""
        if self.cache is not None and _grows(self.cache):
            self._kv = None

    def select(self, index: torch.Tensor) -> "Rows":
        rows = Rows(
            [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.kv],
            self.mask.index_select(0, index),
            self.positions.index_select(0, index),
            None if self.logits is None else self.logits.index_select(0, index),
        )
        if self.tokens is not None:
            rows.tokens = self.tokens.index_select(0, index)
        return rows

    def trim(self) -> None:
        """Drop leading columns that are padding in every row."""
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first > 0:
            self.mask = self.mask[:, first:]
            self.kv = [(k[:, :, first:], v[:, :, first:]) for k, v in self.kv]
            self.cache = None

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        """All rows of ``parts`` in one batch. The parts are used up: each layer of theirs is
        released as soon as it is copied, so joining needs memory for one layer beyond the
        result, not a second copy of the whole cache (what lets an out-of-memory split rejoin)."""
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        length = max(p.mask.shape[1] for p in parts)
        kvs = [p.kv for p in parts]
        for p in parts:
            p.cache, p._kv = None, None  # ``kvs`` holds the only references now
        kv = []
        for layer in range(len(kvs[0])):
            kv.append((
                torch.cat([_pad_left(part[layer][0], length, 2) for part in kvs]),
                torch.cat([_pad_left(part[layer][1], length, 2) for part in kvs]),
            ))
            for part in kvs:
                part[layer] = None  # type: ignore[call-overload]
        rows = Rows(
            kv,
            torch.cat([_pad_left(p.mask, length, 1) for p in parts]),
            torch.cat([p.positions for p in parts]),
            None if any(p.logits is None for p in parts) else torch.cat([p.logits for p in parts]),
        )
        if all(p.tokens is not None for p in parts):
            rows.tokens = torch.cat([p.tokens for p in parts])
        return rows

    def part(self, start: int, stop: int) -> "Rows":
        """Rows ``start:stop`` as views (no copy: the batch is the outermost dimension)."""
        part = Rows(
            [(k[start:stop], v[start:stop]) for k, v in self.kv],
            self.mask[start:stop],
            self.positions[start:stop],
            None if self.logits is None else self.logits[start:stop],
        )
        if self.tokens is not None:
            part.tokens = self.tokens[start:stop]
        return part

    def halves(self) -> tuple["Rows", "Rows"]:
        """For an out-of-memory retry: views, so that splitting needs no memory of its own."""
        n = len(self)
        return self.part(0, n // 2), self.part(n // 2, n)


class GrowingLayer(DynamicLayer):
    """A cache layer that appends in place: keys and values live in buffers with room to grow,
    so a decoding step writes one position instead of copying the whole cache as ``torch.cat``
    does. ``keys``/``values`` are views of the used part. A full buffer grows by its length
    (at least 64, at most ``GROWTH_CAP`` positions): few copies, and a long prompt's cache is
    not doubled in memory for a short answer."""

    GROWTH_CAP = 512

    def adopt(self, keys: torch.Tensor, values: torch.Tensor) -> "GrowingLayer":
        self.dtype, self.device = keys.dtype, keys.device
        self._k, self._v, self._len = keys, values, keys.shape[-2]
        self.keys, self.values = keys, values
        self.is_initialized = True
        return self

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            return self.adopt(key_states, value_states).keys, self.values
        new = key_states.shape[-2]
        end = self._len + new
        if end > self._k.shape[-2]:
            room = end + max(64, min(self._len, self.GROWTH_CAP))
            shape = (*self._k.shape[:-2], room, self._k.shape[-1])
            k = self._k.new_empty(shape)
            v = self._v.new_empty(shape)
            k[..., : self._len, :] = self._k[..., : self._len, :]
            v[..., : self._len, :] = self._v[..., : self._len, :]
            self._k, self._v = k, v
        self._k[..., self._len : end, :] = key_states
        self._v[..., self._len : end, :] = value_states
        self._len = end
        self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
        return self.keys, self.values


def uses_sliding_window(config: Any) -> bool:
    """Whether some attention layer only looks back a window (Mistral, Gemma 2/3, ...)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = getattr(text, "layer_types", None) or []
    return bool(getattr(text, "sliding_window", None)) or any("sliding" in str(k) for k in kinds)


def _cache_of(kv: KV, config: Any = None) -> DynamicCache:
    """A cache over existing tensors whose layers grow in place (no copy to start, one position
    per step after). With ``config`` (a sliding-window model) transformers' own layers are used:
    they keep only the window, where a growing layer would keep everything."""
    if config is not None:
        return DynamicCache(ddp_cache_data=kv or None, config=config)
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer  # layers made during a prefill grow in place too
    for k, v in kv:
        cache.layers.append(GrowingLayer().adopt(k, v))
    return cache


def _grows(cache: Any) -> bool:
    return bool(cache.layers) and isinstance(cache.layers[0], GrowingLayer)


def _kv_of(cache: Any) -> KV | None:
    """What :class:`Rows` keeps besides the cache: nothing for a growing cache (see Rows.kv)."""
    return None if _grows(cache) else [(layer.keys, layer.values) for layer in cache.layers]


# --------------------------------------------------------------------------- engine
class TransformersEngine(Engine):
    def __init__(self, settings: ServeSettings):
        if not settings.model:
            raise UsageError("no model: pass --model PATH_OR_ID (or set inference.model in config.yaml)")
        self.settings = settings
        self.device_lock = threading.RLock()
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.pad_id = 0
        self.probed_batch_size: int | None = None
        self.probe_figures: dict[str, int] = {}
        self.oom_splits = 0
        self._forward_kwargs: dict[str, Any] = {}
        self._sliding_config: Any = None  # the model's config when it has sliding-window layers
        self.fast: FastDecoder | None = None  # the direct decoding step, when the model has one

    # ---------------------------------------------------------------- loading
    def load(self) -> None:
        s = self.settings
        source = s.model
        assert source
        if Path(source).expanduser().exists():
            source = str(Path(source).expanduser())
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.dtype = resolve_dtype(s.dtype, self.device)
        if self.device.type == "cuda":
            # The allocator refuses to hold more than this share, so a batch that would go past it
            # raises an out-of-memory error (and is split) instead of crowding out the neighbours.
            torch.cuda.set_per_process_memory_fraction(s.gpu_memory_utilization, self.device)
        if s.quantization:
            log.warning("quantization %r is applied by the vllm engine; this engine loads the checkpoint as saved", s.quantization)
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=s.trust_remote_code)
            self.task = "generate" if is_generative(config) else "embed"
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=s.trust_remote_code)
            auto = AutoModelForCausalLM if self.task == "generate" else AutoModel
            model = auto.from_pretrained(source, dtype=self.dtype, trust_remote_code=s.trust_remote_code)
        except OSError as exc:
            raise UsageError(f"cannot load model {s.model!r}: {str(exc).splitlines()[0]}") from None
        with self.device_lock:
            self.model = model.to(self.device).eval()
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.pad_id = next(
            (i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None), 0
        )
        self.eos_token_ids = frozenset(self._eos_ids(model, tokenizer))
        self.max_model_len = s.max_model_len or self._context_length(config, tokenizer)
        if self.task == "generate":
            self._sliding_config = config if uses_sliding_window(config) else None
            self._forward_kwargs = {"logits_to_keep": 1}
            try:
                self._forward(torch.tensor([[self.pad_id]], device=self.device), torch.ones(1, 1, dtype=torch.long, device=self.device), torch.zeros(1, 1, dtype=torch.long, device=self.device), [])
            except TypeError:
                self._forward_kwargs = {}
            if s.direct_decode and self._sliding_config is None:
                self.fast = self._checked(FastDecoder.build(self.model))
        self.max_batch_size = s.max_batch_size or self._default_batch_size()
        log.info(
            "loaded %s (%s) on %s in %s, context %d, batch size %d",
            s.model, self.task, self.device, str(self.dtype).removeprefix("torch."), self.max_model_len, self.max_batch_size,
        )

    def _checked(self, fast: FastDecoder | None) -> FastDecoder | None:
        """``fast`` if one decoding step of it gives transformers' logits (on two sequences of
        different lengths, so padding is covered), else None."""
        if fast is None:
            return None
        vocab = self.model.get_input_embeddings().num_embeddings
        prompts = [[(1 + 31 * i) % vocab for i in range(n)] for n in (5, 9)]
        steps = []
        for candidate in (None, fast):
            self.fast = candidate
            rows = self.prefill(prompts)
            assert rows.logits is not None
            rows.tokens = rows.logits.argmax(-1)
            steps.append(self.decode_step(rows).logits)
        self.fast = None
        if FastDecoder.agrees(steps[0], steps[1]):
            log.info("decoding with the direct step for %s", self.model.config.model_type)
            return fast
        log.warning("the direct decoding step does not match transformers on this model; decoding through transformers")
        return None

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        for value in (eos, tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    @staticmethod
    def _context_length(config: Any, tokenizer: Any) -> int:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
            value = getattr(text, name, None)
            if isinstance(value, int) and value > 0:
                return value
        length = getattr(tokenizer, "model_max_length", None)
        return length if isinstance(length, int) and 0 < length < 1_000_000 else 2048

    def _default_batch_size(self) -> int:
        if self.device.type != "cuda":
            return CPU_BATCH_SIZE
        self.probed_batch_size = self.probe_batch_size()
        return self.probed_batch_size

    def probe_batch_size(self, sample_len: int | None = None) -> int:
        """Run one sequence of a typical length, measure its peak memory and divide 80 % of the
        memory still available by it (the seed's probe, for key/value caches as well as
        activations). Available: free on the device and within ``gpu_memory_utilization``."""
        length = sample_len or min(self.max_model_len, 1024)
        with self.device_lock:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            baseline = torch.cuda.memory_allocated(self.device)
            ids = [self.pad_id] * (length - 1)
            if self.task == "generate":
                batch = self.new_batch()
                batch.add([Sequence(prompt_ids=ids)])
                batch.step()
                del batch
            else:
                self.embed([ids])
            peak = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(self.device)
            allowed = self.settings.gpu_memory_utilization * total - torch.cuda.memory_reserved(self.device)
        available = max(0.0, min(free, allowed))
        per_seq = max(peak - baseline, 1)
        size = max(1, min(GPU_BATCH_CAP, int(available * 0.8 / per_seq)))
        self.probe_figures = {"per_sequence_bytes": per_seq, "sample_tokens": length, "available_bytes": int(available)}
        log.info("probed batch size %d (%.1f MiB per sequence of %d tokens, %.0f MiB available)",
                 size, per_seq / 2**20, length, available / 2**20)
        return size

    def close(self) -> None:
        with self.device_lock:
            self.model = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # ---------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template; use /v1/completions")
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(out, "keys") and "input_ids" in out:
            out = out["input_ids"]
        return list(out)

    # ---------------------------------------------------------------- device work
    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, kv: KV,
                 cache: DynamicCache | None = None) -> tuple[torch.Tensor, KV | None, DynamicCache]:
        """One forward pass: the logits of each row's last position and the extended cache."""
        cache = cache if cache is not None else _cache_of(kv, self._sliding_config)
        out = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions,
            past_key_values=cache, use_cache=True, **self._forward_kwargs,
        )
        return out.logits[:, -1, :], _kv_of(out.past_key_values), out.past_key_values

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def split_on_oom(self, run: Callable[[Any], Any], items: Any, join: Callable[[list[Any]], Any], halves: Callable[[Any], tuple[Any, Any]]) -> Any:
        """``run(items)``; if the device runs out of memory, run each half and join the results."""
        try:
            return run(items)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM we can split
            if not is_out_of_memory(exc) or len(items) <= 1:
                raise
        self._empty_cache()
        self.oom_splits += 1
        first, second = halves(items)
        log.warning("out of memory on a batch of %d; retrying as %d + %d", len(items), len(first), len(second))
        return join([self.split_on_oom(run, first, join, halves), self.split_on_oom(run, second, join, halves)])

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> Rows:
        def run(ps: list[list[int]]) -> Rows:
            length = max(len(p) for p in ps)
            ids = torch.tensor([[self.pad_id] * (length - len(p)) + p for p in ps], device=self.device)
            mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in ps], device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits, kv, cache = self._forward(ids, mask, positions, [])
            return Rows(kv, mask, mask.sum(-1), logits, cache)

        def halves(ps: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
            return ps[: len(ps) // 2], ps[len(ps) // 2 :]

        return self.split_on_oom(run, prompts, Rows.concat, halves)

    @torch.inference_mode()
    def decode_step(self, rows: Rows) -> Rows:
        def run(r: Rows) -> Rows:
            assert r.tokens is not None
            mask = torch.cat([r.mask, torch.ones(len(r), 1, dtype=r.mask.dtype, device=r.mask.device)], dim=1)
            if r.cache is None:  # rows made by select/concat/trim: a cache over their tensors
                r.cache = _cache_of(r.kv, self._sliding_config)
            r.let_go()  # a layer's old buffer can then be freed as soon as it has grown into a new one
            if self.fast is not None and _grows(r.cache):
                logits = self.fast.step(r.tokens, r.positions, mask, r.cache)
                return Rows(None, mask, r.positions + 1, logits, r.cache)
            logits, kv, cache = self._forward(r.tokens[:, None], mask, r.positions[:, None], [], r.cache)
            return Rows(kv, mask, r.positions + 1, logits, cache)

        return self.split_on_oom(run, rows, Rows.concat, Rows.halves)

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """The next token of each row: the argmax where that is all a sequence asks for, else
        :meth:`sample_row`. A row that fails marks its sequence alone (``seq.error``); the rest
        of the batch goes on."""
        tokens = logits.argmax(dim=-1)
        for i, seq in enumerate(seqs):
            if seq.params.plain_argmax:
                continue
            try:
                tokens[i] = self.sample_row(logits[i], seq)
            except Exception as exc:  # noqa: BLE001 - this sequence fails; the batch goes on
                seq.error = one_line(exc)
                log.warning("sampling failed for one sequence (%s); it alone ends with an error", seq.error)
        return tokens

    def sample_row(self, logits: torch.Tensor, seq: Sequence) -> int:
        """One sequence's next token from its logits ``[V]`` (see :class:`SamplingParams`)."""
        p = seq.params
        row = self.shape_logits(logits, seq)
        if p.greedy:
            return int(row.argmax())
        state = _state(seq, row.device)
        if state.generator is None:
            state.generator = torch.Generator(device=row.device)
            state.generator.manual_seed(p.seed if p.seed is not None else int(torch.randint(0, 2**62, (1,))))
        return int(torch.multinomial(distribution(row, p), 1, generator=state.generator)[0])

    def shape_logits(self, logits: torch.Tensor, seq: Sequence) -> torch.Tensor:
        """A float copy of one row's logits with the sequence's bias, penalties and
        ``min_tokens`` applied (vLLM's rules; the repetition penalty is transformers')."""
        p = seq.params
        row = logits.float().clone()
        state = _state(seq, row.device)
        if p.logit_bias:
            row.index_add_(0, state.bias_ids, state.bias_values)
        if p.repetition_penalty != 1.0:
            seen = torch.cat([state.prompt_ids, torch.tensor(seq.output_ids, dtype=torch.long, device=row.device)]).unique()
            values = row[seen]
            row[seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
        if (p.frequency_penalty or p.presence_penalty) and seq.output_ids:
            counts = torch.bincount(torch.tensor(seq.output_ids, device=row.device), minlength=row.shape[0])[: row.shape[0]]
            row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
        if p.min_tokens and len(seq.output_ids) < p.min_tokens and self.eos_token_ids:
            row[torch.tensor(sorted(self.eos_token_ids), device=row.device)] = -float("inf")
        return finite(row)

    def new_batch(self) -> DecodeBatch:
        if self.task != "generate":
            raise ValueError("this model is an encoder; it answers embeddings only")
        return TransformersBatch(self)

    @torch.inference_mode()
    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        def run(ps: list[list[int]]) -> torch.Tensor:
            length = max(len(p) for p in ps)
            ids = torch.tensor([p + [self.pad_id] * (length - len(p)) for p in ps], device=self.device)
            mask = torch.tensor([[1] * len(p) + [0] * (length - len(p)) for p in ps], device=self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            return torch.nn.functional.normalize(pooled.float(), dim=-1)

        def halves(ps: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
            return ps[: len(ps) // 2], ps[len(ps) // 2 :]

        with self.device_lock:
            vectors = self.split_on_oom(run, inputs, lambda parts: torch.cat(parts), halves)
        return vectors.cpu().tolist()


class SamplerState:
    """What a sequence's sampling keeps between steps: its random generator, and as tensors made
    once what a step would otherwise rebuild from Python lists (the prompt, the logit bias)."""

    def __init__(self, seq: Sequence, device: torch.device):
        self.generator: torch.Generator | None = None
        self.prompt_ids = torch.tensor(seq.prompt_ids, dtype=torch.long, device=device)
        self.bias_ids = torch.tensor([i for i, _ in seq.params.logit_bias], dtype=torch.long, device=device)
        self.bias_values = torch.tensor([b for _, b in seq.params.logit_bias], dtype=torch.float32, device=device)


def _state(seq: Sequence, device: torch.device) -> SamplerState:
    if seq.engine_state is None:
        seq.engine_state = SamplerState(seq, device)
    return seq.engine_state


class TransformersBatch(DecodeBatch):
    def __init__(self, engine: TransformersEngine):
        self.engine = engine
        self.seqs: list[Sequence] = []
        self.rows: Rows | None = None

    def add(self, seqs: list[Sequence]) -> list[int]:
        if not seqs:
            return []
        e = self.engine
        with e.device_lock:
            # A sequence taken out of a batch to free memory comes back with its tokens so far:
            # prefilling them too continues it where it stopped.
            new = e.prefill([s.prompt_ids + s.output_ids for s in seqs])
            assert new.logits is not None
            new.tokens = e.sample(new.logits, seqs)
            new.logits = None
            self.rows = new if self.rows is None or not self.seqs else Rows.concat([self.rows, new])
        self.seqs.extend(seqs)
        return new.tokens.tolist()

    def step(self) -> list[int]:
        if not self.seqs:
            return []
        e = self.engine
        assert self.rows is not None
        with e.device_lock:
            rows = e.decode_step(self.rows)
            assert rows.logits is not None
            rows.tokens = e.sample(rows.logits, self.seqs)
            rows.logits = None
            self.rows = rows
        return rows.tokens.tolist()

    def remove(self, seqs: Iterable[Sequence]) -> None:
        gone = {id(s) for s in seqs}
        keep = [i for i, s in enumerate(self.seqs) if id(s) not in gone]
        if len(keep) == len(self.seqs):
            return
        self.seqs = [self.seqs[i] for i in keep]
        if not keep:
            self.rows = None
            return
        assert self.rows is not None
        with self.engine.device_lock:
            self.rows = self.rows.select(torch.tensor(keep, device=self.rows.mask.device))
            self.rows.trim()
