"""GPU memory behaviour of the transformers engine (needs a CUDA GPU):

  * the batch size probed from free memory at start-up, and what it was measured from;
  * an induced out-of-memory split: one batch of long prompts run with the whole GPU, then again
    with the process capped (what ``--gpu-memory-utilization`` does) a quarter above the memory
    its decoding steps need and below the peak of its prefill, so the prefill runs out of memory
    and is split in halves. Prints the splits, the throughput of both runs (ratio) and how many
    outputs match.

    python bench/bench_gpu_memory.py [--size 1b] [--batch 128] [--prompt-tokens 1024]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import SIZES, describe_device, tiny_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--batch", type=int, default=128, help="sequences in the batch (default 128)")
    parser.add_argument("--prompt-tokens", type=int, default=1024, help="tokens per prompt (default 1024)")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per prompt (default 16)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu_memory needs a CUDA GPU", file=sys.stderr)
        return 2
    from runtime.engine_base import SamplingParams, Sequence, generate_all
    from runtime.engine_transformers import TransformersEngine
    from runtime.settings import ServeSettings

    print(f"device: {describe_device()}; model: {args.size}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-memory-"))
    try:
        model = tiny_model(work, args.size)
        engine = TransformersEngine(ServeSettings(model=str(model)))
        start = time.perf_counter()
        engine.load()
        figures = engine.probe_figures
        print(f"loaded in {time.perf_counter() - start:.1f} s, {str(engine.dtype).removeprefix('torch.')}; probed batch size "
              f"{engine.max_batch_size}: {figures['per_sequence_bytes'] / 2**20:.1f} MiB per sequence of "
              f"{figures['sample_tokens']} tokens, {figures['available_bytes'] / 2**30:.1f} GiB available")

        g = torch.Generator().manual_seed(0)
        ids = torch.randint(10, 500, (args.batch, args.prompt_tokens), generator=g).tolist()

        peaks: dict[str, int] = {}
        prefill = engine.prefill

        def measured_prefill(prompts: list[list[int]]):  # type: ignore[no-untyped-def]
            rows = prefill(prompts)
            peaks["prefill"] = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return rows

        engine.prefill = measured_prefill  # type: ignore[method-assign]

        def run() -> tuple[list[list[int]], float, int]:
            seqs = [Sequence(prompt_ids=p, params=SamplingParams(max_tokens=args.new_tokens, ignore_eos=True)) for p in ids]
            engine.oom_splits = 0
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            list(generate_all(engine, seqs, args.batch))  # one prefill of the whole batch, then decoding
            torch.cuda.synchronize()
            peaks["decode"] = torch.cuda.max_memory_allocated()
            return [s.output_ids for s in seqs], time.perf_counter() - t0, engine.oom_splits

        run()  # warm-up
        torch.cuda.empty_cache()
        held = torch.cuda.memory_allocated()
        expected, whole_s, _ = run()
        prefill_peak, decode_peak = peaks["prefill"] - held, peaks["decode"] - held
        torch.cuda.empty_cache()
        cap = torch.cuda.memory_reserved() + int(decode_peak * 1.25)
        if decode_peak * 1.25 >= prefill_peak:
            print("the prefill's peak is not above what decoding needs: use longer prompts (--prompt-tokens)")
            return 1
        total = torch.cuda.mem_get_info()[1]
        torch.cuda.set_per_process_memory_fraction(cap / total)
        got, capped_s, splits = run()
        torch.cuda.set_per_process_memory_fraction(1.0)
        tokens = args.batch * args.new_tokens
        same = sum(a == b for a, b in zip(got, expected))
        print(f"batch of {args.batch} x {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens each, "
              f"above the weights: prefill peak {prefill_peak / 2**30:.2f} GiB, decoding peak {decode_peak / 2**30:.2f} GiB")
        print(f"whole GPU:          {tokens / whole_s:9.1f} tokens/s, {whole_s:.2f} s, 0 splits")
        print(f"capped at {cap / 2**30:5.2f} GiB: {tokens / capped_s:9.1f} tokens/s, {capped_s:.2f} s, {splits} out-of-memory splits")
        print(f"capped / whole      {whole_s / capped_s:.2f}x throughput; {same}/{args.batch} outputs identical")
        engine.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
