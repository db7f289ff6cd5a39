#!/usr/bin/env python3
"""The transcripts in the docs, made by running the commands: ``python docs/gen_transcripts.py``.

A transcript is the fenced block between two markers in a page (README.md, docs/**/*.md)::

    <!-- transcript: NAME -->
    ```console
    $ the command
    what it printed
    ```
    <!-- /transcript -->

This script runs the commands of every transcript for real and writes what they printed back
between the markers; nothing in a transcript is typed by hand. The runs happen in a temporary
folder laid out like a checkout (the tool's folders linked, a ``deployments/`` of its own), with
the recording stand-in for ``oc`` (``tests/fake_oc``) first on ``PATH`` and fixed names, so the
output is the same from one run to the next. Interactive sessions of the wizard are driven in a
pseudo-terminal with pexpect, pressing the keys listed in :data:`SESSIONS`; the transcript is what
the terminal shows at the end (colours removed), and a ``text`` block marked with a snapshot's
name is the screen at one moment of a session (an answer being refused).

``--check`` writes nothing and exits 1, with a diff, when a page differs from what the runs give
now; ``tests/test_docs_commands.py`` does the same. ``make docs`` regenerates the transcripts.

The helpers here (the checkout-like folder, the environment with the recording ``oc``, the
fenced blocks of a page) are shared with ``tests/test_docs_commands.py``, which runs every other
shell block of the docs the same way.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_OC = ROOT / "tests" / "fake_oc"
sys.path.insert(0, str(ROOT / "tests"))
from terminal import Screen  # noqa: E402  (the tests' screen: one reading of what the wizard draws)

# --------------------------------------------------------------------------- pages and their blocks
TRANSCRIPT_OPEN = re.compile(r"^<!-- transcript: ([\w.-]+) -->$")
TRANSCRIPT_CLOSE = "<!-- /transcript -->"
NOT_RUN = re.compile(r"^<!-- not run:(.*)-->$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)")
COMMAND_LANGUAGES = ("sh", "bash", "console")


def pages() -> list[Path]:
    """The user docs: README.md and docs/**/*.md, without the generated reference."""
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "reference.md")
    return [ROOT / "README.md", *docs]


@dataclass
class Block:
    """One fenced block of a page."""

    page: Path
    line: int  # the opening fence's line, counted from 1
    language: str  # the fence's info string ("" when it has none)
    body: str
    comments: list[str] = field(default_factory=list)  # the HTML comment lines right above the fence
    transcript: str | None = None  # the transcript it is the block of

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def not_run(self) -> str | None:
        """The reason given in ``<!-- not run: REASON -->`` right above the fence (None: it runs)."""
        for c in self.comments:
            m = NOT_RUN.match(c)
            if m:
                return m.group(1).strip()
        return None

    @property
    def runs(self) -> bool:
        return self.language in COMMAND_LANGUAGES and self.transcript is None and self.not_run is None

    def script(self) -> str:
        """The commands: a sh/bash block as it is; in a console block, the lines after ``$ ``
        (and the lines continuing them with a trailing backslash); other lines are output."""
        if self.language != "console":
            return self.body
        out: list[str] = []
        continued = False
        for line in self.body.splitlines():
            if continued or line.startswith("$ "):
                command = line if continued else line[2:]
                out.append(command)
                continued = command.endswith("\\")
            else:
                out.append("")  # keeps line numbers
        return "\n".join(out)


def blocks(page: Path, text: str | None = None) -> list[Block]:
    lines = (page.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    transcript = None
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        m = TRANSCRIPT_OPEN.match(stripped)
        if m:
            transcript = m.group(1)
        elif stripped == TRANSCRIPT_CLOSE:
            transcript = None
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, marks, language = fence.group(1), fence.group(2), fence.group(3)
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(marks) and set(lines[j].strip()) == {marks[0]}):
            j += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:j])
        comments = []
        k = i - 1
        while k >= 0 and lines[k].strip().startswith("<!--") and lines[k].strip().endswith("-->"):
            comments.insert(0, lines[k].strip())
            k -= 1
        found.append(Block(page, i + 1, language, body, comments, transcript))
        i = j + 1
    return found


# --------------------------------------------------------------------------- where commands run
def checkout(dest: Path) -> Path:
    """A folder laid out like a checkout: the tool's folders and the virtual environment linked,
    docs/ a folder of its own (its pages copied, examples linked) so that `make docs` writes there."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("wizard", "runtime", "templates", "bench", "tests", ".venv", "Makefile", "pyproject.toml"):
        if (ROOT / name).exists():
            (dest / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "README.md", dest / "README.md")
    (dest / "docs").mkdir()
    for p in (ROOT / "docs").iterdir():
        if p.is_dir():
            (dest / "docs" / p.name).symlink_to(p)
        else:
            shutil.copy(p, dest / "docs" / p.name)
    return dest


