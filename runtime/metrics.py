"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlshift_requests", "Requests answered, by endpoint and HTTP status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "mlshift_request_latency_seconds", "Time from arrival to the last byte, by endpoint.", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "mlshift_time_to_first_token_seconds", "Time from arrival to the first generated token.",
            buckets=TTFT_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter("mlshift_prompt_tokens", "Tokens read from prompts and inputs.", registry=r)
        self.generation_tokens = Counter("mlshift_generation_tokens", "Tokens generated.", registry=r)
        self.queue_depth = Gauge("mlshift_queue_depth", "Requests waiting for a place in a batch.", registry=r)
        self.running = Gauge("mlshift_running_requests", "Requests in the batch on the device.", registry=r)
        self.batch_size = Histogram(
            "mlshift_batch_size", "Sequences per forward pass on the device.", buckets=BATCH_BUCKETS, registry=r
        )
        self.max_batch_size = Gauge("mlshift_max_batch_size", "Most sequences in one batch (configured or probed).", registry=r)
        self.oom_splits = Counter("mlshift_oom_splits", "Batches split in halves after running out of device memory.", registry=r)
        self.preempted = Counter(
            "mlshift_preempted_sequences",
            "Sequences put back in the queue when the batch ran out of device memory (resumed with their tokens so far).",
            registry=r,
        )
        self.cancelled = Counter(
            "mlshift_cancelled_requests", "Requests dropped from the queue or the batch because the client went away.", registry=r
        )
        self.timed_out = Counter("mlshift_timed_out_requests", "Requests that ran past the request timeout.", registry=r)
        self.rejected = Counter("mlshift_rejected_requests", "Requests refused because the queue was full.", registry=r)
        self.ready = Gauge("mlshift_model_ready", "1 once the model is loaded.", registry=r)
        # By the name of the API key (runtime/keys.py; `anonymous` without keys), never the key.
        self.key_requests = Counter(
            "mlshift_key_requests", "API requests by the name of the key that made them.", ["key"], registry=r
        )
        self.key_rate_limited = Counter(
            "mlshift_key_rate_limited_requests", "Requests refused by the key's rate limit, by key name and limit (requests or tokens).",
            ["key", "limit"], registry=r,
        )
        self.key_generation_tokens = Counter(
            "mlshift_key_generation_tokens", "Tokens generated, by the name of the key that asked for them.", ["key"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
