"""Load generator for OpenAI-compatible servers (ours, vLLM, transformers serve...).

Closed loop (``--concurrency`` clients, each sending its next request when the last one ends)
or open loop (Poisson arrivals at ``--request-rate`` per second, at most ``--concurrency`` in
flight). Reports request throughput, output tokens/s, time to first token, time per output
token, inter-token latency and end-to-end latency (p50/p95/p99), and errors by status.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

WORDS = (
    "the quick brown fox jumps over the lazy dog while a model server answers requests and "
    "batch inference reads prompts from files and writes generated text back to disk"
).split()


@dataclass
class Outcome:
    status: int | str = 200
    output_tokens: int = 0
    e2e: float = 0.0
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)


def make_prompts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(n)]


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def pct(q: float) -> float:
        if len(ordered) == 1:
            return ordered[0]
        pos = (len(ordered) - 1) * q
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"mean": statistics.fmean(ordered), "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99)}


async def _one(client: Any, url: str, body: dict[str, Any], stream: bool, headers: dict[str, str]) -> Outcome:
    import httpx

    start = time.perf_counter()
    out = Outcome()
    try:
        if not stream:
            resp = await client.post(url, json=body, headers=headers)
            out.status = resp.status_code
            if resp.status_code == 200:
                out.output_tokens = int(resp.json().get("usage", {}).get("completion_tokens", 0))
            out.e2e = time.perf_counter() - start
            return out
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            out.status = resp.status_code
            if resp.status_code != 200:
                await resp.aread()
                out.e2e = time.perf_counter() - start
                return out
            last = start
            chunks = 0
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if obj.get("usage"):
                    out.output_tokens = int(obj["usage"].get("completion_tokens", 0))
                choices = obj.get("choices") or []
                text = "".join((c.get("text") or (c.get("delta") or {}).get("content") or "") for c in choices)
                if not text:
                    continue
                now = time.perf_counter()
                if out.ttft is None:
                    out.ttft = now - start
                else:
                    out.itl.append(now - last)
                last = now
                chunks += 1
            if not out.output_tokens:
                out.output_tokens = chunks
    except httpx.HTTPError as exc:
        out.status = type(exc).__name__
    out.e2e = time.perf_counter() - start
    return out


async def run_load(
    *,
    url: str,
    model: str,
    num_requests: int,
    concurrency: int,
    request_rate: float | None,
    max_tokens: int,
    stream: bool,
    endpoint: str = "completions",
    prompt_words: int = 32,
    api_key: str | None = None,
    ignore_eos: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    import httpx

    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    target = f"{base}/{'chat/completions' if endpoint == 'chat' else 'completions'}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    prompts = make_prompts(num_requests, prompt_words, seed)

    def body(prompt: str) -> dict[str, Any]:
        b: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0.0, "stream": stream}
        if endpoint == "chat":
            b["messages"] = [{"role": "user", "content": prompt}]
        else:
            b["prompt"] = prompt
        if stream:
            b["stream_options"] = {"include_usage": True}
        if ignore_eos:
            b["ignore_eos"] = True
        return b

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=30.0), limits=limits) as client:
        start = time.perf_counter()
        if request_rate is None:
            queue = iter(prompts)

            async def worker() -> None:
                for prompt in queue:
                    outcomes.append(await _one(client, target, body(prompt), stream, headers))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            rng = random.Random(seed + 1)
            gate = asyncio.Semaphore(concurrency)

            async def fire(prompt: str) -> None:
                async with gate:
                    outcomes.append(await _one(client, target, body(prompt), stream, headers))

            tasks = []
            for prompt in prompts:
                tasks.append(asyncio.create_task(fire(prompt)))
                await asyncio.sleep(rng.expovariate(request_rate))
            await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    return summarise(outcomes, duration, stream=stream, concurrency=concurrency, request_rate=request_rate)


def summarise(outcomes: list[Outcome], duration: float, *, stream: bool, concurrency: int, request_rate: float | None) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200]
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.status != 200:
            errors[str(o.status)] = errors.get(str(o.status), 0) + 1
    tokens = sum(o.output_tokens for o in ok)
    tpot = [(o.e2e - o.ttft) / (o.output_tokens - 1) for o in ok if o.ttft is not None and o.output_tokens > 1]
    result: dict[str, Any] = {
        "requests": len(outcomes),
        "successful": len(ok),
        "errors": errors,
        "duration_s": duration,
        "concurrency": concurrency,
        "request_rate": request_rate,
        "stream": stream,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / duration if duration else 0.0,
        "e2e_s": percentiles([o.e2e for o in ok]),
    }
    if stream:
        result["ttft_s"] = percentiles([o.ttft for o in ok if o.ttft is not None])
        result["tpot_s"] = percentiles(tpot)
        result["itl_s"] = percentiles([x for o in ok for x in o.itl])
    return result


def format_report(r: dict[str, Any]) -> str:
    def ms(d: dict[str, float | None]) -> str:
        return "  ".join(f"{k} {v * 1000:8.1f}" if v is not None else f"{k}      n/a" for k, v in d.items())

    mode = f"Poisson {r['request_rate']}/s" if r["request_rate"] else "closed loop"
    lines = [
        f"requests            {r['successful']}/{r['requests']} ok in {r['duration_s']:.2f} s ({mode}, concurrency {r['concurrency']})",
        f"request throughput  {r['request_throughput']:.2f} req/s",
        f"output tokens/s     {r['output_tokens_per_s']:.1f} ({r['output_tokens']} tokens)",
        f"e2e latency ms      {ms(r['e2e_s'])}",
    ]
    if r["stream"]:
        lines += [
            f"TTFT ms             {ms(r['ttft_s'])}",
            f"TPOT ms             {ms(r['tpot_s'])}",
            f"ITL ms              {ms(r['itl_s'])}",
        ]
    lines.append("errors              " + (", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "none"))
    return "\n".join(lines)