MAKE_SHIM = """#!/usr/bin/env bash
# make, as the docs' commands run here: the checkout's .venv is taken as it is (never installed
# into), and the targets that install or run for minutes are refused.
for word in "$@"; do
  case "$word" in
    test|bench|bench-gpu|clean|setup)
      echo "make $word: not run from the docs (it installs into .venv, or runs the test suite or the benchmarks);" \\
           "mark its block <!-- not run: REASON -->" >&2
      exit 3 ;;
  esac
done
exec {make} -o .venv/.setup-done -o .venv/.test-done "$@"
"""


def tool_env(root: Path, work: Path, secrets: list[str] = ()) -> dict[str, str]:
    """The environment the docs' commands run in: the recording oc (tests/fake_oc) and a make
    that uses the checkout's .venv as it is, first on PATH, then the Python running this."""
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    real_make = shutil.which("make") or "make"
    (bin_dir / "make").write_text(MAKE_SHIM.format(make=real_make))
    (bin_dir / "make").chmod(0o755)
    log = work / "oc-log"
    log.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAKE_OC_", "MLSHIFT_", "PYTEST_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "PATH": os.pathsep.join([str(bin_dir), str(FAKE_OC), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "FAKE_OC_DIR": str(log),
        # The recording oc keeps no Secrets made with `oc create secret`: those the page creates exist.
        "FAKE_OC_SECRETS": ",".join(secrets),
        "MLSHIFT_POLL_SECONDS": "0",
        "MLSHIFT_CACHE_DIR": str(work / "cache"),
        "NO_COLOR": "1",
        "TERM": "dumb",
    })
    return env


# --------------------------------------------------------------------------- a terminal
ENTER, UP, DOWN, CLEAR = "\r", "\x1b[A", "\x1b[B", "\x15"


@dataclass
class Snapshot:
    """The screen from the question's line down, once an answer was refused: a transcript of its own."""

    name: str


