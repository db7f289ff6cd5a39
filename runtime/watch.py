"""Checkpoints evaluated as they appear (``python -m runtime watch``).

A trainer writes Hugging Face model folders under one folder (``checkpoint-500/``,
``checkpoint-1000/``, ...). The watcher finds each one once it is complete, generates for a fixed
set of prompts with the transformers engine (greedy by default, so outputs are comparable), and
writes ``<output>/eval/<checkpoint>.jsonl`` and one HTML comparison ``<output>/eval/index.html``.

**A checkpoint** is a folder holding a ``config.json``, directly under the watched folder or one
level further down: the watched folder may be a trainer's output folder (``checkpoint-500/``) or
a folder of runs, each saving its checkpoints and, in the run folder itself, its final model (a
deployment's models root: ``<root>/<run id>/checkpoint-500/``, ``<root>/<run id>/``). A nested one
is named ``<run>/<checkpoint>`` and its results are ``<run>--<checkpoint>.jsonl``
(:func:`result_name`). Checkpoints directly under the folder come first (by step, then the others
by modification time), then the runs in name order (a run id starts with its date and time), each
run's checkpoints by step and its final model last. A checkpoint is **complete** when

1. every file its index lists (``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``,
   the ``weight_map``) is present, or, without an index, a weight file (``*.safetensors``,
   ``pytorch_model.bin``) is; and
2. either the marker file :data:`MARKER` (``mlshift-complete``, written last: by the trainer, or
   by mlshift's launcher, wizard/launch.py, when a run's script exits 0) is in it, which proves it
   complete at once, or no file in it has changed for ``quiet_seconds``: the
   newest modification time is that old, or the names, sizes and modification times have stayed
   the same over looks that far apart (for writers that keep old modification times).

The finding is pure functions of the folder and the clock (:func:`find_checkpoints`,
:func:`missing_files`, :class:`Quiet`), tested without a model.

**Restart-safe.** A result is written to a temporary file and renamed, so a ``.jsonl`` that exists
is complete and its checkpoint is not evaluated again; a checkpoint interrupted mid-way has no
``.jsonl`` and is evaluated again from scratch. A checkpoint that fails to load gets
``<checkpoint>.failed`` (the reason) beside the results and is not retried until that file is removed.
"""

from __future__ import annotations

import difflib
import html
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.batch import Record, read_records, transformers_backend
from runtime.errors import UsageError, one_line

MARKER = "mlshift-complete"
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
STEP = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------- the prompts
def read_prompts(path: Path) -> list[Record]:
    """The fixed prompts, read whole: JSON Lines of ``{"id": ..., "prompt": "..."}`` (or
    ``"messages"``), the batch runner's records (ids unique), at least one. A bad file raises
    UsageError, one line naming the file and the line. The watcher reads its prompts with it before
    any model, and ``deploy`` a deployment's prompts file before it changes anything."""
    records = read_records(path)
    if not records:
        raise UsageError(f"{path.name}: no prompts in it")
    return records


# --------------------------------------------------------------------------- finding checkpoints
def step_of(name: str) -> int | None:
    """The step of ``checkpoint-<step>``, else None."""
    m = STEP.match(name)
    return int(m.group(1)) if m else None


def order_key(folder: Path, missing_mtime: float | None = None) -> tuple[int, float, str]:
    """Checkpoints with a step first, by step; the others after them, by modification time
    (``missing_mtime``, else last, for a folder that is gone)."""
    step = step_of(folder.name)
    if step is not None:
        return (0, float(step), folder.name)
    try:
        return (1, folder.stat().st_mtime, folder.name)
    except FileNotFoundError:
        return (1, float("inf") if missing_mtime is None else missing_mtime, folder.name)


SAVING = "tmp-checkpoint-"  # the Hugging Face Trainer saves into tmp-checkpoint-<step>/, then renames it


def subfolders(folder: Path) -> list[Path]:
    """The folders directly in ``folder``, hidden ones and those a trainer is still saving into left
    out; none when it cannot be read (or is gone)."""
    try:
        return [p for p in folder.iterdir() if not p.name.startswith((".", SAVING)) and p.is_dir()]
    except OSError:
        return []


