"""Serving benchmark: the same random Llama (by default the tiny one: 4 layers, 256 wide) behind

  * our server (``python -m runtime serve``),
  * ``transformers serve --continuous-batching``,
  * our server limited to one request at a time (``--max-batch-size 1``),

under the same load (by default 64 requests, concurrency 16, 64 output tokens, greedy), against
the ceiling: the same prompts through a direct batched ``model.generate`` at batch size equal to
the concurrency. On a GPU everything runs there (our server in bfloat16, its batch size probed
from free memory unless ``--max-batch-size`` is given).

    python bench/bench_serving.py [--stream] [--json OUT]
    python bench/bench_serving.py --size 1b --requests 256 --concurrency 64 --max-tokens 128   # a GPU
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

from common import ROOT, SIZES, Server, describe_device, device, free_port, metric, tiny_model

from runtime.bench import make_prompts, run_load

PROMPT_WORDS = 32


def ceiling(model_path: Path, n: int, batch_size: int, tokens_each: int, repeat: int = 1) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    on = device()
    dtype = torch.bfloat16 if on == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(on).eval()
    prompts = make_prompts(n, PROMPT_WORDS)
    with torch.inference_mode():
        batch = tok(prompts[:batch_size], return_tensors="pt", padding=True).to(on)
        model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)  # warm-up
        rates = []
        for _ in range(repeat):
            start, tokens = time.perf_counter(), 0
            for i in range(0, n, batch_size):
                batch = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(on)
                out = model.generate(**batch, max_new_tokens=tokens_each, min_new_tokens=tokens_each, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                tokens += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            rates.append(tokens / (time.perf_counter() - start))
    del model
    if on == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(rates)


def load(url: str, model: str, args: argparse.Namespace, ignore_eos: bool, n: int | None = None, warm: int | None = None) -> dict:
    """A short warm-up load (``warm`` requests, default one per client: on a GPU the first use of
    each batch shape is several times slower), then the measured load ``args.repeat`` times;
    medians are reported."""
    warm = warm or args.concurrency
    asyncio.run(run_load(url=url, model=model, num_requests=warm, concurrency=min(warm, args.concurrency), request_rate=None,
                         max_tokens=16, stream=False, prompt_words=PROMPT_WORDS))
    runs = [asyncio.run(run_load(
        url=url, model=model, num_requests=n or args.requests, concurrency=args.concurrency, request_rate=None,
        max_tokens=args.max_tokens, stream=args.stream, prompt_words=PROMPT_WORDS, ignore_eos=ignore_eos,
    )) for _ in range(args.repeat)]
    result = dict(runs[0])
    result["output_tokens_per_s"] = statistics.median(r["output_tokens_per_s"] for r in runs)
    result["e2e_s"] = {q: statistics.median(r["e2e_s"][q] for r in runs) for q in runs[0]["e2e_s"]}
    result["output_tokens"] = sum(r["output_tokens"] for r in runs) // len(runs)
    result["errors"] = {k: sum(r["errors"].get(k, 0) for r in runs) for r in runs for k in r["errors"]}
    result["runs_output_tokens_per_s"] = [r["output_tokens_per_s"] for r in runs]
    return result


def row(name: str, r: dict, args: argparse.Namespace) -> str:
    if name == "ceiling":
        return f"{f'direct generate, batch {args.concurrency} (ceiling)':34} {r['output_tokens_per_s']:12.1f}"
    e2e = r["e2e_s"]
    return f"{name:34} {r['output_tokens_per_s']:12.1f} {e2e['p50']:10.3f} {e2e['p99']:10.3f} {r['output_tokens']:7d} {sum(r['errors'].values()):7d}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", action="store_true", help="stream responses (adds TTFT/ITL; more client work)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-transformers-serve", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per server; medians are reported (default 3)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="the random model (default tiny)")
    parser.add_argument("--requests", type=int, default=64, help="requests per measured run (default 64)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in the closed loop (default 16)")
    parser.add_argument("--max-tokens", type=int, default=64, help="output tokens per request (default 64)")
    parser.add_argument("--max-batch-size", type=int, help="our server's batch size (default: the concurrency on CPU, probed on GPU)")
    parser.add_argument("--one-at-a-time-requests", type=int, help="requests for the one-at-a-time server (default: --requests)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    results: dict[str, dict] = {}
    on = device()
    print(f"device: {describe_device()}; model: {args.size}; load: {args.requests} requests, concurrency "
          f"{args.concurrency}, {args.max_tokens} tokens", flush=True)
    try:
        model = tiny_model(work, args.size)
        print(f"ceiling: direct model.generate at batch {args.concurrency} ...", flush=True)
        results["ceiling"] = {"output_tokens_per_s": ceiling(model, args.requests, args.concurrency, args.max_tokens, args.repeat)}
        print("  " + row("ceiling", results["ceiling"], args), flush=True)

        def ours(name: str, batch: int | None, n: int | None = None) -> None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "runtime", "serve", "--model", str(model), "--served-model-name", "bench",
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            if batch:
                cmd += ["--max-batch-size", str(batch)]
            print(f"{name} ...", flush=True)
            with Server(cmd, f"{url}/ready", work / f"{name}.log"):
                results[name] = load(url, "bench", args, ignore_eos=True, n=n, warm=2 if batch == 1 else None)
                results[name]["max_batch_size"] = metric(f"{url}/metrics", "mlshift_max_batch_size")
                results[name]["oom_splits"] = metric(f"{url}/metrics", "mlshift_oom_splits_total")
            print("  " + row(name, results[name], args), flush=True)

        ours("runtime", args.max_batch_size or (args.concurrency if on == "cpu" else None))
        ours("one_at_a_time", 1, args.one_at_a_time_requests)
        cli = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
        if not args.skip_transformers_serve and Path(cli).exists():
            port = free_port()
            cmd = [cli, "serve", str(model), "--continuous-batching", "--host", "127.0.0.1", "--port", str(port), "--device", on]
            print("transformers serve --continuous-batching ...", flush=True)
            with Server(cmd, f"http://127.0.0.1:{port}/health", work / "transformers-serve.log"):
                results["transformers_serve_cb"] = load(f"http://127.0.0.1:{port}", str(model), args, ignore_eos=False)
            print("  " + row("transformers_serve_cb", results["transformers_serve_cb"], args), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ours_r = results["runtime"]
    print()
    print(f"{'server':34} {'output tok/s':>12} {'e2e p50 s':>10} {'e2e p99 s':>10} {'tokens':>7} {'errors':>7}")
    for name in results:
        print(row(name, results[name], args))
    print()
    print(f"our server's batch size {ours_r['max_batch_size']:.0f} ({'probed' if on == 'cuda' and not args.max_batch_size else 'set'}), "
          f"out-of-memory splits {ours_r['oom_splits'] or 0:.0f}")
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
