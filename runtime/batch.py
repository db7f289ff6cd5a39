"""Batch inference over JSON Lines: resumable, exactly once, and harmless to the files it is given.

Input: one JSON object per line with an ``id`` and a ``prompt`` (or chat ``messages``).
Output: one line per input id with the generated ``text`` and token counts, or ``"text": null``
and an ``"error"`` for a record that failed. The rules:

- **Input is read before the model loads.** A line that is not UTF-8, not JSON, or not a record
  (no id, no prompt), and an id used twice, stop the run there, naming the file and line.
- **A record that fails later fails alone**: a prompt or id that is not valid Unicode, a prompt
  the tokenizer or the chat template rejects, a sequence the engine failed on. It gets an error
  row keyed by its id, the run goes on, and the summary counts it. A resume does not retry it
  unless asked (``--retry-errors``).
- **The output is checked before the model loads**: not a folder, not the input (nor inside an
  input folder), its folder creatable and writable, every line in it written by a batch run.
  Anything else is refused with the file untouched. The only changes the runner makes to an
  existing output are appending, cutting a trailing partial line (a write a kill interrupted),
  and, with ``--retry-errors``, rewriting it without its error rows (a new file renamed over it).
- **One output, one writer.** The output is locked for the whole run (``flock`` on a hidden
  ``.NAME.lock`` beside it, which says who holds it); a second runner refuses, naming the holder.
- **Exactly once.** Finished records go out about once a second in one ``write`` and an
  ``fsync``; a restart after any stop skips the ids already written and generates the rest.
- **Memory does not grow with the records**: the input is streamed, twice; what is kept is a
  16-byte digest per id (the input's, to find duplicates, and the ones already done).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import UsageError, one_line
from runtime.protocol import valid_unicode
from runtime.settings import TrackingSettings

FLUSH_EVERY_S = 1.0
WINDOW = 4096  # records read ahead and sorted by length, longest first (transformers engine)
KEY = np.dtype("V16")  # an id's digest


@dataclass
class Record:
    id: Any
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None

    @property
    def key(self) -> bytes:
        return id_key(self.id)


def id_key(value: Any) -> bytes:
    """A 16-byte digest of an id (JSON with non-ASCII escaped, so a lone surrogate hashes too)."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=16).digest()


class Keys:
    """A set of id digests in a sorted array: 16 bytes an id, membership by binary search."""

    def __init__(self, keys: bytearray | None = None):
        self.array = np.frombuffer(keys if keys is not None else bytearray(), dtype=KEY)  # no copy:
        self.array.sort()  # the digests are sorted where they were gathered

    def __len__(self) -> int:
        return len(self.array)

    def __contains__(self, key: bytes) -> bool:
        return self._found(np.frombuffer(key, dtype=KEY))[0]

    def count_in(self, other: "Keys") -> int:
        """How many of ``other``'s keys are in this set (in blocks: the search's index arrays
        would otherwise cost more than the keys themselves)."""
        block = 1 << 16
        return sum(int(self._found(other.array[i : i + block]).sum()) for i in range(0, len(other.array), block))

    def _found(self, query: np.ndarray) -> np.ndarray:
        if not len(self.array):
            return np.zeros(len(query), dtype=bool)
        at = np.minimum(np.searchsorted(self.array, query), len(self.array) - 1)
        return self.array[at] == query

    def duplicate(self) -> bytes | None:
        """A key that occurs twice, if one does."""
        same = np.flatnonzero(self.array[1:] == self.array[:-1])
        return bytes(self.array[same[0]]) if len(same) else None


