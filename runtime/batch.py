"""Batch inference over JSON Lines: resumable and exactly-once, even after ``kill -9``.

Input: one JSON object per line with an ``id`` and a ``prompt`` (or chat ``messages``).
Output: one line per input id with the generated ``text`` and token counts. The output file is
append-only; every chunk of finished records goes out in one write followed by ``fsync``. On a
restart a trailing partial line (the write a kill interrupted) is cut off, the ids already in
the file are skipped, and the rest is generated.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import UsageError
from runtime.settings import TrackingSettings

FLUSH_EVERY_S = 1.0


@dataclass
class Record:
    id: Any
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None

    @property
    def key(self) -> str:
        return json.dumps(self.id, sort_keys=True)


@dataclass
class Summary:
    records: int = 0
    generated: int = 0
    already_done: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def records_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out.update(tokens_per_s=round(self.tokens_per_s, 2), records_per_s=round(self.records_per_s, 3), **self.extra)
        return out

    def line(self) -> str:
        return (
            f"done: {self.records} records ({self.generated} generated, {self.already_done} already done"
            f"{f', {self.failed} failed' if self.failed else ''}); {self.completion_tokens} tokens in "
            f"{self.seconds:.1f} s: {self.tokens_per_s:.1f} tokens/s, {self.records_per_s:.2f} records/s"
        )


# --------------------------------------------------------------------------- input
def input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json") and p.is_file())
        if not files:
            raise UsageError(f"{path}: no .jsonl files in this folder")
        return files
    if not path.exists():
        raise UsageError(f"{path}: input not found")
    return [path]


def read_records(path: Path) -> list[Record]:
    records: list[Record] = []
    seen: dict[str, str] = {}
    for file in input_files(path):
        with file.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{file.name} line {n}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{where}: not JSON ({exc.msg})") from None
                record = _record(obj, where)
                if record.key in seen:
                    raise UsageError(f"{where}: id {record.id!r} already used at {seen[record.key]}; ids must be unique")
                seen[record.key] = where
                records.append(record)
    return records


def _record(obj: Any, where: str) -> Record:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object with 'id' and 'prompt' or 'messages'")
    if "id" not in obj or not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
        raise UsageError(f"{where}: needs an 'id' (a string or an integer)")
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        raise UsageError(f"{where}: needs exactly one of 'prompt' (text) or 'messages' (chat)")
    if prompt is not None and not isinstance(prompt, str):
        raise UsageError(f"{where}: 'prompt' must be text")
    if messages is not None:
        ok = isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
        )
        if not ok:
            raise UsageError(f"{where}: 'messages' must be a list of {{\"role\": ..., \"content\": ...}}")
    return Record(id=obj["id"], prompt=prompt, messages=messages)


# --------------------------------------------------------------------------- output
def recover_output(path: Path) -> set[str]:
    """Cut a trailing partial line, return the ids already written (as keys)."""
    if not path.exists():
        return set()
    with path.open("r+b") as fh:
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    done: set[str] = set()
    for n, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path} line {n}: not JSON; this file was not written by a batch run (move it away)") from None
        if not isinstance(obj, dict) or "id" not in obj:
            raise UsageError(f"{path} line {n}: has no 'id'; this file was not written by a batch run (move it away)")
        done.add(json.dumps(obj["id"], sort_keys=True))
    return done


class Output:
    """Append-only JSON Lines: each :meth:`write` is one ``write`` call and one ``fsync``."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "ab")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        data = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
        self.fh.write(data)
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


# --------------------------------------------------------------------------- generation backends
Result = dict[str, Any]  # id, text, prompt_tokens, completion_tokens, finish_reason (or error)
Backend = Callable[[list[Record], int, float], Iterator[Result]]


