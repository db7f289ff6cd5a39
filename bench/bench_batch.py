"""Batch benchmark: 512 prompts, 64 new tokens each, greedy, on a random Llama (by default the
tiny one; ``--size 1b`` on a GPU, where every path runs in bfloat16 on the GPU).

  * ``python -m runtime batch``'s runner (length-sorted, refilled batches, fsync'd output),
  * the best direct library call: padded ``model.generate`` over length-sorted batches of
    16, 32, 64 and 128 prompts, and transformers' continuous-batching ``generate_batch``,
  * a per-prompt ``model.generate`` loop (timed on the first 32 prompts, 8 on a GPU; tokens/s).

    python bench/bench_batch.py [--json OUT]
    python bench/bench_batch.py --size 1b     # a GPU: our runner uses the probed batch size
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import SIZES, describe_device, device, tiny_model

from runtime.bench import make_prompts

N, TOKENS, PROMPT_WORDS = 512, 64, 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--batch-size", type=int, help="our runner's batch size (default 64 on CPU, probed on GPU)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="the random model (default tiny)")
    parser.add_argument("--prompts", type=int, default=N, help=f"prompts (default {N})")
    args = parser.parse_args()
    n = args.prompts
    on = device()
    print(f"device: {describe_device()}; model: {args.size}; {n} prompts, {TOKENS} new tokens each", flush=True)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from runtime.batch import run_batch, transformers_backend
    from runtime.engine_transformers import TransformersEngine
    from runtime.settings import ServeSettings

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    results: dict[str, float] = {}
    try:
        model_path = tiny_model(work, args.size)
        prompts = make_prompts(n, PROMPT_WORDS, seed=1)
        tok = AutoTokenizer.from_pretrained(model_path)
        tok.padding_side = "left"
        dtype = torch.bfloat16 if on == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(on).eval()
        order = sorted(range(n), key=lambda i: len(tok(prompts[i])["input_ids"]), reverse=True)

        def direct(batch_size: int, subset: list[int]) -> float:
            start, tokens = time.perf_counter(), 0
            with torch.inference_mode():
                for i in range(0, len(subset), batch_size):
                    batch = tok([prompts[j] for j in subset[i : i + batch_size]], return_tensors="pt", padding=True).to(on)
                    out = model.generate(**batch, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
                    tokens += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            return tokens / (time.perf_counter() - start)

        direct(16, order[:16])  # warm-up
        # On a GPU batches 16 and 32 are left out (the slowest, and the model is large) and 256 is added.
        for size in (64, 128, 256) if on == "cuda" else (16, 32, 64, 128):
            print(f"direct generate, batch {size} ...", flush=True)
            results[f"direct_generate_batch_{size}"] = direct(size, order)
        if hasattr(model, "generate_batch"):
            print("direct generate_batch (continuous batching) ...", flush=True)
            ids = [tok(p)["input_ids"] for p in prompts]
            config = GenerationConfig(max_new_tokens=TOKENS, do_sample=False, eos_token_id=-1, pad_token_id=tok.pad_token_id)
            try:
                start = time.perf_counter()
                out = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
                tokens = sum(len(r.generated_tokens) for r in out.values())
                results["direct_generate_batch_cb"] = tokens / (time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"  generate_batch failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        loop = min(n, 8 if on == "cuda" else 32)
        print(f"per-prompt loop (first {loop} prompts) ...", flush=True)
        results["per_prompt_loop"] = direct(1, list(range(loop)))

        del model
        if on == "cuda":
            torch.cuda.empty_cache()
        src = work / "in.jsonl"
        src.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts)))
        engine = TransformersEngine(ServeSettings(model=str(model_path)))
        engine.load()
        engine.eos_token_ids = frozenset()  # same work as min_new_tokens above: exactly 64 tokens each
        batch_size = args.batch_size or (engine.max_batch_size if on == "cuda" else 64)
        print(f"runtime batch runner, batch {batch_size} ({'probed' if on == 'cuda' and not args.batch_size else 'set'}) ...", flush=True)
        warm_src = work / "warm.jsonl"  # the direct calls above were warmed up too
        warm_src.write_text("".join(json.dumps({"id": i, "prompt": prompts[j]}) + "\n" for i, j in enumerate(order[: 2 * batch_size])))
        run_batch(transformers_backend(engine, batch_size), warm_src, work / "warm-out.jsonl", max_tokens=8, temperature=0.0, progress=False)
        summary = run_batch(transformers_backend(engine, batch_size), src, work / "out.jsonl", max_tokens=TOKENS, temperature=0.0, progress=False)
        results["runtime_batch_size"] = batch_size
        results["runtime_batch"] = summary.tokens_per_s
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best_name = max((k for k in results if k.startswith("direct_")), key=results.__getitem__)
    print()
    for name, value in results.items():
        if name != "runtime_batch_size":
            print(f"{name:34} {value:10.1f} tokens/s")
    ours = results["runtime_batch"]
    print()
    print(f"ours / best direct ({best_name})  {ours / results[best_name]:.2f}x  (target >= 0.9)")
    print(f"ours / per-prompt loop  {ours / results['per_prompt_loop']:.2f}x  (target >= 10)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