def is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def find_checkpoints(root: Path) -> list[Path]:
    """The model folders (with a ``config.json``) under ``root``, in evaluation order: those
    directly in it and, one level down, those in its other folders (a run's checkpoints); a run
    folder that holds its final model is one too. None while ``root`` does not exist."""
    found = []
    for top in subfolders(root):
        if is_model(top):
            found.append(top)
        found += [sub for sub in subfolders(top) if is_model(sub)]
    return sorted(found, key=lambda folder: checkpoint_key(root, checkpoint_name(root, folder)))


def checkpoint_name(root: Path, folder: Path) -> str:
    """How a checkpoint is named in the results and the HTML: ``checkpoint-500``, or ``<run>/checkpoint-500``."""
    return folder.relative_to(root).as_posix()


def checkpoint_key(root: Path, name: str, missing_mtime: float | None = None) -> tuple[tuple[int, float, str], tuple[int, float, str]]:
    """The evaluation order of checkpoint ``name`` (see the module's docstring): (its place
    among the folders directly in ``root``, its place in its run)."""
    run, _, inner = name.partition("/")
    if inner:
        return (2, 0.0, run), order_key(root / name, missing_mtime)
    folder = root / name
    if any(is_model(sub) for sub in subfolders(folder)):  # a run's final model, after its checkpoints
        return (2, 0.0, name), (2, 0.0, "")
    return order_key(folder, missing_mtime), (-1, 0.0, "")


def missing_files(folder: Path) -> list[str]:
    """What the checkpoint lacks: the files its index lists that are not there, or a weight file."""
    for name in INDEXES:
        index = folder / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                files = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return [f"{name} (not readable yet)"]
            return [f for f in files if not (folder / f).is_file()]
    if any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").is_file():
        return []
    return ["model.safetensors"]


