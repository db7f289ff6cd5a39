"""The docs' commands run, and their transcripts are what the commands print now.

Conventions (docs/architecture.md, "The docs' commands"):

* A fenced block says what it is. ```` ```sh ````, ```` ```bash ```` and ```` ```console ```` hold
  commands (in a console block, the lines after ``$ ``; the other lines are output); ``text``,
  ``yaml``, ``json`` and the like are never run.
* Every command block runs here, unless the line right above its fence says why not:
  ``<!-- not run: needs a cluster -->`` (a real cluster, a GPU, the network, a terminal to answer
  questions in, or minutes of time).
* A page's blocks run in order, as a person would type them in one terminal: in one temporary
  folder laid out like a checkout (the tool's folders and .venv linked), the folder a block
  ``cd``'d into is where the next one starts, with the recording stand-in for ``oc``
  (tests/fake_oc) first on PATH and a ``make`` that takes .venv as it is (targets that install
  or run the suite are refused). Secrets a page creates with ``oc create secret generic NAME``
  exist for the stand-in, which keeps no Secrets of its own.
* A transcript, ``<!-- transcript: NAME -->`` ... ``<!-- /transcript -->``, is written by
  docs/gen_transcripts.py from real runs; it is not run here but made again and compared.

A failing block is reported with its page and line, the command that failed and its output; every
failing block of every page is listed, not only the first.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("gen_transcripts", ROOT / "docs" / "gen_transcripts.py")
gen = importlib.util.module_from_spec(_spec)
sys.modules["gen_transcripts"] = gen
_spec.loader.exec_module(gen)

BLOCK_TIMEOUT = 120  # seconds for one block
PAGES = gen.pages()
RUN_PAGES = [p for p in PAGES if any(b.runs for b in gen.blocks(p))]


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# --------------------------------------------------------------------------- running a page
HEADER = """exec 9>{trace}
BASH_XTRACEFD=9
PS4='+${{LINENO}}| '
trap 'pwd > {cwd_file}' EXIT
set -eo pipefail
cd {cwd}
set -x
"""
HEADER_LINES = HEADER.count("\n")
LOCAL_PORT = threading.Lock()  # the pages run three at a time; the local port 8000 is one


@dataclass
class PageRun:
    ran: list[str] = field(default_factory=list)  # page:line of each block run
    seconds: dict[str, float] = field(default_factory=dict)  # how long each took
    failures: list[str] = field(default_factory=list)


def _secrets(page: Path) -> list[str]:
    text = "\n".join(b.script() for b in gen.blocks(page) if b.runs)
    return sorted(set(re.findall(r"\boc create secret generic ([\w.-]+)", text)))


def _tail(text: str, lines: int = 40) -> str:
    rows = text.rstrip("\n").splitlines()
    shown = rows[-lines:]
    more = f"    ... ({len(rows) - lines} lines before)\n" if len(rows) > lines else ""
    return more + "\n".join("    " + r for r in shown)


def _failed_line(trace: Path, block: gen.Block) -> tuple[int, str]:
    """The doc line and the text of the last command the block started (from bash's trace)."""
    numbers = [int(m.group(1)) for m in re.finditer(r"^\++(\d+)\| ", trace.read_text(errors="replace"), re.M)]
    numbers = [n - HEADER_LINES for n in numbers if n > HEADER_LINES]
    body = block.body.splitlines()
    if not numbers or numbers[-1] > len(body):
        return block.line, "(before its first command)"
    k = numbers[-1]
    text = body[k - 1]
    while text.endswith("\\") and k < len(body):  # a command continued on the next lines
        k += 1
        text = text[:-1] + body[k - 1].strip()
    return block.line + numbers[-1], text.strip()


def _wait_for_group(pgid: int, limit: float = 10.0) -> None:
    """Until no process of the group is left (SIGKILL for what outlives ``limit`` seconds)."""
    end = time.monotonic() + limit
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL if time.monotonic() > end else 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def run_page(page: Path, work: Path) -> PageRun:
    root = gen.checkout(work / "checkout")
    env = gen.tool_env(root, work, _secrets(page))
    cwd = root
    result = PageRun()
    for n, block in enumerate(b for b in gen.blocks(page) if b.runs):
        script = work / f"block-{n}.sh"
        trace, cwd_file, output = work / f"block-{n}.trace", work / f"block-{n}.cwd", work / f"block-{n}.out"
        script.write_text(HEADER.format(trace=shlex.quote(str(trace)), cwd_file=shlex.quote(str(cwd_file)),
                                        cwd=shlex.quote(str(cwd))) + block.script() + "\n")
        result.ran.append(block.where)
        started = time.monotonic()
        # port-forward.sh takes the local port 8000 as the docs say, and the scripts that open a
        # forward of their own take it when it is free: one such block at a time
        forwards = (LOCAL_PORT if any(s in block.script() for s in ("port-forward.sh", "test-inference.sh", "benchmark-inference.sh"))
                    else contextlib.nullcontext())
        with forwards, open(output, "w") as out:
            # A session of its own: what the block left running (`... &`) is stopped with it.
            proc = subprocess.Popen(["bash", str(script)], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                rc = None
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
            _wait_for_group(proc.pid)  # what it left running has let go of its ports before the next block
        result.seconds[block.where] = round(time.monotonic() - started, 1)
        if cwd_file.exists() and Path(cwd_file.read_text().strip()).is_dir():
            cwd = Path(cwd_file.read_text().strip())
        if rc != 0:
            line, command = _failed_line(trace, block)
            what = f"did not end within {BLOCK_TIMEOUT} s" if rc is None else f"exited {rc}"
            result.failures.append(f"{rel(page)}:{line}: `{command}` {what} (the block at {block.where})\n"
                                   f"{_tail(output.read_text(errors='replace'))}")
    return result


# --------------------------------------------------------------------------- one run for the module
def _commands(page: Path) -> int:
    return sum(1 for b in gen.blocks(page) if b.runs for line in b.script().splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


@pytest.fixture(scope="module")
def runs():
    """Every page's blocks and the transcripts, each run once for the module, three at a time
    (most of the time is spent waiting for processes), the longest first."""
    with tempfile.TemporaryDirectory(prefix="mlshift-docs-") as tmp:
        base = Path(tmp)
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures: dict[str, Future] = {"transcripts": pool.submit(gen.generate, base / "transcripts")}
            for i, page in enumerate(sorted(RUN_PAGES, key=_commands, reverse=True)):
                futures[rel(page)] = pool.submit(run_page, page, base / f"page-{i}")
            yield futures
            for f in futures.values():
                f.cancel()


# --------------------------------------------------------------------------- the conventions
def test_every_fenced_block_says_what_it_is():
    bare = [b.where for p in PAGES for b in gen.blocks(p) if not b.language]
    assert not bare, ("fenced blocks without a language (```sh for commands, ```text for output and diagrams): "
                      + ", ".join(bare))


def test_blocks_not_run_say_why_and_are_commands():
    wrong = []
    for p in PAGES:
        for b in gen.blocks(p):
            reason = b.not_run
            if reason is None:
                continue
            if not reason:
                wrong.append(f"{b.where}: `<!-- not run: -->` gives no reason")
            if b.language not in gen.COMMAND_LANGUAGES:
                wrong.append(f"{b.where}: `not run` above a {b.language or 'bare'} block, which is never run anyway")
            if b.transcript:
                wrong.append(f"{b.where}: a transcript is made by running it; it cannot be `not run`")
    for p in PAGES:
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip().startswith("<!-- not run") and not gen.NOT_RUN.match(line.strip()):
                wrong.append(f"{rel(p)}:{i}: write it as <!-- not run: REASON -->")
    assert not wrong, "\n".join(wrong)


def test_transcript_markers_enclose_one_block_each_and_name_a_known_transcript():
    known = gen.names()
    used: set[str] = set()
    wrong = []
    for p in PAGES:
        lines = p.read_text().splitlines()
        for i, line in enumerate(lines):
            m = gen.TRANSCRIPT_OPEN.match(line.strip())
            if not m:
                continue
            name = m.group(1)
            used.add(name)
            if name not in known:
                wrong.append(f"{rel(p)}:{i + 1}: no transcript {name!r} in docs/gen_transcripts.py")
            fence = gen.FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == (fence.group(2) if fence else "```")), None)
            if not fence or end is None or end + 1 >= len(lines) or lines[end + 1].strip() != gen.TRANSCRIPT_CLOSE:
                wrong.append(f"{rel(p)}:{i + 1}: a transcript marker is followed by one fenced block and {gen.TRANSCRIPT_CLOSE}")
    unused = sorted(set(known) - used)
    assert not wrong and not unused, "\n".join(wrong + [f"made but shown on no page: {', '.join(unused)}"] * bool(unused))


# --------------------------------------------------------------------------- the runs
@pytest.mark.parametrize("page", [rel(p) for p in RUN_PAGES])
def test_commands_in_the_docs_run(runs, page):
    result: PageRun = runs[page].result()
    assert result.ran
    assert not result.failures, f"{len(result.failures)} of {len(result.ran)} blocks of {page} failed:\n\n" + "\n\n".join(result.failures)


def test_transcripts_are_what_the_commands_print_now(runs):
    import difflib

    changed = gen.updated_pages(runs["transcripts"].result())
    diff = "".join(line for page, (old, new) in changed.items()
                   for line in difflib.unified_diff(old.splitlines(True), new.splitlines(True), rel(page), rel(page) + " (now)"))
    assert not changed, f"the transcripts are out of date; run: python docs/gen_transcripts.py (or make docs)\n{diff}"


# --------------------------------------------------------------------------- the installed command
def test_the_mlshift_command_is_installed_and_documented(tmp_path):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\s*\nmlshift = "wizard\.cli:main"', pyproject, re.M)
    command = Path(sys.executable).parent / "mlshift"
    if not command.exists():
        pytest.skip(f"no mlshift beside {sys.executable}: mlshift is not installed in this environment")
    r = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "new" in r.stdout and "deploy" in r.stdout
    r = subprocess.run([str(command), "new", "demo", "--defaults", "--deployments-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "config.yaml").is_file()
    for page in ("README.md", "docs/wizard.md"):
        assert re.search(r"`(\.venv/bin/)?mlshift[ `]", (ROOT / page).read_text()), f"{page} does not mention the mlshift command"
