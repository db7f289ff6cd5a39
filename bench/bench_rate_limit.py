"""What API keys and rate limits cost the server: the serving benchmark's load (64 requests,
concurrency 16, 64 output tokens, greedy, the tiny random Llama) against two of our servers side
by side, started together on the same model:

  * ``off``: no keys, no limits (callers share the ``anonymous`` name);
  * ``on``: a folder of three keys (the client sends one) and limits far above the load
    (``--rate-limit-requests-per-minute 1000000000 --rate-limit-tokens-per-minute 1000000000000``),
    so that every request goes through the key check, the requests bucket, a token reservation
    and its refund, and gets the ``x-ratelimit-*`` headers.

Loads alternate between the two (the first of each pair alternates too), in two rounds: the
servers are started again for the second, in the other order. Each pair gives two
ratios on/off: output tokens/s, and the server process's CPU time per output token (from
/proc, on Linux), which other programs on the machine disturb far less than the wall clock: on a
busy machine it is the figure to read. The medians over the pairs are the figures (target: at most
2 % lost: tokens/s on/off 0.98 or more, CPU per token on/off 1.02 or less). Besides, the
limiter's own work per request is timed in this process (the key compared with three, a quota
taken, reserved, settled and its headers written) and set against the time per request at that
load. ``--control`` runs the same with ``on`` as bare as ``off``: the ratios then show the noise
of the machine alone.

    python bench/bench_rate_limit.py [--pairs 6] [--control] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import Server, describe_device, device, free_port, tiny_model

from runtime.bench import run_load

PROMPT_WORDS = 32
KEYS = {"alice": "sk-bench-alice-2c9e4f1a", "bob": "sk-bench-bob-7d3b8a60", "carol": "sk-bench-carol-51e0c9d2"}
HIGH = ["--rate-limit-requests-per-minute", "1000000000", "--rate-limit-tokens-per-minute", "1000000000000"]


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of a process so far, all its threads (Linux /proc; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def limiter_cost_us(keys_dir: Path, max_tokens: int, n: int = 20000) -> float:
    """Microseconds of the limiter's work for one request, in this process (median of 5 rounds)."""
    from runtime.keys import KeyRing
    from runtime.metrics import Metrics
    from runtime.ratelimit import RateLimiter
    from runtime.settings import RateLimit

    metrics = Metrics()
    keys = KeyRing(keys_dir)
    limiter = RateLimiter(RateLimit(requests_per_minute=10**9, tokens_per_minute=10**12), metrics=metrics)
    token = KEYS["bob"]
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            name = keys.match(token, "")
            quota = limiter.quota(name)
            quota.admit()
            quota.reserve(max_tokens)
            quota.track(lambda: max_tokens)
            quota.headers()
            quota.settle()
            metrics.key_requests.labels(key=name).inc()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=6, help="alternating pairs of loads, half of them in each round (default 6)")
    parser.add_argument("--requests", type=int, default=64, help="requests per load (default 64)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in the closed loop (default 16)")
    parser.add_argument("--max-tokens", type=int, default=64, help="output tokens per request (default 64)")
    parser.add_argument("--control", action="store_true", help="both servers without keys and limits: the noise floor")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rate-limit-"))
    keys_dir = work / "api-keys"
    keys_dir.mkdir()
    for name, key in KEYS.items():
        (keys_dir / name).write_text(key)
    print(f"device: {describe_device()}; load: {args.requests} requests, concurrency {args.concurrency}, "
          f"{args.max_tokens} tokens; {args.pairs} pairs{'; control: on is off too' if args.control else ''}", flush=True)
    batch = ["--max-batch-size", str(args.concurrency)] if device() == "cpu" else []

    def load(url: str, key: str | None, n: int, tokens: int) -> dict:
        return asyncio.run(run_load(url=url, model="bench", num_requests=n, concurrency=args.concurrency, request_rate=None,
                                    max_tokens=tokens, stream=False, prompt_words=PROMPT_WORDS, api_key=key, ignore_eos=True))

    pairs: list[dict] = []
    try:
        model = tiny_model(work)
        flags = {"off": [], "on": [] if args.control else ["--api-keys-dir", str(keys_dir), *HIGH]}
        key = {"off": None, "on": None if args.control else KEYS["bob"]}

        def pair_of_loads(urls: dict[str, str], pids: dict[str, int], order: tuple[str, str]) -> dict:
            pair: dict = {}
            for name in order:
                before = cpu_seconds(pids[name])
                r = load(urls[name], key[name], args.requests, args.max_tokens)
                after = cpu_seconds(pids[name])
                if r["successful"] != args.requests:
                    raise SystemExit(f"{name}: {r['successful']} of {args.requests} requests succeeded (errors {r['errors']})")
                pair[name] = r["output_tokens_per_s"]
                pair[f"{name}_cpu_ms_per_token"] = (after - before) * 1000 / r["output_tokens"] if before is not None else None
            pair["ratio"] = pair["on"] / pair["off"]
            cpu_off, cpu_on = pair["off_cpu_ms_per_token"], pair["on_cpu_ms_per_token"]
            pair["cpu_ratio"] = cpu_on / cpu_off if cpu_off and cpu_on is not None else None
            cpu = (f"  CPU per token off {cpu_off:.3f}  on {cpu_on:.3f} ms  on/off {pair['cpu_ratio']:.3f}"
                   if pair["cpu_ratio"] is not None else "")
            print(f"  pair {len(pairs) + 1} ({' then '.join(order)}): off {pair['off']:8.1f}  on {pair['on']:8.1f} tokens/s  "
                  f"on/off {pair['ratio']:.3f}{cpu}", flush=True)
            return pair

        # Two rounds, the servers started in one order, then in the other: on this machine the server
        # started second ran a few per cent slower or faster than the first, with the same flags.
        for round_, started in enumerate((("off", "on"), ("on", "off"))):
            urls, commands = {}, {}
            for name in started:
                port = free_port()
                urls[name] = f"http://127.0.0.1:{port}"
                commands[name] = [sys.executable, "-m", "runtime", "serve", "--model", str(model), "--served-model-name", "bench",
                                  "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *batch, *flags[name]]
            first, second = started
            print(f"round {round_ + 1}: {first} started first", flush=True)
            with Server(commands[first], urls[first] + "/ready", work / f"{first}-{round_}.log") as a, \
                    Server(commands[second], urls[second] + "/ready", work / f"{second}-{round_}.log") as b:
                pids = {first: a.proc.pid, second: b.proc.pid}
                for name in started:  # a warm-up each
                    load(urls[name], key[name], args.concurrency, 16)
                for i in range(args.pairs // 2 + (args.pairs % 2 if round_ == 0 else 0)):
                    pairs.append(pair_of_loads(urls, pids, ("off", "on") if i % 2 == 0 else ("on", "off")))
        cost = limiter_cost_us(keys_dir, args.max_tokens)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = statistics.median(p["ratio"] for p in pairs)
    off_cpu = [p["off_cpu_ms_per_token"] for p in pairs if p["off_cpu_ms_per_token"]]
    if off_cpu:  # the server's CPU time per request
        per_request_us, what = statistics.median(off_cpu) * args.max_tokens * 1000, "of CPU"
    else:  # the wall-clock time per request at this load (throughput)
        per_request_us, what = args.max_tokens / statistics.median(p["off"] for p in pairs) * 1e6, "of wall-clock time"
    print()
    print(f"tokens/s on / off, median of {len(pairs)} pairs       {ratio:.3f}x  (range {min(p['ratio'] for p in pairs):.3f}-"
          f"{max(p['ratio'] for p in pairs):.3f}; target >= 0.98)")
    cpu_ratios = [p["cpu_ratio"] for p in pairs if p["cpu_ratio"] is not None]
    cpu_ratio = statistics.median(cpu_ratios) if cpu_ratios else None
    if cpu_ratio is not None:
        print(f"CPU per token on / off, median of {len(pairs)} pairs  {cpu_ratio:.3f}x  (range {min(cpu_ratios):.3f}-"
              f"{max(cpu_ratios):.3f}; target <= 1.02)")
    print(f"limiter work per request                     {cost:.1f} us = {cost / per_request_us * 100:.3f} % of the server's "
          f"{per_request_us / 1000:.1f} ms {what} per request")
    if args.json:
        args.json.write_text(json.dumps({"pairs": pairs, "median_ratio": ratio, "median_cpu_ratio": cpu_ratio,
                                         "limiter_us_per_request": cost,
                                         "per_request_us": per_request_us}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
