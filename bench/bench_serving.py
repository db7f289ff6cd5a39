"""Serving benchmark: the same tiny random Llama (4 layers, 256 wide) behind

  * our server (``python -m runtime serve``),
  * ``transformers serve --continuous-batching``,
  * our server limited to one request at a time (``--max-batch-size 1``),

under the same load (64 requests, concurrency 16, 64 output tokens, greedy), against the
ceiling: the same 64 prompts through a direct batched ``model.generate`` at batch size 16.

    python bench/bench_serving.py [--stream] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Server, free_port, tiny_model

from runtime.bench import make_prompts, run_load

N, CONCURRENCY, TOKENS, PROMPT_WORDS = 64, 16, 64, 32


def ceiling(model_path: Path, batch_size: int = 16, repeat: int = 1) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    prompts = make_prompts(N, PROMPT_WORDS)
    with torch.inference_mode():
        batch = tok(prompts[:batch_size], return_tensors="pt", padding=True)
        model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)  # warm-up
        rates = []
        for _ in range(repeat):
            start, tokens = time.perf_counter(), 0
            for i in range(0, N, batch_size):
                batch = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True)
                out = model.generate(**batch, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                tokens += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            rates.append(tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def load(url: str, model: str, stream: bool, ignore_eos: bool, repeat: int = 1) -> dict:
    """One short warm-up request, then the measured load ``repeat`` times; medians are reported."""
    asyncio.run(run_load(url=url, model=model, num_requests=2, concurrency=2, request_rate=None, max_tokens=4, stream=False))
    runs = [asyncio.run(run_load(
        url=url, model=model, num_requests=N, concurrency=CONCURRENCY, request_rate=None, max_tokens=TOKENS,
        stream=stream, prompt_words=PROMPT_WORDS, ignore_eos=ignore_eos,
    )) for _ in range(repeat)]
    result = dict(runs[0])
    result["output_tokens_per_s"] = statistics.median(r["output_tokens_per_s"] for r in runs)
    result["e2e_s"] = {q: statistics.median(r["e2e_s"][q] for r in runs) for q in runs[0]["e2e_s"]}
    result["output_tokens"] = sum(r["output_tokens"] for r in runs) // len(runs)
    result["errors"] = {k: sum(r["errors"].get(k, 0) for r in runs) for r in runs for k in r["errors"]}
    result["runs_output_tokens_per_s"] = [r["output_tokens_per_s"] for r in runs]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", action="store_true", help="stream responses (adds TTFT/ITL; more client work)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-transformers-serve", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per server; medians are reported (default 3)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    results: dict[str, dict] = {}
    try:
        model = tiny_model(work)
        print("ceiling: direct model.generate at batch 16 ...", flush=True)
        results["ceiling"] = {"output_tokens_per_s": ceiling(model, repeat=args.repeat)}

        def ours(name: str, batch: int) -> None:
            port = free_port()
            cmd = [sys.executable, "-m", "runtime", "serve", "--model", str(model), "--served-model-name", "tiny",
                   "--host", "127.0.0.1", "--port", str(port), "--max-batch-size", str(batch), "--log-level", "warning"]
            print(f"{name} ...", flush=True)
            with Server(cmd, f"http://127.0.0.1:{port}/ready", work / f"{name}.log"):
                results[name] = load(f"http://127.0.0.1:{port}", "tiny", args.stream, ignore_eos=True, repeat=args.repeat)

        ours("runtime", CONCURRENCY)
        ours("one_at_a_time", 1)
        cli = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
        if not args.skip_transformers_serve and Path(cli).exists():
            port = free_port()
            cmd = [cli, "serve", str(model), "--continuous-batching", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
            print("transformers serve --continuous-batching ...", flush=True)
            with Server(cmd, f"http://127.0.0.1:{port}/health", work / "transformers-serve.log"):
                results["transformers_serve_cb"] = load(f"http://127.0.0.1:{port}", str(model), args.stream, ignore_eos=False,
                                                         repeat=args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ours_r = results["runtime"]
    print()
    print(f"{'server':34} {'output tok/s':>12} {'e2e p50 s':>10} {'e2e p99 s':>10} {'tokens':>7} {'errors':>7}")
    for name, r in results.items():
        if name == "ceiling":
            print(f"{'direct generate, batch 16 (ceiling)':34} {r['output_tokens_per_s']:12.1f}")
            continue
        e2e = r["e2e_s"]
        print(f"{name:34} {r['output_tokens_per_s']:12.1f} {e2e['p50']:10.3f} {e2e['p99']:10.3f} {r['output_tokens']:7d} {sum(r['errors'].values()):7d}")
    print()
    tps = ours_r["output_tokens_per_s"]
    print(f"ours / ceiling            {tps / results['ceiling']['output_tokens_per_s']:.2f}x  (target >= 0.9)")
    print(f"ours / one at a time      {tps / results['one_at_a_time']['output_tokens_per_s']:.2f}x  (target >= 6)")
    if "transformers_serve_cb" in results:
        cb = results["transformers_serve_cb"]
        print(f"ours / transformers serve {tps / cb['output_tokens_per_s']:.2f}x  (target >= 1.5)")
        print(f"p99 ours / transformers   {ours_r['e2e_s']['p99'] / cb['e2e_s']['p99']:.2f}   (target <= 1)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