class Terminal:
    """A program under a pseudo-terminal, read into a :class:`Screen`."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]):
        import pexpect

        self.pexpect = pexpect
        env = {**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "NO_COLOR": "1"}
        self.child = pexpect.spawn(argv[0], argv[1:], cwd=str(cwd), env=env, encoding="utf-8",
                                   dimensions=(60, 1000), timeout=30)
        self.child.delaybeforesend = 0.01
        self.screen = Screen()
        self.ended = False

    def read(self, timeout: float) -> bool:
        """One chunk of output into the screen; False when nothing came."""
        if self.ended:
            return False
        try:
            chunk = self.child.read_nonblocking(65536, timeout=timeout)
        except self.pexpect.TIMEOUT:
            return False
        except self.pexpect.EOF:
            self.ended = True
            return False
        self.screen.feed(chunk)
        return True

    def settle(self, quiet: float = 0.2, limit: float = 60) -> None:
        """Read until the program has written nothing for ``quiet`` seconds, or ended."""
        deadline = time.monotonic() + limit
        last = time.monotonic()
        while not self.ended and time.monotonic() - last < quiet:
            if self.read(0.05):
                last = time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError("the program never stopped writing:\n" + self.screen.text()[-2000:])

    def question(self) -> tuple[int, str] | None:
        """The question being asked: the last line starting with '? ' at or above the cursor."""
        for r in range(min(self.screen.row, len(self.screen.lines) - 1), -1, -1):
            line = "".join(self.screen.lines[r])
            if line.startswith("? "):
                return r, line[2:]
        return None

    def next_question(self, after: int, limit: float = 60) -> tuple[int, str] | None:
        """Wait for a question below row ``after``; None when the program ended instead."""
        deadline = time.monotonic() + limit
        while True:
            q = self.question()
            if q and q[0] > after:
                self.settle(0.1)  # the whole question drawn
                return self.question()
            if self.ended:
                return None
            if time.monotonic() > deadline:
                raise RuntimeError(f"no new question after row {after}:\n" + self.screen.text()[-2000:])
            self.read(0.1)

    def below(self, row: int, answer: str, limit: float = 30) -> str:
        """Wait until the question at ``row`` shows ``answer`` and something is written below it
        (the message refusing it); the screen from ``row`` on."""
        deadline = time.monotonic() + limit

        def shown() -> bool:
            lines = ["".join(line).rstrip() for line in self.screen.lines[row:]]
            return bool(lines) and lines[0].endswith(" " + answer) and any(line.strip() for line in lines[1:])

        while True:
            self.settle()
            if shown():
                return self.screen.text(row)
            if self.ended or time.monotonic() > deadline:
                raise RuntimeError(f"no message under the answer {answer!r} at row {row}:\n" + self.screen.text()[-2000:])
            self.read(0.1)

    def finish(self, limit: float = 60) -> int:
        deadline = time.monotonic() + limit
        while not self.ended:
            if time.monotonic() > deadline:
                raise RuntimeError("the program did not end:\n" + self.screen.text()[-2000:])
            self.read(0.1)
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else 128 + (self.child.signalstatus or 0)


def typed(text: str) -> str:
    """The keys that replace a question's answer with ``text``."""
    return CLEAR + text + ENTER


# --------------------------------------------------------------------------- what is run
@dataclass
class Session:
    """An interactive wizard session: ``before`` runs first (shown as commands), then
    ``python -m wizard new NAME`` under a terminal. ``answers`` are (question, keys) in the order
    they are asked; a question starts with the text given (then a space or the end). A question
    not listed gets Enter (its default). Every listed question must be asked."""

    name: str
    deployment: str
    answers: list[tuple[str, list[str | Snapshot]]]
    before: list[str] = field(default_factory=list)


@dataclass
class Commands:
    """Shell commands, each shown after ``$ `` with what it printed (stdout and stderr). ``env``:
    more variables for them (``{root}`` is the checkout), e.g. the recording oc's stand-in volumes."""

    name: str
    commands: list[str]
    env: dict[str, str] = field(default_factory=dict)


