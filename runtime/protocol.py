"""OpenAI request and response bodies, fields in OpenAI's order.

Requests are strict. A field this server does not know is refused with a 400 naming it, never
dropped: an ignored parameter would change the output without telling the caller. Fields that
do not change the output (``user``, ``metadata``, ...) are accepted. Every text must be valid
Unicode (a lone surrogate such as ``"\\ud800"`` is a 400 naming the field), every number finite,
and every sampling parameter within the range the engine can really use; fields this server
cannot honour are accepted only at their neutral value (see :func:`unsupported`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

# torch.Generator.manual_seed takes [-2**63, 2**64 - 1]; OpenAI documents a 64-bit integer.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
# Per stop string: a stop is matched in the text as it grows, and held back that long when streaming.
MAX_STOP_CHARS = 256
MAX_STOPS = 4
MAX_LOGIT_BIAS = 300


def valid_unicode(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (JSON's ``"\\ud800"`` decodes to a lone
    surrogate, which cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(value: Any) -> None:
    """Raise if any string in ``value`` (nested in lists and dicts, keys too) is not valid Unicode."""
    if isinstance(value, str):
        if not valid_unicode(value):
            raise ValueError("is not valid Unicode text (it holds a lone surrogate such as \\ud800)")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        if not isinstance(value, BaseModel):  # nested requests check their own fields
            _check_text(value)
        return value


class StreamOptions(_Request):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's; accepted, usage comes at the end


Stop = Union[str, list[str], None]


class _Sampling(_Request):
    """What completions and chat share: sampling parameters (OpenAI's, then vLLM's extensions)
    and fields that change nothing in the output."""

    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    # extensions, as in vLLM
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    # change nothing in the output
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value and len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens may be biased (as OpenAI)")
        for key, bias in (value or {}).items():
            if not key.strip().isdigit():
                raise ValueError(f"keys are token ids; {key[:20]!r} is not one")
            if not -100 <= bias <= 100:
                raise ValueError("biases are between -100 and 100")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Stop) -> Stop:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences are allowed")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence may have at most {MAX_STOP_CHARS} characters")
        return value


class CompletionRequest(_Sampling):
    model: str
    prompt: Union[str, list[str], list[int], list[list[int]]]
    best_of: int | None = Field(None, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(16, ge=1)
    suffix: str | None = None


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], dict[str, Any], None] = None
    parallel_tool_calls: bool | None = None


class EmbeddingRequest(_Request):
    input: Union[str, list[str], list[int], list[list[int]]]
    model: str
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


# Every field name of every request (a misspelt one is answered with the nearest).
FIELD_NAMES = sorted({name for m in (CompletionRequest, ChatCompletionRequest, EmbeddingRequest, ChatMessage, StreamOptions)
                      for name in m.model_fields})


def unsupported(req: CompletionRequest | ChatCompletionRequest) -> tuple[str, str] | None:
    """(param, message) for the first field set to something this server does not do."""
    checks: list[tuple[str, bool]] = [("n", req.n != 1)]
    if isinstance(req, CompletionRequest):
        checks += [
            ("best_of", req.best_of not in (None, 1)),
            ("echo", req.echo),
            ("logprobs", req.logprobs is not None),
            ("suffix", bool(req.suffix)),
        ]
    else:
        checks += [
            ("logprobs", req.logprobs),
            ("top_logprobs", bool(req.top_logprobs)),
            ("response_format", req.response_format is not None and req.response_format.type != "text"),
            ("tools", bool(req.tools)),
            ("tool_choice", req.tool_choice not in (None, "none", "auto")),
        ]
    for param, bad in checks:
        if bad:
            return param, f"{param} is not supported by this server; leave it at its default"
    return None


# --------------------------------------------------------------------------- responses
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: Union[list[float], str]
    index: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mlshift"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