def snapshot(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file's (relative name, size, modification time): what changes while one is written.
    The checkpoints inside a run folder are theirs, not its (its own files are its final model)."""
    out = []
    for dirpath, dirs, files in os.walk(folder):
        if dirpath == str(folder):
            dirs[:] = [d for d in dirs if not (is_model(folder / d) or STEP.match(d) or d.startswith(SAVING))]
        for f in files:
            p = Path(dirpath) / f
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


@dataclass
class Quiet:
    """When each checkpoint's files were first seen as they are now (the quiet period's start)."""

    seconds: float
    seen: dict[str, tuple[tuple[tuple[str, int, int], ...], float]] = field(default_factory=dict)

    def why_incomplete(self, folder: Path, now: float, name: str | None = None) -> str | None:
        """None when ``folder`` (the checkpoint ``name``, default its folder's name) is complete at
        ``now``; else why not (one phrase)."""
        name = name or folder.name
        missing = missing_files(folder)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            return f"missing {shown}"
        if (folder / MARKER).exists():
            return None
        snap = snapshot(folder)
        before = self.seen.get(name)
        if before is None or before[0] != snap:
            self.seen[name] = (snap, now)
            since = now
        else:
            since = before[1]
        newest = max((m for _, _, m in snap), default=0) / 1e9
        if now - since >= self.seconds or time.time() - newest >= self.seconds:
            return None
        return f"files changed less than {self.seconds:g} s ago (no {MARKER} marker)"


# --------------------------------------------------------------------------- results
def result_name(name: str) -> str:
    """A checkpoint's name as one file name: ``<run>/<checkpoint>`` becomes ``<run>--<checkpoint>``."""
    return name.replace("/", "--")


def result_path(eval_dir: Path, name: str) -> Path:
    return eval_dir / f"{result_name(name)}.jsonl"


def failure_path(eval_dir: Path, name: str) -> Path:
    return eval_dir / f"{result_name(name)}.failed"


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: a temporary file, synced, renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_results(path: Path) -> list[dict[str, Any]] | None:
    """A results file's rows; None when it is not one the watcher wrote (not JSON Lines of objects)."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return rows if all(isinstance(row, dict) for row in rows) else None


def shown_prompt(record: Record) -> str:
    if record.prompt is not None:
        return record.prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in record.messages or [])


# --------------------------------------------------------------------------- the HTML comparison
def _words(text: str) -> list[str]:
    return [w for w in re.split(r"(\s+)", text) if w]


def diff_html(before: str | None, after: str | None) -> str:
    """``after`` escaped, the words changed since ``before`` in ``<ins>``, the removed in ``<del>``."""
    if after is None:
        return '<span class="err">(no text)</span>'
    if before is None:
        return html.escape(after)
    a, b = _words(before), _words(after)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(b[j1:j2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Checkpoint comparison</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; white-space: pre-wrap; max-width: 40em; }}
ins {{ background: #cfc; text-decoration: none; }}
del {{ background: #fcc; }}
.err {{ color: #a00; }}
</style></head><body>
<h1>Checkpoint comparison</h1>
<p>{summary} Changes from the previous checkpoint: <ins>added</ins>, <del>removed</del>.</p>
<table>
<tr><th>id</th><th>prompt</th>{heads}</tr>
{rows}
</table></body></html>
"""


def comparison_html(results: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """One table: a row per prompt, a column per checkpoint (in order)."""
    ids: list[Any] = []
    prompts: dict[str, str] = {}
    by_ckpt: list[dict[str, dict[str, Any]]] = []
    for _, rows in results:
        table = {}
        for row in rows:
            key = json.dumps(row["id"])
            if key not in prompts:
                ids.append(row["id"])
                prompts[key] = row.get("prompt") or ""
            table[key] = row
        by_ckpt.append(table)
    heads = "".join(f"<th>{html.escape(name)}</th>" for name, _ in results)
    lines = []
    for rid in ids:
        key = json.dumps(rid)
        cells, before = [], None
        for table in by_ckpt:
            row = table.get(key)
            text = row.get("text") if row else None
            if row and row.get("error"):
                cells.append(f'<td class="err">{html.escape(row["error"])}</td>')
            else:
                cells.append(f"<td>{diff_html(before, text)}</td>")
            before = text if text is not None else before
        lines.append(f"<tr><td>{html.escape(str(rid))}</td><td>{html.escape(prompts[key])}</td>{''.join(cells)}</tr>")
    summary = f"{len(ids)} prompts, {len(results)} checkpoints."
    return PAGE.format(summary=summary, heads=heads, rows="\n".join(lines))


# --------------------------------------------------------------------------- the watcher
Loader = Callable[[Path], Any]  # a checkpoint folder -> a loaded engine (encode, decode, ...)


class Watcher:
    """One watched folder: finds complete checkpoints, evaluates each once, keeps the HTML current."""

    def __init__(self, root: Path, prompts: Path, output: Path, *, load: Loader, max_tokens: int = 64,
                 temperature: float = 0.0, batch_size: int | None = None, quiet_seconds: float = 30.0,
                 tracker: Any = None, say: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wait_for_root: bool = False):
        # wait_for_root: a folder that does not exist yet is one no run has saved a model in yet
        # (a deployment's models root before its first job); it is looked at like the others.
        if not root.is_dir() and (root.exists() or not wait_for_root):
            raise UsageError(f"--checkpoints {root}: no such folder")
        self.root = root
        self.records = read_prompts(prompts)  # bad input stops here, one line, before any model
        self.eval_dir = output / "eval"
        try:
            self.eval_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--output {output}: cannot create {self.eval_dir} ({exc.strerror or exc})") from None
        self.load, self.max_tokens, self.temperature, self.batch_size = load, max_tokens, temperature, batch_size
        self.quiet = Quiet(quiet_seconds)
        self.tracker = tracker
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self._said: dict[str, str] = {}  # what was last said about a checkpoint, so it is said once
        self.failed_now: list[str] = []

    def _once(self, name: str, line: str) -> None:
        if self._said.get(name) != line:
            self._said[name] = line
            self.say(line)

    def pending(self) -> list[Path]:
        """The complete checkpoints without a result or a failure record, in order."""
        todo = []
        for folder in find_checkpoints(self.root):
            name = checkpoint_name(self.root, folder)
            if result_path(self.eval_dir, name).exists():
                continue
            failed = failure_path(self.eval_dir, name)
            if failed.exists():
                self._once(name, f"skipping {name}: it failed earlier ({failed.read_text(encoding='utf-8').strip()}); "
                                 f"remove {failed} to retry")
                continue
            why = self.quiet.why_incomplete(folder, self.clock(), name)
            if why:
                self._once(name, f"waiting for {name}: incomplete ({why})")
                continue
            todo.append(folder)
        return todo

    def run_pass(self) -> list[str]:
        """Evaluate every checkpoint complete now; the names evaluated."""
        done = []
        for folder in self.pending():
            if self.evaluate(folder):
                done.append(checkpoint_name(self.root, folder))
        if done or (not (self.eval_dir / "index.html").exists() and any(self.eval_dir.glob("*.jsonl"))):
            self.write_html()
        return done

    def evaluate(self, folder: Path) -> bool:
        name = checkpoint_name(self.root, folder)
        self.say(f"evaluating {name} on {len(self.records)} prompts")
        start = time.monotonic()
        try:
            engine = self.load(folder)
            if getattr(engine, "task", "generate") != "generate":
                raise UsageError("an encoder, not a generative model")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any checkpoint that cannot load is skipped, recorded
            reason = one_line(exc)
            failed = failure_path(self.eval_dir, name)
            write_atomic(failed, (reason + "\n").encode())
            self.failed_now.append(name)
            self._once(name, f"error: checkpoint {name} failed to load: {reason}; skipped (remove {failed} to retry)")
            return False
        try:
            size = self.batch_size or getattr(engine, "max_batch_size", None) or 64
            backend = transformers_backend(engine, size)
            got = {json.dumps(r["id"]): r for r in backend(iter(self.records), self.max_tokens, self.temperature)}
        finally:
            close = getattr(engine, "close", None)
            if close:
                close()
        step = step_of(folder.name)
        rows = []
        for record in self.records:
            r = got.get(json.dumps(record.id), {"text": None, "error": "no result"})
            row = {"checkpoint": name, "step": step, "id": record.id, "prompt": shown_prompt(record),
                   "text": r.get("text"), "tokens": r.get("completion_tokens", 0)}
            if r.get("error"):
                row["error"] = r["error"]
            rows.append(row)
        data = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
        write_atomic(result_path(self.eval_dir, name), data)
        self.say(f"evaluated {name}: {result_path(self.eval_dir, name)} ({time.monotonic() - start:.1f} s)")
        if self.tracker is not None:
            self.tracker.log(rows)
        return True

    def results(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The results written so far, in checkpoint order (a checkpoint removed since keeps its
        place by its step, else by when its results were written)."""
        found = []
        for path in self.eval_dir.glob("*.jsonl"):
            rows = read_results(path)
            if rows is None:
                self._once(path.name, f"note: {path} is not a results file of the watcher (JSON Lines of objects); left out of the comparison")
                continue
            name = str(rows[0].get("checkpoint") or "") if rows else ""
            if not name or result_name(name) != path.name[: -len(".jsonl")]:
                name = path.name[: -len(".jsonl")]
            found.append((checkpoint_key(self.root, name, path.stat().st_mtime), name, rows))
        return [(name, rows) for _, name, rows in sorted(found, key=lambda f: (f[0], f[1]))]

    def write_html(self) -> Path:
        page = self.eval_dir / "index.html"
        write_atomic(page, comparison_html(self.results()).encode())
        return page

    def watch(self, every: float, *, sleep: Callable[[float], None] = time.sleep, passes: int | None = None) -> None:
        """Evaluate what is complete, then look again every ``every`` seconds (until interrupted)."""
        n = 0
        while True:
            self.run_pass()
            n += 1
            if passes is not None and n >= passes:
                return
            sleep(every)


# --------------------------------------------------------------------------- W&B
class WandbTable:
    """One W&B run for the watcher; a table of every row so far logged after each checkpoint."""

    COLUMNS = ["checkpoint", "step", "id", "prompt", "text"]

    def __init__(self, project: str, config: dict[str, Any]):
        from runtime.settings import TrackingSettings

        try:
            import wandb
        except ImportError:
            raise UsageError("W&B tracking is on but wandb is not installed (pip install 'mlshift[runtime]')") from None
        self.wandb = wandb
        mode = TrackingSettings(enabled=True, project=project).wandb_mode()
        self.run = wandb.init(project=project, mode=mode, job_type="checkpoint-eval", config=config)
        self.rows: list[list[Any]] = []

    def log(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend([r["checkpoint"], r["step"], str(r["id"]), r["prompt"], r["text"]] for r in rows)
        self.run.log({"eval/outputs": self.wandb.Table(columns=self.COLUMNS, data=[list(r) for r in self.rows])})

    def finish(self) -> None:
        self.run.finish()
