"""The runs' records, read: one place for the wizard (compare-experiments, promote) and the pods
(``python -m runtime promote``). Standard library only.

The contract (written by the launcher, ``wizard/launch.py``): each run has a folder
``/workspace/<name>/results/<run id>/`` with ``run.json`` (its id, name, group, sweep, parameters,
state, start and end, exit code and, when the run was given one, ``model_dir``: the folder it
saves its model in) and ``metrics.jsonl`` (one JSON object per logged step, with ``_step``).
:class:`Run` is one run as the readers see it, whichever source it came from (a record, a W&B
run, a Job's log); :func:`read_record` reads one record folder, :func:`read_records` a
``results/`` folder of them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from runtime.errors import UsageError


@dataclass
class Run:
    """One run as compare and promote see it, whichever source it came from."""

    id: str
    name: str = ""
    group: str | None = None
    sweep: str | None = None
    job_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    state: str = ""  # finished, failed, running, pending (or what W&B says: crashed, killed)
    started: float | None = None  # unix seconds
    finished: float | None = None
    runtime: float | None = None  # seconds, when start and end are not both known
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    goals: dict[str, str] = field(default_factory=dict)  # metric -> min|max, as the run declared it
    sources: list[str] = field(default_factory=list)  # where it was read: record, wandb offline, wandb, job log
    model_dir: str | None = None  # where the run saved its model (MLSHIFT_MODEL_DIR), as its record says

    def fill(self, other: "Run") -> None:
        """Complete this run with what ``other`` (the same run, from a later source) knows and it does not."""
        for f in ("name", "group", "sweep", "job_type", "state", "started", "finished", "runtime", "model_dir"):
            if getattr(self, f) in (None, ""):
                setattr(self, f, getattr(other, f))
        for k, v in other.params.items():
            self.params.setdefault(k, v)
        for m, points in other.history.items():
            if m not in self.history:
                self.history[m] = list(points)
        for m, g in other.goals.items():
            self.goals.setdefault(m, g)
        self.sources += [s for s in other.sources if s not in self.sources]

    def duration(self, now: float) -> float | None:
        """Start to end; else the runtime it logged last (a W&B run with no end: maybe stopped long
        ago); else, running, start to now."""
        if self.started is not None and self.finished is not None:
            return max(0.0, self.finished - self.started)
        if self.runtime is not None:
            return self.runtime
        if self.started is not None and self.state in ("running", "pending", ""):
            return max(0.0, now - self.started)
        return None

    def final(self, metric: str) -> float | None:
        points = self.history.get(metric)
        return points[-1][1] if points else None

    def best(self, metric: str, goal: str) -> tuple[float, int] | None:
        """The best finite value and its step (the first step that reached it)."""
        good = [(v, s) for s, v in self.history.get(metric, []) if math.isfinite(v)]
        if not good:
            return None
        pick = min if goal == "min" else max
        value = pick(v for v, _ in good)
        return value, next(s for v, s in good if v == value)


def newness(run: Run) -> float:
    """When a run ended, else when it started (0 when neither is known)."""
    return run.finished or run.started or 0.0


def ranked(runs: Iterable[Run], metric: str | None, goal: str) -> list[Run]:
    """The order compare and promote rank runs in, best first: by the best value of ``metric``
    each reached (``goal``: min or max); runs without it last. Equal values: the newest run first
    (:func:`newness`), then the greater id."""
    by_id = sorted(runs, key=lambda r: r.id, reverse=True)

    def key(r: Run) -> tuple[int, float, float]:
        b = r.best(metric, goal) if metric else None
        if b is None:
            return (1, 0.0, -newness(r))
        return (0, b[0] if goal == "min" else -b[0], -newness(r))

    return sorted(by_id, key=key)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def sorted_history(history: dict[str, dict[int, float]]) -> dict[str, list[tuple[int, float]]]:
    return {m: sorted(points.items()) for m, points in history.items() if points}


def iso_time(text: Any) -> float | None:
    """An ISO 8601 time (``2025-11-30T03:12:00Z``) as unix seconds; None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted names; W&B's own entries (``_wandb``, ...) left out."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if str(k).startswith("_"):
            continue
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_record(folder: Path) -> Run | None:
    """``results/<run id>/``: run.json and metrics.jsonl (the shared contract). None when run.json
    is not a record (unreadable, or not an object)."""
    try:
        data = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    params = data.get("params")
    model_dir = data.get("model_dir")
    run = Run(id=str(data.get("id") or folder.name), name=str(data.get("name") or ""),
              group=str(data["group"]) if data.get("group") else None,
              sweep=str(data["sweep"]) if data.get("sweep") else None,
              job_type=str(data["job_type"]) if data.get("job_type") else None,
              params=flat_params(params) if isinstance(params, dict) else {},
              state=str(data.get("state") or ""), started=iso_time(data.get("started")), finished=iso_time(data.get("finished")),
              sources=["record"], model_dir=model_dir if isinstance(model_dir, str) and model_dir else None)
    if run.state == "running" and run.finished is None and data.get("exit_code") is not None:
        run.state = "finished" if data.get("exit_code") == 0 else "failed"
    history: dict[str, dict[int, float]] = {}
    try:
        with open(folder / "metrics.jsonl", encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh):
                try:
                    row = json.loads(line)
                except ValueError:  # a line being written, or damaged: the others still count
                    continue
                if not isinstance(row, dict):
                    continue
                step = int(row["_step"]) if is_number(row.get("_step")) and math.isfinite(row["_step"]) else n
                for k, v in row.items():
                    if not k.startswith("_") and is_number(v):
                        history.setdefault(k, {})[step] = float(v)
    except OSError:
        pass
    run.history = sorted_history(history)
    return run


def read_records(results: Path) -> tuple[list[Run], list[str]]:
    """Every record in a ``results/`` folder (``results/<run id>/run.json``), sorted by run id, and
    a note for each folder whose run.json is not a record."""
    runs: list[Run] = []
    notes: list[str] = []
    try:
        folders = sorted(p for p in results.iterdir() if p.is_dir() and (p / "run.json").is_file())
    except OSError:
        return [], []
    for folder in folders:
        run = read_record(folder)
        if run is None:
            notes.append(f"note: {folder}/run.json is not a run record; left out")
        else:
            runs.append(run)
    return sorted(runs, key=lambda r: r.id), notes


def num(value: float | None, missing: str = "") -> str:
    """A metric's value as people read it: four significant digits, ``nan``/``inf`` as they are."""
    if value is None:
        return missing
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def goal_of(goal: str | None) -> str:
    """``min`` or ``max`` from min, max, minimize, maximize (None: min)."""
    if goal is not None and not isinstance(goal, str):
        raise UsageError(f"goal {goal!r}: expected min or max")
    word = (goal or "min").lower()
    if word in ("min", "minimize"):
        return "min"
    if word in ("max", "maximize"):
        return "max"
    raise UsageError(f"goal {goal!r}: expected min or max")