@dataclass
class Summary:
    records: int = 0
    generated: int = 0
    already_done: int = 0
    failed: int = 0
    earlier_errors: int = 0  # error rows from an earlier run, kept (not retried)
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
        earlier = f", {self.earlier_errors} of them errors (--retry-errors retries them)" if self.earlier_errors else ""
        return (
            f"done: {self.records} records ({self.generated} generated, {self.already_done} already done{earlier}"
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


def iter_records(path: Path) -> Iterator[tuple[str, Record]]:
    """(where, record) for every record line of the input, in order; a bad line raises."""
    for file in input_files(path):
        try:
            fh = file.open("rb")
        except OSError as exc:
            raise UsageError(f"{file}: cannot be read ({exc.strerror})") from None
        with fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                where = f"{file.name} line {n}"
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise UsageError(f"{where}: not UTF-8 text") from None
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{where}: not JSON ({exc.msg})") from None
                except RecursionError:
                    raise UsageError(f"{where}: nested too deeply") from None
                yield where, _record(obj, where)


def check_input(path: Path) -> Keys:
    """Read the whole input once: every line a record, every id once. The ids' digests."""
    keys = bytearray()
    for _, record in iter_records(path):
        keys += record.key
    found = Keys(keys)
    twice = found.duplicate()
    if twice is not None:
        places = [(where, r.id) for where, r in iter_records(path) if r.key == twice][:2]
        (first, rid), (second, _) = places
        raise UsageError(f"{second}: id {rid!r} already used at {first}; ids must be unique")
    return found


def read_records(path: Path) -> list[Record]:
    """Every record of a (small) input, checked."""
    check_input(path)
    return [r for _, r in iter_records(path)]


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


def record_problem(record: Record) -> str | None:
    """Why a record cannot be generated, found without the model (it then gets an error row)."""
    texts = [record.prompt] if record.prompt is not None else [v for m in record.messages or [] for v in m.values()]
    if isinstance(record.id, str) and not valid_unicode(record.id):
        return "the id is not valid Unicode text (it holds a lone surrogate)"
    if not all(valid_unicode(t) for t in texts if isinstance(t, str)):
        what = "the prompt is" if record.prompt is not None else "the messages are"
        return f"{what} not valid Unicode text (a lone surrogate)"
    return None


# --------------------------------------------------------------------------- output
def _row_bytes(row: dict[str, Any]) -> bytes:
    try:
        return json.dumps(row, ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:  # an id with a lone surrogate: escaped, so it reads back the same
        return json.dumps(row).encode() + b"\n"


def _ours(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """A complete output line as a batch run writes it (an object with ``id`` and ``text``), or why not."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, "not JSON"
    if not isinstance(obj, dict) or "id" not in obj or "text" not in obj:
        return None, "not a batch result (no 'id' and 'text')"
    return obj, ""


@dataclass
class Existing:
    """What an output file already holds."""

    done: Keys  # ids not to generate again
    errors: int  # error rows kept (not retried)


class Output:
    """The output of one run: checked and locked before the model loads, appended to after.
    Each :meth:`write` is one ``write`` call and one ``fsync``."""

    def __init__(self, path: Path, input_path: Path, *, retry_errors: bool = False):
        self.path = path
        _check_place(path, input_path)
        self._lock = _lock(path)
        try:
            self.existing = self._recover(retry_errors)
            self.fh = open(path, "ab")
        except BaseException:
            self.release()
            raise

    def _recover(self, retry_errors: bool) -> Existing:
        """Read what is there; refuse a file a batch run did not write (touching nothing); then
        cut a trailing partial line and, when retrying errors, drop the error rows."""
        path = self.path
        if not path.exists():
            return Existing(Keys(), 0)
        done, errors, keep, tail = bytearray(), 0, 0, b""
        with path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    tail = line
                    break
                keep += len(line)
                if not line.strip():
                    continue
                obj, why = _ours(line)
                if obj is None:
                    raise UsageError(f"{path} line {n}: {why}; this file was not written by a batch run "
                                     f"(it was left as it is: move it away or choose another --output)")
                if obj.get("error") and retry_errors:
                    continue
                errors += 1 if obj.get("error") else 0
                done += id_key(obj["id"])
        if tail and not tail.startswith(b'{"id": '):  # how every row this runner writes begins
            raise UsageError(f"{path}: not written by a batch run (it was left as it is: move it away or choose another --output)")
        if tail:
            with path.open("r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        if retry_errors:
            _drop_error_rows(path)
        return Existing(Keys(done), errors)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.fh.write(b"".join(_row_bytes(r) for r in rows))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        if getattr(self, "fh", None) is not None:
            self.fh.close()
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            lock_path, fd = self._lock
            self._lock = None
            try:
                os.unlink(lock_path)  # while still held: a runner waiting on it tries again (see _lock)
            except FileNotFoundError:
                pass
            os.close(fd)


def _check_place(path: Path, input_path: Path) -> None:
    """Refuse, before anything is touched, an output that cannot be one."""
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder; give a file name")
    target = path.resolve()
    for source in input_files(input_path):
        if source.resolve() == target:
            raise UsageError(f"--output {path} is also the input; give another file")
    if input_path.is_dir() and target.parent == input_path.resolve() and target.suffix in (".jsonl", ".json"):
        raise UsageError(f"--output {path} is in the input folder, where it would be read as input; give another folder")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output {path}: its folder cannot be created ({exc.strerror or exc})") from None
    if not parent.is_dir():
        raise UsageError(f"--output {path}: {parent} is not a folder")
    if path.exists():
        try:
            with path.open("ab"):
                pass
        except OSError as exc:
            raise UsageError(f"--output {path} cannot be written ({exc.strerror})") from None


def _lock(path: Path) -> tuple[Path, int]:
    """Hold ``.NAME.lock`` beside the output for the run, or refuse naming who holds it."""
    lock_path = path.with_name(f".{path.name}.lock")
    for _ in range(5):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"--output {path} cannot be written: {lock_path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UsageError(f"--output {path} is being written by another batch run ({holder}); "
                             f"wait for it to end or choose another --output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed it as we took it: take the new one
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        return lock_path, fd
    raise UsageError(f"--output {path}: could not take its lock {lock_path}; try again")


def _drop_error_rows(path: Path) -> None:
    """Rewrite the output without its error rows: a new file, synced, renamed over the old."""
    staging = path.with_name(f".{path.name}.retry.tmp")
    with path.open("rb") as src, staging.open("wb") as dst:
        for line in src:
            obj, _ = _ours(line)
            if obj is not None and not obj.get("error"):
                dst.write(line)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(staging, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------- generation backends
Result = dict[str, Any]  # id, text, prompt_tokens, completion_tokens, finish_reason (or error)
Backend = Callable[[Iterable[Record], int, float], Iterator[Result]]


def _windows(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while window := list(itertools.islice(it, size)):
        yield window


def transformers_backend(engine: Any, batch_size: int) -> Backend:
    """Windows of ``WINDOW`` records, each sorted by length (longest first) and batched, the
    batch refilled as sequences finish."""
    from runtime.engine_base import SamplingParams, Sequence, generate_all

    def run(records: Iterable[Record], max_tokens: int, temperature: float) -> Iterator[Result]:
        for window in _windows(records, WINDOW):
            seqs = []
            for r in window:
                try:
                    ids = engine.encode(r.prompt) if r.prompt is not None else engine.chat_ids(r.messages or [])
                except Exception as exc:  # noqa: BLE001 - the tokenizer or chat template rejects this record alone
                    yield {"id": r.id, "text": None, "error": one_line(exc)}
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
    def run(records: Iterable[Record], max_tokens: int, temperature: float) -> Iterator[Result]:
        for part in _windows(records, chunk):
            prompts = [{"prompt": r.prompt} if r.prompt is not None else {"messages": r.messages} for r in part]
            for r, (text, pt, ct, reason) in zip(part, offline.generate(prompts, max_tokens, temperature)):
                yield {"id": r.id, "text": text, "prompt_tokens": pt, "completion_tokens": ct, "finish_reason": reason}

    return run


# --------------------------------------------------------------------------- the run
@dataclass
class Prepared:
    """A run checked before the model loads: the input's ids, and the output checked and locked."""

    input_path: Path
    keys: Keys
    output: Output

    @cached_property
    def already_done(self) -> int:
        return self.output.existing.done.count_in(self.keys)

    @property
    def todo(self) -> int:
        return len(self.keys) - self.already_done

    def summary(self) -> Summary:
        return Summary(records=len(self.keys), already_done=self.already_done, earlier_errors=self.output.existing.errors)


def prepare(input_path: Path, output_path: Path, *, retry_errors: bool = False) -> Prepared:
    """Everything that can go wrong with the files, found before the model loads."""
    keys = check_input(input_path)
    return Prepared(input_path, keys, Output(output_path, input_path, retry_errors=retry_errors))


def run_batch(
    backend: Backend,
    input_path: Path,
    output_path: Path,
    *,
    max_tokens: int,
    temperature: float,
    progress: bool = True,
    retry_errors: bool = False,
    prepared: Prepared | None = None,
) -> Summary:
    run = prepared or prepare(input_path, output_path, retry_errors=retry_errors)
    out, done = run.output, run.output.existing.done
    summary = run.summary()
    rejected: list[Result] = []  # records that fail without the model, in reading order

    def todo() -> Iterator[Record]:
        for _, record in iter_records(run.input_path):
            if record.key in done:
                continue
            problem = record_problem(record)
            if problem:
                rejected.append({"id": record.id, "text": None, "error": problem})
                continue
            yield record

    bar = _progress(summary.records, summary.already_done, progress)
    start = time.monotonic()
    pending: list[Result] = []
    last_flush = start

    def take(result: Result) -> None:
        nonlocal pending, last_flush
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

    try:
        for result in itertools.chain(backend(todo(), max_tokens, temperature), [None]):
            while rejected:
                take(rejected.pop(0))
            if result is not None:
                take(result)
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
        project=tracking.project, entity=tracking.entity, tags=list(tracking.tags) or None, mode=tracking.wandb_mode(),
        name=tracking.run_name, job_type="batch-inference", config=run_config,
    )
    values = {f"batch/{k}": v for k, v in summary.as_dict().items() if isinstance(v, (int, float))}
    run.log(values)
    run.summary.update(values)
    run.finish()
    return None
