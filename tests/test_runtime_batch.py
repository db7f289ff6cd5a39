"""``python -m runtime batch``: JSON Lines in and out, exactly once, resumable after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.batch import prepare, read_records, run_batch, transformers_backend
from runtime.engine_transformers import TransformersEngine
from runtime.errors import UsageError
from runtime.settings import ServeSettings
from runtime_helpers import ROOT, run_cli, tiny_llama, wait_until  # noqa: F401


def write_input(path: Path, n: int, *, chat_every: int = 5) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            if chat_every and i % chat_every == 0:
                fh.write(json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}"}]}) + "\n")
            else:
                fh.write(json.dumps({"id": f"r{i}", "prompt": "word " * (i % 7 + 1) + f"number {i}"}) + "\n")
    return path


def read_output(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture(scope="module")
def engine(tiny_llama: Path) -> TransformersEngine:
    e = TransformersEngine(ServeSettings(model=str(tiny_llama)))
    e.load()
    return e


def test_every_id_gets_one_line_with_text_and_token_counts(engine: TransformersEngine, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 23)
    out = tmp_path / "out" / "results.jsonl"
    summary = run_batch(transformers_backend(engine, 8), src, out, max_tokens=6, temperature=0.0, progress=False)
    rows = read_output(out)
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(23))
    for r in rows:
        assert isinstance(r["text"], str) and r["prompt_tokens"] > 0 and 1 <= r["completion_tokens"] <= 6
    assert summary.records == summary.generated == 23 and summary.already_done == 0
    assert summary.completion_tokens == sum(r["completion_tokens"] for r in rows)
    assert "23 records" in summary.line() and "tokens/s" in summary.line()


def test_rerun_skips_done_ids_and_cuts_a_partial_last_line(engine: TransformersEngine, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "r1", "text": "earlier", "prompt_tokens": 1, "completion_tokens": 1}) + "\n" + '{"id": "r2", "te')
    summary = run_batch(transformers_backend(engine, 4), src, out, max_tokens=3, temperature=0.0, progress=False)
    rows = read_output(out)
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(10))
    assert rows[0] == {"id": "r1", "text": "earlier", "prompt_tokens": 1, "completion_tokens": 1}
    assert summary.already_done == 1 and summary.generated == 9
    again = run_batch(transformers_backend(engine, 4), src, out, max_tokens=3, temperature=0.0, progress=False)
    assert again.generated == 0 and len(read_output(out)) == 10


def test_a_folder_of_inputs_is_read_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text('{"id": 2, "prompt": "b"}\n')
    (tmp_path / "a.jsonl").write_text('{"id": 1, "prompt": "a"}\n\n')
    assert [r.id for r in read_records(tmp_path)] == [1, 2]


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "line 1: not JSON"),
        ('{"prompt": "x"}', "needs an 'id'"),
        ('{"id": "a"}', "exactly one of 'prompt'"),
        ('{"id": "a", "prompt": "x", "messages": []}', "exactly one of 'prompt'"),
        ('{"id": "a", "messages": [{"role": "user"}]}', "'messages' must be"),
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}', "already used"),
    ],
)
def test_bad_input_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "in.jsonl").write_text(line + "\n")
    with pytest.raises(UsageError, match=message):
        read_records(tmp_path / "in.jsonl")


def test_a_foreign_output_file_is_not_appended_to(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "a"}\n')
    out = tmp_path / "out.jsonl"
    out.write_text("hello\n")
    with pytest.raises(UsageError, match="not written by a batch run"):
        prepare(tmp_path / "in.jsonl", out)
    assert out.read_text() == "hello\n"


def test_command_line_errors_are_one_line(tiny_llama: Path, tmp_path: Path) -> None:
    r = run_cli("batch", "--model", str(tiny_llama), "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "input not found" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_kill_9_mid_run_then_restart_gives_every_id_exactly_once(tiny_llama: Path, tmp_path: Path) -> None:
    n = 400
    src = write_input(tmp_path / "in.jsonl", n, chat_every=0)
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "runtime", "batch", "--model", str(tiny_llama), "--input", str(src), "--output", str(out),
            "--max-tokens", "24", "--batch-size", "4", "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def some_written() -> bool:
        assert proc.poll() is None, "the batch run ended before it could be killed"
        return out.exists() and out.read_bytes().count(b"\n") >= 1  # the first record is written at once

    try:
        wait_until(some_written, what="the first records", every=0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written_before = out.read_bytes().count(b"\n")
    assert written_before < n

    done = run_cli(*args[3:])
    assert done.returncode == 0, done.stderr
    assert f"{n} records" in done.stdout and "already done" in done.stdout
    rows = read_output(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == n and set(ids) == {f"r{i}" for i in range(n)}
    assert all(r["completion_tokens"] >= 1 for r in rows)


def test_summary_is_logged_to_weights_and_biases_offline(tmp_path: Path) -> None:
    """A real W&B run in offline mode (no network): its record file holds the batch summary."""
    pytest.importorskip("wandb", reason="wandb is part of the runtime extra (installed by make test)")
    code = (
        "from runtime.batch import log_to_tracker, Summary\n"
        "from runtime.settings import TrackingSettings\n"
        "note = log_to_tracker(Summary(records=5, generated=5, completion_tokens=40, seconds=2.0),\n"
        "    TrackingSettings(enabled=True, project='batch-proj', tags=('nightly',), mode='offline', run_name='run-1'),\n"
        "    {'model': 'tiny'})\n"
        "assert note is None, note\n"
    )
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (record,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    for expected in (b"batch-proj", b"nightly", b"run-1", b"batch/completion_tokens", b"batch/records"):
        assert expected in data, expected


def test_other_trackers_are_named_not_silently_ignored() -> None:
    from runtime.batch import Summary, log_to_tracker
    from runtime.settings import TrackingSettings

    note = log_to_tracker(Summary(), TrackingSettings(enabled=True, backend="mlflow"), {})
    assert note == "tracking backend 'mlflow' is not supported by batch runs yet; summary not logged"


def test_tracking_mode_auto_follows_what_the_pod_was_given() -> None:
    from runtime.settings import TrackingSettings

    auto = TrackingSettings(enabled=True)
    assert auto.wandb_mode({}) == "offline"
    assert auto.wandb_mode({"WANDB_API_KEY": "k"}) == "online"
    assert auto.wandb_mode({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}) == "offline"
    assert TrackingSettings(enabled=True, mode="online").wandb_mode({}) == "online"
