"""The batch runner and the files it is given: nothing it did not write is ever changed, one
output has one writer, and a record that fails gets an error row while the run goes on. Every
run here is the real command line in a subprocess, on the tiny model."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime_helpers import ROOT, run_cli, tiny_llama, wait_until  # noqa: F401


def batch(model: Path, src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("batch", "--model", str(model), "--input", str(src), "--output", str(out), "--max-tokens", "4",
                   "--no-progress", *extra)


def write_input(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"record number {i}"}) + "\n" for i in range(n)))
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr, result.stderr
    assert "loaded" not in result.stderr  # refused before the model was loaded


# --------------------------------------------------------------------------- files it refuses
@pytest.mark.parametrize("content", [
    b"notes\nmore notes\n",  # a two-line text file (was cut to one line)
    b'{"id": 1}\n',  # one JSON line, not a result (was wiped)
    b"just text, no newline",
    b'{"id": "r1", "text": "ours", "completion_tokens": 1}\nand then a foreign line\n',
    b'[1, 2, 3]\n{"id": "r1", "text": "x"}\n',
    b"\xff\xfe binary \x00\x01\n",
    b'{"id": "r1", "text": "ours"}\n{"half": "of a line that is not ours',
])
def test_an_output_it_did_not_write_is_refused_and_left_exactly_as_it_was(tiny_llama: Path, tmp_path: Path, content: bytes) -> None:
    src = write_input(tmp_path / "in.jsonl", 3)
    out = tmp_path / "notes.txt"
    out.write_bytes(content)
    refused(batch(tiny_llama, src, out), "not written by a batch run")
    assert out.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "notes.txt"]  # no lock file left behind


def test_input_and_output_may_not_be_the_same_file(tiny_llama: Path, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 3)
    before = digest(src)
    refused(batch(tiny_llama, src, src), "also the input")
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    refused(batch(tiny_llama, src, link), "also the input")
    folder = tmp_path / "inputs"
    folder.mkdir()
    write_input(folder / "a.jsonl", 2)
    refused(batch(tiny_llama, folder, folder / "out.jsonl"), "in the input folder")
    refused(batch(tiny_llama, folder, folder / "a.jsonl"), "also the input")
    assert digest(src) == before and sorted(p.name for p in folder.iterdir()) == ["a.jsonl"]


def test_an_output_that_cannot_be_written_is_refused_before_the_model_loads(tiny_llama: Path, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 3)
    (tmp_path / "a-folder").mkdir()
    refused(batch(tiny_llama, src, tmp_path / "a-folder"), "is a folder")
    (tmp_path / "a-file").write_text("x")
    refused(batch(tiny_llama, src, tmp_path / "a-file" / "out.jsonl"), "cannot be created")
    refused(batch(tiny_llama, src, Path("/proc/no-such-place/out.jsonl")), "cannot be created")
    # a missing folder that can be created is created
    done = batch(tiny_llama, src, tmp_path / "new" / "deeper" / "out.jsonl")
    assert done.returncode == 0, done.stderr and len(rows(tmp_path / "new" / "deeper" / "out.jsonl")) == 3


# --------------------------------------------------------------------------- one writer
def test_a_second_runner_on_the_same_output_refuses_naming_the_first(tiny_llama: Path, tmp_path: Path) -> None:
    n = 300
    src = write_input(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "runtime", "batch", "--model", str(tiny_llama), "--input", str(src), "--output", str(out),
            "--max-tokens", "24", "--batch-size", "2", "--no-progress"]
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: out.exists() and out.stat().st_size > 0, what="the first runner to write")
        second = batch(tiny_llama, src, out)
        refused(second, f"being written by another batch run (pid {first.pid} on ")
        assert first.poll() is None, "the first runner should still be running"
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr
    ids = [r["id"] for r in rows(out)]
    assert len(ids) == n and set(ids) == {f"r{i}" for i in range(n)}
    assert not (tmp_path / ".out.jsonl.lock").exists()


def test_runners_started_together_write_every_id_exactly_once(tiny_llama: Path, tmp_path: Path) -> None:
    n = 200
    src = write_input(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "runtime", "batch", "--model", str(tiny_llama), "--input", str(src), "--output", str(out),
            "--max-tokens", "8", "--no-progress"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for code, err in results:
        assert code == 0 or (code == 2 and "being written by another batch run" in err), err
    assert any(code == 0 for code, _ in results)
    ids = [r["id"] for r in rows(out)]
    assert len(ids) == n and len(set(ids)) == n


def test_a_killed_runner_leaves_no_lock_that_blocks_the_next(tiny_llama: Path, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "runtime", "batch", "--model", str(tiny_llama), "--input", str(src), "--output", str(out),
            "--max-tokens", "24", "--batch-size", "2", "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: out.exists() and out.stat().st_size > 0, what="the first records")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".out.jsonl.lock").exists()  # the file stays; the lock went with the process
    done = batch(tiny_llama, src, out)
    assert done.returncode == 0, done.stderr
    assert sorted(r["id"] for r in rows(out)) == sorted(f"r{i}" for i in range(200))


# --------------------------------------------------------------------------- bad records
def test_records_that_fail_get_error_rows_the_run_goes_on_and_a_resume_does_not_retry_them(tiny_llama: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"id": "ok1", "prompt": "fine"}\n'
        '{"id": "bad-prompt", "prompt": "bad \\ud800"}\n'
        '{"id": "bad \\udfff id", "prompt": "fine too"}\n'
        '{"id": "bad-chat", "messages": [{"role": "user", "content": "\\ud83d"}]}\n'
        '{"id": "ok2", "prompt": "also fine"}\n'
    )
    out = tmp_path / "out.jsonl"
    first = batch(tiny_llama, src, out)
    assert first.returncode == 0, first.stderr
    assert "5 records (5 generated, 0 already done, 3 failed)" in first.stdout
    by_id = {r["id"]: r for r in rows(out)}
    assert set(by_id) == {"ok1", "ok2", "bad-prompt", "bad \udfff id", "bad-chat"}
    for rid in ("bad-prompt", "bad \udfff id", "bad-chat"):
        assert by_id[rid]["text"] is None and "not valid Unicode" in by_id[rid]["error"]
    assert isinstance(by_id["ok1"]["text"], str) and "error" not in by_id["ok1"]
    out.read_bytes().decode("utf-8")  # the file itself is valid UTF-8 (the bad id is escaped)

    again = batch(tiny_llama, src, out)
    assert again.returncode == 0 and "already done, 3 of them errors (--retry-errors retries them)" in again.stdout
    assert "nothing to do" in again.stderr and len(rows(out)) == 5


def test_retry_errors_generates_them_again_and_keeps_one_row_per_id(tiny_llama: Path, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out.jsonl"
    assert batch(tiny_llama, src, out).returncode == 0
    lines = out.read_text().splitlines()
    lines[1] = json.dumps({"id": json.loads(lines[1])["id"], "text": None, "error": "RuntimeError: a fault last time"})
    out.write_text("\n".join(lines) + "\n")
    kept = batch(tiny_llama, src, out)
    assert "nothing to do" in kept.stderr and sum(1 for r in rows(out) if r.get("error")) == 1
    retried = batch(tiny_llama, src, out, "--retry-errors")
    assert retried.returncode == 0, retried.stderr
    assert "4 records (1 generated, 3 already done)" in retried.stdout
    result = rows(out)
    assert sorted(r["id"] for r in result) == [f"r{i}" for i in range(4)] and not any(r.get("error") for r in result)


@pytest.mark.parametrize("content, words", [
    (b'{"id": 1, "prompt": "caf\xe9"}\n', "in.jsonl line 1: not UTF-8 text"),
    (b'{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b"}\n\xff\n', "in.jsonl line 3: not UTF-8 text"),
    (b'{"id": 1, "prompt": "a"}\n' + b"[" * 100_000 + b"\n", "in.jsonl line 2: nested too deeply"),
    (b'{"id": 1, "prompt": "a"}\n{"id": 1.5, "prompt": "b"}\n', "in.jsonl line 2: needs an 'id'"),
    (b'{"id": "x", "prompt": "a"}\n{"id": "y", "prompt": "b"}\n{"id": "x", "prompt": "c"}\n', "in.jsonl line 3: id 'x' already used at in.jsonl line 1"),
])
def test_input_that_is_not_records_stops_before_the_model_loads_naming_file_and_line(
    tiny_llama: Path, tmp_path: Path, content: bytes, words: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out.jsonl"
    refused(batch(tiny_llama, src, out), words)
    assert not out.exists()


def test_a_finished_run_is_not_loaded_again(tiny_llama: Path, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out.jsonl"
    assert batch(tiny_llama, src, out).returncode == 0
    start = out.stat().st_mtime_ns
    time.sleep(0.01)
    again = run_cli("batch", "--model", str(tiny_llama), "--input", str(src), "--output", str(out), "--log-level", "info")
    assert again.returncode == 0 and "nothing to do" in again.stderr and "loaded" not in again.stderr
    assert out.stat().st_mtime_ns == start