def transformers_backend(engine: Any, batch_size: int) -> Backend:
    """Length-sorted batches (longest first) refilled as sequences finish."""
    from runtime.engine_base import SamplingParams, Sequence, generate_all

    def run(records: list[Record], max_tokens: int, temperature: float) -> Iterator[Result]:
        seqs = []
        for r in records:
            try:
                ids = engine.encode(r.prompt) if r.prompt is not None else engine.chat_ids(r.messages or [])
            except ValueError as exc:
                yield {"id": r.id, "text": None, "error": str(exc)}
                continue
            room = engine.max_model_len - len(ids)
            if room < 1:
                yield {"id": r.id, "text": None, "prompt_tokens": len(ids), "completion_tokens": 0,
                       "error": f"prompt of {len(ids)} tokens leaves no room in the context of {engine.max_model_len}"}
                continue
            params = SamplingParams(max_tokens=min(max_tokens, room), temperature=temperature)
            seqs.append(Sequence(prompt_ids=ids, params=params, tag=r))
        seqs.sort(key=lambda s: len(s.prompt_ids), reverse=True)
        for seq in generate_all(engine, seqs, batch_size):
            if seq.error is not None:  # the engine failed on this record alone
                yield {"id": seq.tag.id, "text": None, "prompt_tokens": len(seq.prompt_ids),
                       "completion_tokens": len(seq.output_ids), "error": seq.error}
                continue
            yield {
                "id": seq.tag.id, "text": engine.decode(seq.output_ids), "prompt_tokens": len(seq.prompt_ids),
                "completion_tokens": len(seq.output_ids), "finish_reason": seq.finish_reason,
            }

    return run


def vllm_backend(offline: Any, chunk: int = 1024) -> Backend:
    def run(records: list[Record], max_tokens: int, temperature: float) -> Iterator[Result]:
        for start in range(0, len(records), chunk):
            part = records[start : start + chunk]
            prompts = [{"prompt": r.prompt} if r.prompt is not None else {"messages": r.messages} for r in part]
            for r, (text, pt, ct, reason) in zip(part, offline.generate(prompts, max_tokens, temperature)):
                yield {"id": r.id, "text": text, "prompt_tokens": pt, "completion_tokens": ct, "finish_reason": reason}

    return run


# --------------------------------------------------------------------------- the run
def run_batch(
    backend: Backend,
    input_path: Path,
    output_path: Path,
    *,
    max_tokens: int,
    temperature: float,
    progress: bool = True,
) -> Summary:
    records = read_records(input_path)
    done = recover_output(output_path)
    todo = [r for r in records if r.key not in done]
    summary = Summary(records=len(records), already_done=len(records) - len(todo))
    out = Output(output_path)
    bar = _progress(len(records), summary.already_done, progress)
    start = time.monotonic()
    pending: list[Result] = []
    last_flush = start
    try:
        for result in backend(todo, max_tokens, temperature):
            pending.append(result)
            summary.generated += 1
            summary.failed += 1 if result.get("error") else 0
            summary.prompt_tokens += result.get("prompt_tokens") or 0
            summary.completion_tokens += result.get("completion_tokens") or 0
            now = time.monotonic()
            if now - last_flush >= FLUSH_EVERY_S or summary.generated == 1:  # the first at once: the file shows progress
                out.write(pending)
                pending, last_flush = [], now
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{summary.completion_tokens / max(now - start, 1e-9):.0f} tok/s", refresh=False)
        out.write(pending)
    finally:
        out.close()
        if bar is not None:
            bar.close()
    summary.seconds = time.monotonic() - start
    return summary


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="rec", mininterval=1.0, file=sys.stderr, dynamic_ncols=True)


def log_to_tracker(summary: Summary, tracking: TrackingSettings, run_config: dict[str, Any]) -> str | None:
    """Log the summary to the experiment tracker; a note for the user, or None."""
    if not tracking.enabled:
        return None
    if tracking.backend != "wandb":
        return f"tracking backend {tracking.backend!r} is not supported by batch runs yet; summary not logged"
    try:
        import wandb
    except ImportError:
        return "W&B tracking is on but wandb is not installed (pip install 'mlshift[runtime]'); summary not logged"
    run = wandb.init(
        project=tracking.project, entity=tracking.entity, tags=list(tracking.tags) or None, mode=tracking.mode,
        name=tracking.run_name, job_type="batch-inference", config=run_config,
    )
    values = {f"batch/{k}": v for k, v in summary.as_dict().items() if isinstance(v, (int, float))}
    run.log(values)
    run.summary.update(values)
    run.finish()
    return None
