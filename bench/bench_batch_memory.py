"""Memory of a resumed batch run as the dataset grows.

For each size N, an input of N records and an output where all but 8 are already done: the
runner reads both, loads the tiny model and generates the 8 that are left (a real resume). Its
peak resident memory is measured in a process of its own. The baseline, measured in the same
run, is the smallest size: what each record adds is the growth in peak memory divided by the
growth in records. The runner keeps a 16-byte digest per id (input and done), so that figure
stays near 32 bytes a record; holding the records themselves costs about a kilobyte each.

    python bench/bench_batch_memory.py [--sizes 30000 300000 3000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, tiny_model

LEFT = 8  # records each resume generates

MEASURE = """
import resource, sys
from runtime.cli import main
code = main(sys.argv[1:])
print("peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def write_files(work: Path, n: int) -> tuple[Path, Path]:
    src, out = work / f"in-{n}.jsonl", work / f"out-{n}.jsonl"
    with src.open("w") as fin, out.open("w") as fout:
        for i in range(n):
            rid = f"record-{i:09d}"
            fin.write(json.dumps({"id": rid, "prompt": f"a prompt of a few words, number {i}"}) + "\n")
            if i >= LEFT:
                fout.write(json.dumps({"id": rid, "text": " earlier answer", "prompt_tokens": 9, "completion_tokens": 3,
                                       "finish_reason": "length"}, ensure_ascii=False) + "\n")
    return src, out


def peak_mib(model: Path, src: Path, out: Path) -> float:
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, "batch", "--model", str(model), "--input", str(src), "--output", str(out),
         "--max-tokens", "4", "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=3600,
    )
    if r.returncode != 0:
        raise SystemExit(f"the batch run failed: {r.stderr[-2000:]}")
    assert f"{LEFT} generated" in r.stdout, r.stdout
    kib = next(int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("peak_kib"))
    return kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000])
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = tiny_model(work)
        peaks = {}
        for n in sizes:
            src, out = write_files(work, n)
            peaks[n] = peak_mib(model, src, out)
            print(f"  {n:>10,} records: peak {peaks[n]:8.1f} MiB", flush=True)
            src.unlink()
            out.unlink()
    base = sizes[0]
    print(f"\nbaseline: {base:,} records, peak {peaks[base]:.1f} MiB")
    for n in sizes[1:]:
        per_record = (peaks[n] - peaks[base]) * 2**20 / (n - base)
        print(f"{n:>10,} records: {peaks[n] / peaks[base]:.2f}x the baseline's peak for {n / base:.0f}x the records; "
              f"{per_record:.0f} bytes a record")


if __name__ == "__main__":
    main()
