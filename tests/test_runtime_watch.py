"""``python -m runtime watch``: complete checkpoints found, evaluated once, compared in HTML."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from runtime.engine_transformers import TransformersEngine
from runtime.errors import UsageError
from runtime.settings import ServeSettings
from runtime.watch import (MARKER, Quiet, Watcher, checkpoint_name, comparison_html, find_checkpoints, missing_files,
                           result_name)
from runtime_helpers import run_cli, tiny_llama  # noqa: F401

PROMPTS = [
    {"id": "p1", "prompt": "The quick brown fox"},
    {"id": "p2", "prompt": "<b>Hello</b> & <script>alert(1)</script>"},
    {"id": "p3", "messages": [{"role": "user", "content": "Once upon a time"}]},
]


def save_noisy(src: Path, dst: Path, seed: int, **save: object) -> Path:
    """``src`` with other random weights, saved at ``dst`` with save_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(dst, **save)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def models(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("watch-models")
    return {
        "a": save_noisy(tiny_llama, base / "a", 1),
        "b": save_noisy(tiny_llama, base / "b", 2),
        "sharded": save_noisy(tiny_llama, base / "sharded", 3, max_shard_size="200KB"),
    }


def write_prompts(path: Path, rows: list[dict] = PROMPTS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Loads:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, folder: Path) -> TransformersEngine:
        self.names.append(folder.name)
        engine = TransformersEngine(ServeSettings(model=str(folder)))
        engine.load()
        return engine


def watcher(tmp_path: Path, loads: Loads, said: list[str], **kw: object) -> Watcher:
    return Watcher(tmp_path / "ckpts", tmp_path / "prompts.jsonl", tmp_path / "out", load=loads,
                   max_tokens=6, quiet_seconds=0, say=said.append, **kw)


# --------------------------------------------------------------------------- pure finding
def test_order_by_step_then_mtime(tmp_path: Path) -> None:
    for name in ("checkpoint-1000", "final", "checkpoint-500", "notes"):
        (tmp_path / name).mkdir()
        if name != "notes":
            (tmp_path / name / "config.json").write_text("{}")
    assert [p.name for p in find_checkpoints(tmp_path)] == ["checkpoint-500", "checkpoint-1000", "final"]


def test_missing_files_from_index_and_weights(tmp_path: Path) -> None:
    assert missing_files(tmp_path) == ["model.safetensors"]
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert missing_files(tmp_path) == ["model-00002-of-00002.safetensors"]
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert missing_files(tmp_path) == []


def test_quiet_period_and_marker(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"1")
    quiet = Quiet(10)
    assert quiet.why_incomplete(tmp_path, 100.0)
    assert quiet.why_incomplete(tmp_path, 105.0)
    assert quiet.why_incomplete(tmp_path, 110.0) is None
    (tmp_path / "model.safetensors").write_bytes(b"12")  # still being written: the period starts again
    assert quiet.why_incomplete(tmp_path, 111.0)
    assert quiet.why_incomplete(tmp_path, 121.0) is None
    (tmp_path / "model.safetensors").write_bytes(b"123")
    (tmp_path / MARKER).touch()  # the trainer says it is done: complete at once
    assert quiet.why_incomplete(tmp_path, 122.0) is None
    (tmp_path / MARKER).unlink()
    os.utime(tmp_path / "model.safetensors", (0, 0))  # written long ago (what --once relies on)
    assert Quiet(10).why_incomplete(tmp_path, 0.0) is None


def test_html_escapes_and_highlights() -> None:
    rows = lambda text: [{"id": "x", "prompt": "<i>p</i>", "text": text}]  # noqa: E731
    page = comparison_html([("checkpoint-1", rows("a <b> c")), ("checkpoint-2", rows("a <b> d"))])
    assert "<i>p</i>" not in page and "&lt;i&gt;p&lt;/i&gt;" in page
    assert "<b>" not in page and "&lt;b&gt;" in page
    assert "<del>c</del><ins>d</ins>" in page


# --------------------------------------------------------------------------- with the tiny model
def test_watch_evaluates_complete_checkpoints_once(tmp_path: Path, models: dict[str, Path]) -> None:
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    shutil.copytree(models["a"], ckpts / "checkpoint-100")
    shutil.copytree(models["b"], ckpts / "checkpoint-200")
    third = shutil.copytree(models["sharded"], ckpts / "checkpoint-300")
    shards = sorted(third.glob("model-*.safetensors"))
    assert len(shards) >= 2
    held = shards[-1].rename(tmp_path / shards[-1].name)  # half written: a shard the index lists is missing
    (ckpts / "checkpoint-300" / MARKER).touch()  # even with the marker
    write_prompts(tmp_path / "prompts.jsonl")
    loads, said = Loads(), []
    w = watcher(tmp_path, loads, said)

    assert w.run_pass() == ["checkpoint-100", "checkpoint-200"]
    assert [line for line in said if "checkpoint-300" in line] == [
        f"waiting for checkpoint-300: incomplete (missing {held.name})"]
    out = tmp_path / "out" / "eval"
    a = [json.loads(x) for x in (out / "checkpoint-100.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (out / "checkpoint-200.jsonl").read_text().splitlines()]
    assert [r["id"] for r in a] == ["p1", "p2", "p3"]
    assert set(a[0]) >= {"id", "prompt", "text", "tokens", "checkpoint", "step"} and a[0]["step"] == 100
    assert all(r["text"] and r["tokens"] > 0 for r in a + b)
    assert [r["text"] for r in a] != [r["text"] for r in b]  # other weights, other outputs
    assert a[2]["prompt"] == "user: Once upon a time"
    page = (out / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<ins>" in page and page.index("checkpoint-100") < page.index("checkpoint-200")

    assert w.run_pass() == [] and loads.names == ["checkpoint-100", "checkpoint-200"]
    assert sum("checkpoint-300" in line for line in said) == 1  # said once
    held.rename(third / held.name)  # now whole
    assert w.run_pass() == ["checkpoint-300"]
    assert "checkpoint-300" in (out / "index.html").read_text()

    # A restart evaluates nothing again; an interrupted checkpoint (no .jsonl) is done from scratch.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")}
    (out / "checkpoint-200.jsonl").unlink()
    (out / ".checkpoint-200.jsonl.tmp").write_text('{"partial')
    loads2 = Loads()
    assert watcher(tmp_path, loads2, []).run_pass() == ["checkpoint-200"]
    assert loads2.names == ["checkpoint-200"]
    assert not (out / ".checkpoint-200.jsonl.tmp").exists()
    assert (out / "checkpoint-100.jsonl").stat().st_mtime_ns == mtimes["checkpoint-100.jsonl"]
    assert [json.loads(x)["text"] for x in (out / "checkpoint-200.jsonl").read_text().splitlines()] == [r["text"] for r in b]


def test_a_jsonl_file_of_someone_else_in_the_eval_folder_is_left_out(tmp_path: Path, models: dict[str, Path]) -> None:
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    shutil.copytree(models["a"], ckpts / "checkpoint-100")
    write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "out" / "eval"
    out.mkdir(parents=True)
    (out / "notes.jsonl").write_text("notjson\n")  # e.g. a trainer's own eval/ folder
    (out / "list.jsonl").write_text("[1, 2]\n")
    said: list[str] = []
    w = watcher(tmp_path, Loads(), said)
    assert w.run_pass() == ["checkpoint-100"]
    page = (out / "index.html").read_text()
    assert "checkpoint-100" in page and "notes" not in page
    assert sum("notes.jsonl is not a results file" in line for line in said) == 1
    assert sum("list.jsonl is not a results file" in line for line in said) == 1


def test_interrupt_leaves_no_partial_result(tmp_path: Path, models: dict[str, Path]) -> None:
    (tmp_path / "ckpts").mkdir()
    shutil.copytree(models["a"], tmp_path / "ckpts" / "checkpoint-1")
    write_prompts(tmp_path / "prompts.jsonl")

    def interrupted(folder: Path) -> object:
        raise KeyboardInterrupt

    w = Watcher(tmp_path / "ckpts", tmp_path / "prompts.jsonl", tmp_path / "out", load=interrupted,
                quiet_seconds=0, say=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        w.run_pass()
    assert list((tmp_path / "out" / "eval").iterdir()) == []


def test_failed_load_is_reported_once_and_not_retried(tmp_path: Path, models: dict[str, Path]) -> None:
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    shutil.copytree(models["a"], ckpts / "checkpoint-1")
    broken = shutil.copytree(models["a"], ckpts / "checkpoint-2")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    write_prompts(tmp_path / "prompts.jsonl")
    loads, said = Loads(), []
    w = watcher(tmp_path, loads, said)
    assert w.run_pass() == ["checkpoint-1"]
    assert w.failed_now == ["checkpoint-2"]
    errors = [line for line in said if line.startswith("error:")]
    assert len(errors) == 1 and "checkpoint-2 failed to load" in errors[0] and "to retry" in errors[0]
    failed = tmp_path / "out" / "eval" / "checkpoint-2.failed"
    assert failed.exists() and not (tmp_path / "out" / "eval" / "checkpoint-2.jsonl").exists()
    for _ in range(3):
        assert w.run_pass() == []
    assert loads.names == ["checkpoint-1", "checkpoint-2"]  # not loaded again at each poll
    assert sum("checkpoint-2" in line for line in said) == 3  # evaluating, the error, one skip note
    assert watcher(tmp_path, loads, []).run_pass() == [] and loads.names.count("checkpoint-2") == 1  # nor after a restart
    shutil.copy(models["a"] / "model.safetensors", broken / "model.safetensors")
    failed.unlink()  # how to retry
    assert w.run_pass() == ["checkpoint-2"]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ckpts").mkdir()
    cases = {
        "not json": "{oops\n",
        "no prompt": '{"id": 1}\n',
        "duplicate": '{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n',
    }
    for text in cases.values():
        write_prompts(tmp_path / "prompts.jsonl", [])
        (tmp_path / "prompts.jsonl").write_text(text)
        with pytest.raises(UsageError):
            Watcher(tmp_path / "ckpts", tmp_path / "prompts.jsonl", tmp_path / "out", load=print)
    r = run_cli("watch", "--checkpoints", str(tmp_path / "ckpts"), "--prompts", str(tmp_path / "prompts.jsonl"), "--once")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "already used" in r.stderr, r.stderr
    r = run_cli("watch", "--checkpoints", str(tmp_path / "nowhere"), "--prompts", str(tmp_path / "prompts.jsonl"), "--once")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such folder" in r.stderr, r.stderr
    r = run_cli("watch", "--checkpoints", str(tmp_path / "ckpts"), "--prompts", str(tmp_path / "prompts.jsonl"), "--every", "inf")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--every" in r.stderr, r.stderr


def test_cli_once_with_wandb_offline(tmp_path: Path, models: dict[str, Path]) -> None:
    pytest.importorskip("wandb", reason="wandb is part of the runtime extra")
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    write_prompts(tmp_path / "prompts.jsonl")
    args = ("watch", "--checkpoints", str(ckpts), "--prompts", str(tmp_path / "prompts.jsonl"), "--once",
            "--output", str(tmp_path / "out"), "--max-tokens", "4")
    r = run_cli(*args)
    assert r.returncode == 0 and "nothing to evaluate" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    shutil.copytree(models["a"], ckpts / "checkpoint-5")
    env = {"WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "WANDB_MODE": "offline", "WANDB_PROJECT": "watch-proj"}
    r = run_cli(*args, "--quiet-seconds", "0", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "eval" / "checkpoint-5.jsonl").exists() and (tmp_path / "out" / "eval" / "index.html").exists()
    (record,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    for expected in (b"watch-proj", b"checkpoint-eval", b"eval/outputs"):
        assert expected in data, expected
    tables = list((tmp_path / "wandb").glob("offline-run-*/files/media/table/eval/*.table.json"))
    assert tables and "checkpoint-5" in tables[0].read_text() and '"p2"' in tables[0].read_text()


# --------------------------------------------------------------------------- a models root: runs of checkpoints
def test_runs_are_found_two_levels_deep_in_order(tmp_path: Path) -> None:
    def model(*parts: str) -> None:
        (tmp_path.joinpath(*parts)).mkdir(parents=True, exist_ok=True)
        (tmp_path.joinpath(*parts) / "config.json").write_text("{}")

    model("checkpoint-100")  # a trainer's own folder, flat, as before
    model("run-b", "checkpoint-5")
    model("run-a", "checkpoint-20")
    model("run-a", "checkpoint-10")
    model("run-a")  # the run's final model, in the run folder itself
    model("run-a", "notes", "deeper")  # three levels down: not looked at
    (tmp_path / "run-c").mkdir()  # a run that saved nothing yet
    model(".cache", "x")  # hidden folders are not runs
    model("run-b", ".partial")
    model("run-b", "tmp-checkpoint-10")  # the Trainer is still saving it (then renames it checkpoint-10)
    names = [checkpoint_name(tmp_path, p) for p in find_checkpoints(tmp_path)]
    assert names == ["checkpoint-100", "run-a/checkpoint-10", "run-a/checkpoint-20", "run-a", "run-b/checkpoint-5"]
    assert result_name("run-a/checkpoint-10") == "run-a--checkpoint-10"
    assert find_checkpoints(tmp_path / "not-yet") == []


def test_a_runs_final_model_is_quiet_while_its_checkpoints_are_written(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    (run / "checkpoint-2").mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (run / f).write_text("x")
        os.utime(run / f, (0, 0))  # the final model: written long ago
    (run / "checkpoint-2" / "config.json").write_text("{}")
    (run / "checkpoint-2" / "model.safetensors").write_text("being written")  # now
    assert Quiet(10).why_incomplete(run, 0.0, "run-1") is None
    assert Quiet(10).why_incomplete(run / "checkpoint-2", 0.0, "run-1/checkpoint-2")


def test_watch_a_models_root_of_runs(tmp_path: Path, models: dict[str, Path]) -> None:
    root = tmp_path / "ckpts"
    run1, run2 = root / "250101-120000-aaaa", root / "250102-090000-bbbb"
    shutil.copytree(models["a"], run1 / "checkpoint-10")
    shutil.copytree(models["b"], run1 / "checkpoint-20")
    for f in models["a"].iterdir():  # the final model, saved in the run folder itself
        shutil.copy(f, run1 / f.name)
    shutil.copytree(models["b"], run2 / "checkpoint-10")
    broken = shutil.copytree(models["a"], run2 / "checkpoint-20")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    write_prompts(tmp_path / "prompts.jsonl")
    loads, said = Loads(), []
    w = watcher(tmp_path, loads, said)

    done = w.run_pass()
    assert done == ["250101-120000-aaaa/checkpoint-10", "250101-120000-aaaa/checkpoint-20", "250101-120000-aaaa",
                    "250102-090000-bbbb/checkpoint-10"]
    assert w.failed_now == ["250102-090000-bbbb/checkpoint-20"]
    out = tmp_path / "out" / "eval"
    assert sorted(p.name for p in out.iterdir()) == [
        "250101-120000-aaaa--checkpoint-10.jsonl", "250101-120000-aaaa--checkpoint-20.jsonl", "250101-120000-aaaa.jsonl",
        "250102-090000-bbbb--checkpoint-10.jsonl", "250102-090000-bbbb--checkpoint-20.failed", "index.html"]
    rows = [json.loads(x) for x in (out / "250101-120000-aaaa--checkpoint-20.jsonl").read_text().splitlines()]
    assert rows[0]["checkpoint"] == "250101-120000-aaaa/checkpoint-20" and rows[0]["step"] == 20
    final = [json.loads(x) for x in (out / "250101-120000-aaaa.jsonl").read_text().splitlines()]
    assert final[0]["checkpoint"] == "250101-120000-aaaa" and final[0]["step"] is None
    first = [json.loads(x) for x in (out / "250101-120000-aaaa--checkpoint-10.jsonl").read_text().splitlines()]
    assert [r["text"] for r in final] == [r["text"] for r in first]  # the same weights, the same greedy outputs
    page = (out / "index.html").read_text()
    heads = [page.index(f"<th>{n}</th>") for n in done]
    assert heads == sorted(heads)  # one column per checkpoint, in order: a run's checkpoints, then its final model
    assert "3 prompts, 4 checkpoints." in page

    # Once each: the next pass and a restart evaluate nothing again, and the failure is not retried.
    assert w.run_pass() == [] and watcher(tmp_path, Loads(), []).run_pass() == []
    assert len(loads.names) == 5
    (out / "250101-120000-aaaa--checkpoint-20.jsonl").unlink()
    assert watcher(tmp_path, Loads(), []).run_pass() == ["250101-120000-aaaa/checkpoint-20"]
    # a checkpoint removed since keeps its place in the comparison
    shutil.rmtree(run1 / "checkpoint-10")
    assert [name for name, _ in w.results()][:2] == ["250101-120000-aaaa/checkpoint-10", "250101-120000-aaaa/checkpoint-20"]


def test_cli_watch_waits_for_a_models_root_that_does_not_exist_yet(tmp_path: Path, models: dict[str, Path]) -> None:
    import subprocess
    import sys
    import time

    from runtime_helpers import ROOT, wait_until

    root = tmp_path / "models" / "app"
    write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WANDB_PROJECT", None)
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "watch", "--checkpoints", str(root), "--prompts",
                             str(tmp_path / "prompts.jsonl"), "--output", str(out), "--every", "0.2", "--max-tokens", "4",
                             "--quiet-seconds", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert "does not exist yet" in first and str(root) in first, first
        time.sleep(0.5)
        assert proc.poll() is None  # it waits, rather than stopping on a folder no run has made yet
        staging = tmp_path / "staging"
        shutil.copytree(models["a"], staging / "run-1" / "checkpoint-3")
        (staging / "run-1" / "checkpoint-3" / MARKER).touch()
        root.parent.mkdir(parents=True)
        staging.rename(root)
        wait_until(lambda: (out / "eval" / "run-1--checkpoint-3.jsonl").exists(), what="the first run's checkpoint evaluated")
        wait_until(lambda: (out / "eval" / "index.html").exists(), what="the comparison page")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows = [json.loads(x) for x in (out / "eval" / "run-1--checkpoint-3.jsonl").read_text().splitlines()]
    assert [r["checkpoint"] for r in rows] == ["run-1/checkpoint-3"] * 3 and all(r["text"] for r in rows)


# --------------------------------------------------------------------------- the launcher's marker: no quiet period to wait
TRAINS = """\
import os, sys
from transformers import AutoModelForCausalLM, AutoTokenizer

model, tokenizer = AutoModelForCausalLM.from_pretrained(sys.argv[1]), AutoTokenizer.from_pretrained(sys.argv[1])
out = os.environ["MLSHIFT_MODEL_DIR"]
for folder in (os.path.join(out, "checkpoint-1"), out):  # a checkpoint, then the final model in the run folder
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
sys.exit(int(sys.argv[2]))
"""


def test_models_of_a_run_the_launcher_ended_are_evaluated_at_once(tmp_path: Path, tiny_llama: Path) -> None:
    """A run started through the launcher (wizard/launch.py, as a job's pod starts it) that exits 0
    has its models marked; the watcher evaluates them at once, with a quiet period far longer than
    this test. A failed run's models are not marked, and wait."""
    import subprocess
    import sys

    from runtime_helpers import ROOT

    root = tmp_path / "models" / "app"
    (tmp_path / "train.py").write_text(TRAINS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLSHIFT_", "RANK", "LOCAL_RANK"))}
    for run, code in (("250101-120000-good", 0), ("250101-130000-bad", 1)):
        done = subprocess.run([sys.executable, str(ROOT / "wizard" / "launch.py"), str(tmp_path / "train.py"), str(tiny_llama),
                               str(code)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**env, "MLSHIFT_RUN": run, "MLSHIFT_MODEL_DIR": str(root / run),
                                   "MLSHIFT_RESULTS": str(tmp_path / "results" / run)})
        assert done.returncode == code, done.stderr[-3000:]
    assert (root / "250101-120000-good" / MARKER).is_file() and (root / "250101-120000-good" / "checkpoint-1" / MARKER).is_file()
    assert not list((root / "250101-130000-bad").rglob(MARKER))

    write_prompts(tmp_path / "prompts.jsonl")
    r = run_cli("watch", "--checkpoints", str(root), "--prompts", str(tmp_path / "prompts.jsonl"), "--once",
                "--output", str(tmp_path / "out"), "--max-tokens", "4", "--quiet-seconds", "3600", env={"WANDB_PROJECT": ""})
    assert r.returncode == 0, r.stderr
    assert "done: 2 checkpoints evaluated" in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "eval").glob("*.jsonl")) == [
        "250101-120000-good--checkpoint-1.jsonl", "250101-120000-good.jsonl"]
    for name in ("250101-130000-bad/checkpoint-1", "250101-130000-bad"):
        assert f"waiting for {name}: incomplete (files changed less than 3600 s ago (no {MARKER} marker))" in r.stderr, r.stderr