SESSIONS: list[Session | Commands] = [
    Session("wizard-preset", "llama-inference", [
        ("What are you deploying?", [ENTER]),  # the first preset: vllm-server
        ("GPUs per pod", [typed("0"), Snapshot("wizard-vllm-needs-gpu"), typed("8")]),
        ("GPU model", [typed("NVIDIA-A100-SXM4-80GB")]),
        ("Model", [typed("meta-llama/Llama-3.1-70B-Instruct")]),
        ("Secret with the API keys", [ENTER]),  # the proposal: <name>-api-keys, which deploy creates
        ("Namespace (OpenShift project)", [typed("my-team")]),
        ("Write it?", [ENTER]),
    ]),
    Session("wizard-every-question", "lr-sweep", [
        ("What are you deploying?", [UP + ENTER]),  # the last choice: answer every question
        ("Python file to run", [typed("train.py")]),
        ("How should it run?", [DOWN + ENTER]),  # Job
        ("Arguments", [typed("--epochs 20")]),
        ("Requirements file", [typed("requirements.txt")]),
        ("GPUs per pod", [typed("99"), Snapshot("wizard-gpus-out-of-range"), typed("1")]),
        ("Track runs", ["y"]),
        ("Project", [typed("gpt-experiments")]),
        ("W&B entity", [typed("my-team")]),
        ("Tags", [typed("lr, baseline")]),
        ("Sweep over parameters", ["y"]),
        ("Parameters to sweep", [typed("lr=0.0001,0.001,0.01 batch_size=16,32")]),
        ("Runs at once", [typed("4")]),
        ("Write it?", [ENTER]),
    ]),
    Session("wizard-rerun", "lr-sweep", [
        ("GPUs per pod", [typed("2")]),
        ("Write it?", [ENTER]),
    ], before=["echo '# tuned by hand' >> deployments/lr-sweep/manifests/job.yaml"]),
    Commands("wizard-list-presets", ["python -m wizard new --list-presets"]),
    Commands("wizard-unknown-preset", ["python -m wizard new x --preset vllm-sever"]),
    Commands("multi-node-on-rwo", ["python -m wizard new mn --set application.execution.mode=job "
                                   "--set deployment.mode=multi-node --set deployment.num_nodes=2"]),
    # docs/research-loop.md: a sweep submitted and followed against the recording oc
    Commands("sweep-submit-watch", [
        "python -m wizard new lr-sweep --answers docs/examples/lr-sweep.yaml >/dev/null",
        "printf 'print(\"loss=0.5\")\\n' > deployments/lr-sweep/workspace/train.py",
        "touch deployments/lr-sweep/workspace/requirements.txt",
        "deployments/lr-sweep/scripts/deploy.sh >/dev/null 2>&1",
        "deployments/lr-sweep/scripts/run-sweep.sh",
        "deployments/lr-sweep/scripts/watch-job.sh --no-logs",
    ]),
    # docs/research-loop.md: compare over the records of a finished sweep (fixed numbers: --sample-runs)
    Commands("compare-table", [
        "python docs/gen_transcripts.py --sample-runs runs",
        "python -m wizard new lr-demo --answers docs/examples/lr-sweep.yaml --set experiment.sweep.metric=val_loss >/dev/null",
        "deployments/lr-demo/scripts/compare-experiments.sh --from runs",
    ]),
    Commands("compare-files", [
        "deployments/lr-demo/scripts/compare-experiments.sh --from runs --metric accuracy --goal max "
        "--csv runs.csv --plot sweep.png --html sweep.html",
        "head -n 3 runs.csv",
    ]),
    # docs/research-loop.md: the best run's model promoted to a serving deployment; the recording oc's
    # model store is the folder store/ (FAKE_OC_MODELS), where --model-folders puts one folder per run
    Commands("promote", [
        "python -m wizard new chat --set application.type=model_server --set inference.enabled=true "
        "--set inference.engine=transformers --set inference.model=Qwen/Qwen2.5-0.5B-Instruct "
        "--set inference.served_model_name=chat --set resources.storage.models.enabled=true >/dev/null",
        "deployments/chat/scripts/deploy.sh >/dev/null 2>&1",
        "python -m wizard new lr-store --answers docs/examples/lr-sweep.yaml --set experiment.sweep.metric=val_loss "
        "--set resources.storage.models.enabled=true --set resources.storage.models.access_mode=ReadWriteMany "
        "--set experiment.promote.to=chat >/dev/null",
        "python docs/gen_transcripts.py --sample-runs lr-runs --model-folders store/lr-store",
        "deployments/lr-store/scripts/promote.sh --from lr-runs --if-better",
        "grep -n 'model:' deployments/chat/config.yaml",
        "deployments/lr-store/scripts/promote.sh --from lr-runs --if-better",
    ], env={"FAKE_OC_VOLUME": "{root}/volume", "FAKE_OC_MODELS": "{root}/store"}),
    Commands("promote-undo", [
        "deployments/lr-store/scripts/promote.sh --to chat --model Qwen/Qwen2.5-0.5B-Instruct",
        "deployments/lr-store/scripts/promote.sh --from lr-runs --if-better",
    ], env={"FAKE_OC_VOLUME": "{root}/volume", "FAKE_OC_MODELS": "{root}/store"}),
    Commands("compare-json", ["deployments/lr-demo/scripts/compare-experiments.sh --from runs --json | head -n 38"]),
    Commands("compare-nothing", [
        "mkdir -p empty && deployments/lr-demo/scripts/compare-experiments.sh --from empty",
        "deployments/lr-demo/scripts/compare-experiments.sh --from runs --metric bleu",
    ]),
]


# --------------------------------------------------------------------------- sample runs to compare
SAMPLE_SWEEP = "251130-031200-ab12"


