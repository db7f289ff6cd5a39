"""Wizard start-up and render time against a bare `python -c pass`, measured in one run.

    .venv/bin/python bench/bench_render.py [--repeat 15]

Prints the median wall time of each command and its ratio to the baseline. Every command is
a fresh process, as a user runs it; the render writes a whole deployment into a temp folder.
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

ROOT = Path(__file__).resolve().parent.parent


def median_seconds(cmd: list[str], repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="mlshift-bench-"))
    example = ROOT / "docs" / "examples" / "llama-server.yaml"

    def fresh():
        shutil.rmtree(work / "deps", ignore_errors=True)

    try:
        subprocess.run([py, "-m", "wizard", "new", "rendered", "--answers", str(example),
                        "--deployments-dir", str(work / "kept")], check=True, stdout=subprocess.DEVNULL)
        rows = [
            ("python -c pass (baseline)", [py, "-c", "pass"], None),
            ("python -m wizard --help", [py, "-m", "wizard", "--help"], None),
            ("wizard new (whole deployment)", [py, "-m", "wizard", "new", "bench", "--answers", str(example),
                                               "--deployments-dir", str(work / "deps")], fresh),
            ("wizard render (up to date)", [py, "-m", "wizard", "render", str(work / "kept" / "rendered")], None),
        ]
        base = None
        print(f"{'command':<34} {'median':>9} {'x baseline':>11}")
        for label, cmd, before in rows:
            t = median_seconds(cmd, args.repeat, before)
            base = base or t
            print(f"{label:<34} {t * 1000:7.1f}ms {t / base:10.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
