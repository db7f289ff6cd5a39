"""Tiny random-weight models with a tokenizer trained on the spot: for tests, benchmarks and
trying a deployment on a laptop. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A model server answers requests over HTTP with an OpenAI compatible API.",
    "Batch inference reads prompts from JSON Lines and writes the generated text back.",
    "GPUs are fast when they have large batches of work to do at once.",
    "Hello world! How are you today? I am fine, thank you.",
    "Once upon a time there was a small language model that lived on a laptop.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: , . ; : ! ? ( ) [ ] { } - + * / = < >",
    "Kubernetes and OpenShift schedule pods onto nodes with the resources they ask for.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(vocab_size: int = 512):  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>", "[CLS]", "[SEP]", "[MASK]",
               "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )


def build_tiny_llama(path: Path | str, *, layers: int = 4, hidden: int = 256, context: int = 512, seed: int = 0,
                     intermediate: int | None = None, kv_heads: int | None = None, dtype: str = "float32") -> Path:
    """A random-weight Llama with a local BPE tokenizer and a chat template, saved at ``path``
    (64-wide attention heads; ``kv_heads`` fewer than the heads gives grouped-query attention)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = train_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
        max_position_embeddings=context, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(path)
    tokenizer.model_max_length = context
    tokenizer.save_pretrained(path)
    return path


def build_tiny_encoder(path: Path | str, *, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """A random-weight BERT encoder with a local tokenizer, saved at ``path``."""
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    tokenizer = train_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=max(1, hidden // 32), max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertModel(config)
    model.save_pretrained(path)
    tokenizer.model_max_length = 256
    tokenizer.save_pretrained(path)
    return path