def sample_runs(dest: Path, model_folders: Path | None = None) -> str:
    """The records of a finished sweep (lr x batch_size, 8 runs, one diverged), as runs write them
    (results/<run id>/run.json, metrics.jsonl, stdout.log: the shared contract of run records),
    with fixed numbers and times, so that the transcripts of compare do not change between runs.
    ``model_folders``: also a folder per finished run there, named by its run id, where the run
    would have saved its model (the models root, for promote)."""
    import json
    import math

    results = dest / "results"
    lrs, sizes = [0.0001, 0.001, 0.01, 0.1], [16, 32]
    speed = {0.0001: 0.08, 0.001: 0.35, 0.01: 0.7, 0.1: 1.1}
    floor = {0.0001: 0.9, 0.001: 0.42, 0.01: 0.31, 0.1: 0.5}
    start = 1764472320  # 2025-11-30T03:12:00Z
    for index, (lr, bs) in enumerate((lr, bs) for lr in lrs for bs in sizes):
        run_id = f"{SAMPLE_SWEEP}-{index:03d}"
        folder = results / run_id
        folder.mkdir(parents=True, exist_ok=True)
        diverged = (lr, bs) == (0.1, 16)
        steps = 4 if diverged else 10
        rows, lines = [], []
        for step in range(steps):
            train = floor[lr] + 0.02 * (bs == 32) + (2.3 - floor[lr]) * math.exp(-speed[lr] * step)
            val = train + 0.05 + (0.015 * max(0, step - 5) if lr >= 0.01 else 0.0)  # high rates overfit late
            if diverged and step == steps - 1:
                train = val = float("nan")
            row = {"_step": step, "_time": start + 70 * (step + 1), "loss": round(train, 4), "val_loss": round(val, 4),
                   "accuracy": round(1 - val / 2.6, 4) if math.isfinite(val) else val}
            rows.append(json.dumps(row))
            lines.append(" ".join(f"{k}={v}" for k, v in row.items() if not k.startswith("_")))
        took = (55 if bs == 32 else 72) * steps + 12 * index
        record = {"id": run_id, "name": f"lr-demo-lr={lr},batch_size={bs}", "group": SAMPLE_SWEEP, "job_type": "sweep-trial",
                  "params": {"lr": lr, "batch_size": bs}, "sweep": SAMPLE_SWEEP, "index": index,
                  "state": "failed" if diverged else "finished",
                  "started": _utc(start + 3 * index), "finished": _utc(start + 3 * index + took), "exit_code": 1 if diverged else 0}
        (folder / "run.json").write_text(json.dumps(record, indent=1) + "\n")
        (folder / "metrics.jsonl").write_text("\n".join(rows) + "\n")
        (folder / "stdout.log").write_text("\n".join(lines) + "\n")
        if model_folders is not None and not diverged:
            (model_folders / run_id).mkdir(parents=True, exist_ok=True)
    said = f"wrote the records of sweep {SAMPLE_SWEEP}: {len(lrs) * len(sizes)} runs in {dest}/results/"
    return said + (f", and a model folder for each finished one in {model_folders}/" if model_folders is not None else "")


