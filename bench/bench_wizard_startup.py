"""How fast the wizard starts, against a bare ``python -c pass``.

Measures, as the median of several runs in this checkout:

* ``python -c pass``: the floor, the interpreter alone;
* ``python -m wizard new NAME --help``: argument parsing, no questions;
* the first question: ``python -m wizard new NAME`` under a pseudo-terminal, until
  "What are you deploying?" is drawn (then Ctrl-C, so nothing is written);
* the same through ``make wizard PROJECT=NAME``, when the checkout is already set up
  (``make -q .venv/.setup-done``); otherwise that row is skipped rather than installing anything.

Usage: ``.venv/bin/python bench/bench_wizard_startup.py [--runs N]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_QUESTION = "What are you deploying?"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def to_first_question(command: list[str], env: dict[str, str]) -> float:
    import pexpect

    start = time.perf_counter()
    child = pexpect.spawn(command[0], command[1:], cwd=str(ROOT), env=env, encoding="utf-8",
                          dimensions=(40, 200), timeout=60)
    child.expect_exact(FIRST_QUESTION)
    elapsed = time.perf_counter() - start
    child.send("\x03")  # Ctrl-C: nothing is written
    child.expect(pexpect.EOF)
    child.close()
    return elapsed


def median(fn, runs: int) -> float:
    fn()  # warm the file cache and the bytecode cache
    return statistics.median(fn() for _ in range(runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    py = sys.executable
    deployments = Path(tempfile.mkdtemp(prefix="wizard-bench-"))
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM=os.environ.get("TERM", "xterm"))
    try:
        rows: list[tuple[str, float | None]] = []
        base = median(lambda: timed([py, "-c", "pass"]), args.runs)
        rows.append(("python -c pass", base))
        rows.append(("python -m wizard new x --help",
                     median(lambda: timed([py, "-m", "wizard", "new", "x", "--help"]), args.runs)))
        rows.append(("first question: python -m wizard new x",
                     median(lambda: to_first_question([py, "-m", "wizard", "new", "bench-x", "--deployments-dir",
                                                       str(deployments)], env), args.runs)))
        make = shutil.which("make")
        up_to_date = make is not None and subprocess.run(
            [make, "-q", ".venv/.setup-done"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if up_to_date and Path(py).absolute().parent == ROOT / ".venv" / "bin":
            make_env = dict(env, ARGS=f"--deployments-dir {deployments}")
            rows.append(("first question: make wizard PROJECT=x",
                         median(lambda: to_first_question([make, "-s", "wizard", "PROJECT=bench-x"], make_env), args.runs)))
        else:
            rows.append(("first question: make wizard PROJECT=x", None))
    finally:
        shutil.rmtree(deployments, ignore_errors=True)

    print(f"median of {args.runs} runs, {sys.version.split()[0]} on {sys.platform}")
    print(f"{'':44}{'seconds':>9}{'x python -c pass':>18}")
    for label, seconds in rows:
        if seconds is None:
            print(f"{label:44}{'skipped':>9}  (checkout not set up: run make setup first)")
        else:
            print(f"{label:44}{seconds:9.3f}{seconds / base:17.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
