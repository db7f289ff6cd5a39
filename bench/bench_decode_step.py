"""The direct decoding step against transformers' modules, in one process, on the same prompts:
the engine alone (no HTTP), waves of ``batch`` prompts prefilled together and decoded to the
end, for a few batch sizes. Runs alternate between the two paths (paired), and each pair's ratio
is printed; the medians are what to quote. Also checks that both paths gave the same tokens (in
float32 they must; in half precision a few may differ).

    python bench/bench_decode_step.py [--size tiny] [--batches 1 16 64] [--pairs 5]
    python bench/bench_decode_step.py --size 1b --batches 1 64 256     # a GPU
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import SIZES, describe_device, device, tiny_model

from runtime.bench import make_prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 1 16 64 on CPU, 1 64 256 on GPU)")
    parser.add_argument("--waves", type=int, default=2, help="waves of prompts per run (default 2)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    parser.add_argument("--pairs", type=int, default=5, help="paired runs per batch size (default 5)")
    args = parser.parse_args()

    import torch

    from runtime.engine_base import SamplingParams, Sequence
    from runtime.engine_transformers import TransformersEngine
    from runtime.settings import ServeSettings

    on = device()
    batches = args.batches or ([1, 64, 256] if on == "cuda" else [1, 16, 64])
    work = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    try:
        model = tiny_model(work, args.size)
        engines = {}
        for direct in (True, False):
            e = TransformersEngine(ServeSettings(model=str(model), direct_decode=direct, max_batch_size=max(batches)))
            e.load()
            engines["direct" if direct else "modules"] = e
        if engines["direct"].fast is None:
            print("this model has no direct decoding step")
            return 2
        print(f"device: {describe_device()}; model: {args.size} ({engines['direct'].dtype}); {args.tokens} tokens per prompt")

        def run(engine: TransformersEngine, prompts: list[list[int]], batch: int) -> tuple[float, float, list[list[int]]]:
            """Tokens/s over the waves, the median decoding step in ms, and the tokens."""
            steps: list[float] = []
            outputs: list[list[int]] = []
            if on == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for i in range(0, len(prompts), batch):
                seqs = [Sequence(prompt_ids=p, params=SamplingParams(max_tokens=args.tokens, ignore_eos=True)) for p in prompts[i : i + batch]]
                b = engine.new_batch()
                tokens = [b.add(seqs)]
                for _ in range(args.tokens - 1):
                    t = time.perf_counter()
                    tokens.append(b.step())
                    steps.append(time.perf_counter() - t)
                outputs += [list(col) for col in zip(*tokens)]
            elapsed = time.perf_counter() - start
            return len(prompts) * args.tokens / elapsed, statistics.median(steps) * 1000, outputs

        print(f"{'batch':>5} {'direct tok/s':>13} {'modules tok/s':>14} {'ratio':>6} {'step ms (direct / modules)':>27}")
        summary = []
        for batch in batches:
            prompts = [engines["direct"].encode(p) for p in make_prompts(batch * args.waves, 32, seed=batch)]
            for e in engines.values():  # warm-up: first shapes are slow on a GPU
                run(e, prompts[: batch], batch)
            ratios, same = [], True
            for _ in range(args.pairs):
                d_rate, d_step, d_out = run(engines["direct"], prompts, batch)
                m_rate, m_step, m_out = run(engines["modules"], prompts, batch)
                ratios.append(d_rate / m_rate)
                same = same and d_out == m_out
                print(f"{batch:5d} {d_rate:13.1f} {m_rate:14.1f} {d_rate / m_rate:6.2f} {d_step:12.2f} / {m_step:.2f}", flush=True)
            summary.append((batch, statistics.median(ratios), same))
        print()
        for batch, ratio, same in summary:
            print(f"batch {batch:4d}: direct / modules {ratio:.2f}x (median of {args.pairs}); same tokens: {'yes' if same else 'no'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