def _utc(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def names() -> dict[str, str]:
    """Every transcript this script makes: name -> the language of its block."""
    out: dict[str, str] = {}
    for s in SESSIONS:
        out[s.name] = "console"
        if isinstance(s, Session):
            for _, steps in s.answers:
                out.update({step.name: "text" for step in steps if isinstance(step, Snapshot)})
    return out


def shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    r = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return r.returncode, r.stdout


def _session(s: Session, root: Path, env: dict[str, str], out: dict[str, str]) -> None:
    shown = []
    for command in s.before:
        rc, text = shell(command, root, env)
        if rc:
            raise RuntimeError(f"{s.name}: `{command}` failed ({rc}):\n{text}")
        shown.append(f"$ {command}\n{text}".rstrip("\n"))
    term = Terminal([sys.executable, "-m", "wizard", "new", s.deployment], root, env)
    pending = list(s.answers)
    row = -1
    while True:
        q = term.next_question(row)
        if q is None:
            break
        row, text = q
        match = next((a for a in pending if text == a[0] or text.startswith(a[0] + " ")), None)
        steps: list[str | Snapshot] = [ENTER]
        if match:
            pending.remove(match)
            steps = match[1]
        answer = ""
        for step in steps:
            if isinstance(step, Snapshot):
                out[step.name] = term.below(row, answer)
            else:
                term.child.send(step)
                answer = step.replace(CLEAR, "").replace(ENTER, "")
    rc = term.finish()
    if rc != 0 or pending:
        raise RuntimeError(f"{s.name}: exit status {rc}; never asked: {[a[0] for a in pending]}\n{term.screen.text()}")
    shown.append(f"$ python -m wizard new {s.deployment}\n{term.screen.text()}")
    out[s.name] = "\n".join(shown)


def generate(work: Path) -> dict[str, str]:
    """Run every session and command in ``work`` (in order: later ones see what earlier ones
    wrote); name -> the text of its block."""
    root = checkout(work / "checkout")
    env = tool_env(root, work)
    out: dict[str, str] = {}
    for s in SESSIONS:
        if isinstance(s, Session):
            _session(s, root, env, out)
        else:
            shown = []
            here = {**env, **{k: v.format(root=root) for k, v in s.env.items()}}
            for command in s.commands:
                _, text = shell(command, root, here)
                shown.append(f"$ {command}\n{text}".rstrip("\n"))
            out[s.name] = fixed_ids("\n".join(shown))
    return out


RUN_ID = re.compile(r"\b\d{6}-\d{6}-[a-z0-9]{4}\b")


def fixed_ids(text: str) -> str:
    """Submission and sweep ids (time and random letters) in their order of first appearance
    replaced by fixed ones, so that a transcript is the same at every run."""
    seen: dict[str, str] = {}

    def fixed(m: re.Match[str]) -> str:
        return seen.setdefault(m.group(0), f"251130-120000-{chr(ord('a') + len(seen) % 26) * 4}")

    return RUN_ID.sub(fixed, text)


# --------------------------------------------------------------------------- the pages
def rewrite(text: str, transcripts: dict[str, str]) -> str:
    """``text`` with the block of every known transcript replaced by its new text."""
    languages = names()

    def block(m: re.Match) -> str:
        name = m.group(1)
        if name not in transcripts:
            return m.group(0)
        fence = "````" if "```" in transcripts[name] else "```"
        return f"<!-- transcript: {name} -->\n{fence}{languages[name]}\n{transcripts[name]}\n{fence}\n{TRANSCRIPT_CLOSE}"

    return re.sub(r"<!-- transcript: ([\w.-]+) -->\n.*?" + re.escape(TRANSCRIPT_CLOSE), block, text, flags=re.S)


def marked(text: str) -> list[str]:
    """The names of the transcripts a page marks."""
    return re.findall(r"^<!-- transcript: ([\w.-]+) -->$", text, flags=re.M)


def updated_pages(transcripts: dict[str, str]) -> dict[Path, tuple[str, str]]:
    """page -> (its text now, its text with the transcripts rewritten), for the pages that change."""
    out = {}
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = rewrite(text, transcripts)
        if new != text:
            out[page] = (text, new)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the transcripts in the docs from real runs.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff when a page is out of date")
    parser.add_argument("--sample-runs", type=Path, metavar="DIR",
                        help="only write the records of a sample sweep into DIR/results/ (what the compare transcripts compare)")
    parser.add_argument("--model-folders", type=Path, metavar="DIR",
                        help="with --sample-runs: also a folder per finished run in DIR (its model folder, for promote)")
    args = parser.parse_args(argv)
    if args.sample_runs:
        print(sample_runs(args.sample_runs, args.model_folders))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlshift-transcripts-") as tmp:
        transcripts = generate(Path(tmp))
    unknown = sorted({n for p in pages() for n in marked(p.read_text(encoding="utf-8"))} - set(transcripts))
    if unknown:
        print(f"error: the docs mark transcripts this script does not make: {', '.join(unknown)}", file=sys.stderr)
        return 2
    changed = updated_pages(transcripts)
    for page, (old, new) in changed.items():
        rel = str(page.relative_to(ROOT))
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), rel, rel + " (now)"))
        else:
            page.write_text(new, encoding="utf-8")
            print(f"wrote {rel}")
    if args.check and changed:
        print("\nthe transcripts are out of date: run python docs/gen_transcripts.py (or make docs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
