"""Prometheus metrics: histograms kept as calls and programs end, gauges read from the
replicas at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from autellix.engine.llm_engine import CallOutput
from autellix.programs import Program

if TYPE_CHECKING:
    from autellix.server.replica import Replica

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)


RETENTION_GAUGES = (
    ("pinned_blocks", "KV blocks pinned for a live program's return, no call holding them"),
    ("pins", "Programs with KV pinned for their return"),
    ("pins_made", "Pins made so far"),
    ("pins_expired", "Pins whose time-to-live passed before their program returned, so far"),
    ("pins_evicted", "Pins ended for a higher-ranked call's memory, so far"),
    ("pins_ended", "Pins ended because their program ended, so far"),
    ("pins_hit", "Pins whose program's next call used them, so far"),
    ("pin_hit_blocks", "Pinned blocks used by their program's next call, so far"),
    ("pin_blocked_seconds", "Seconds calls waited for KV blocks that pins held, summed, so far"),
    ("retention_swap_out_bytes", "KV bytes retention copied to host memory, so far"),
    ("retention_swap_in_bytes", "KV bytes of those copied back by a later call, so far"),
    ("host_copy_blocks", "KV blocks of ended pins held in host memory for their program"),
)

# per replica, by stats key
REPLICA_GAUGES = (
    ("running", "Calls in the running batch"),
    ("waiting", "Calls queued and not running"),
    ("swapped", "Calls preempted to host memory"),
    ("preemptions", "Running calls that fell out of a batch, so far"),
    ("evictions", "Calls whose KV left the device (swap or recompute), so far"),
    ("swap_out_bytes", "KV bytes swapped out so far (preempted calls and ended pins)"),
    ("swap_in_bytes", "KV bytes swapped in so far (preempted calls and host copies)"),
    ("kv_usage", "Fraction of KV blocks calls hold (pinned blocks apart)"),
    ("released_blocks", "Cached KV blocks of ended programs put first to evict"),
    ("prefix_cache_hit_rate", "Prompt tokens served from the prefix cache"),
    ("prefix_queried_tokens", "Prompt tokens looked up in the prefix cache, so far"),
    ("prefix_hit_tokens", "Prompt tokens found in the prefix cache, so far"),
    ("in_flight", "Calls routed to the replica and not finished"),
    *RETENTION_GAUGES,
)
# per replica and program class
KIND_GAUGES = (
    (
        "prefix_cache_hit_rate_by_kind",
        "Prompt tokens served from the prefix cache, per program class",
    ),
    (
        "prefix_queried_tokens_by_kind",
        "Prompt tokens looked up in the prefix cache, per program class, so far",
    ),
    (
        "prefix_hit_tokens_by_kind",
        "Prompt tokens found in the prefix cache, per program class, so far",
    ),
)
DERIVED = frozenset({"prefix_cache_hit_rate", "in_flight"})  # not a stats key as such


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.call_latency = Histogram(
            "autellix_call_latency_seconds",
            "Arrival to completion of a call",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.call_waiting = Histogram(
            "autellix_call_waiting_seconds",
            "Time a call spent queued",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.program_latency = Histogram(
            "autellix_program_latency_seconds",
            "First call's arrival to last call's completion, per ended program",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.calls = Counter(
            "autellix_calls", "Calls by how they ended", ["finish_reason"], registry=r
        )
        self.tokens = Counter("autellix_generated_tokens", "Tokens generated", registry=r)
        self.replica_failures = Counter(
            "autellix_replica_failures", "Calls that met a dead replica", registry=r
        )
        self.programs = Gauge("autellix_programs", "Programs in the process table", registry=r)
        self.programs_reaped = Gauge(
            "autellix_programs_reaped", "Programs reaped for idling past the TTL", registry=r
        )
        labels = ["replica"]
        self.alive = Gauge(
            "autellix_replica_alive", "1 if the replica is alive", labels, registry=r
        )
        self.queue = Gauge(
            "autellix_queue_length",
            "Calls in each priority queue",
            ["replica", "queue"],
            registry=r,
        )
        self.gauges = {
            name: Gauge(f"autellix_{name}", text, labels, registry=r)
            for name, text in REPLICA_GAUGES
        }
        self.by_kind = {
            name: Gauge(f"autellix_{name}", text, [*labels, "kind"], registry=r)
            for name, text in KIND_GAUGES
        }

    def observe_call(self, latency: float, waiting: float, last: CallOutput | None) -> None:
        self.call_latency.observe(latency)
        self.call_waiting.observe(waiting)
        self.calls.labels(last.finish_reason if last and last.finished else "abort").inc()
        if last is not None:
            self.tokens.inc(last.num_output_tokens)

    def observe_program(self, program: Program) -> None:
        if program.latency is not None:
            self.program_latency.observe(program.latency)

    def render(
        self, num_programs: int, reaped: int, stats: list[tuple[Replica, dict[str, Any] | None]]
    ) -> bytes:
        self.programs.set(num_programs)
        self.programs_reaped.set(reaped)
        for replica, s in stats:
            rid = str(replica.engine_id)
            self.alive.labels(rid).set(1 if replica.alive else 0)
            self.gauges["in_flight"].labels(rid).set(replica.in_flight)
            if not s:  # dead, or a backend with /metrics of its own
                continue
            for i, n in enumerate(s["queue_lengths"]):
                self.queue.labels(rid, str(i + 1)).set(n)
            for name, _ in REPLICA_GAUGES:
                if name not in DERIVED:
                    self.gauges[name].labels(rid).set(s[name])
            for kind, (kind_queried, kind_hit) in s["prefix_by_kind"].items():
                rate = kind_hit / kind_queried if kind_queried else 0.0
                self.by_kind["prefix_cache_hit_rate_by_kind"].labels(rid, kind).set(rate)
                self.by_kind["prefix_queried_tokens_by_kind"].labels(rid, kind).set(kind_queried)
                self.by_kind["prefix_hit_tokens_by_kind"].labels(rid, kind).set(kind_hit)
            queried = s["prefix_queried_tokens"]
            rate = s["prefix_hit_tokens"] / queried if queried else 0.0
            self.gauges["prefix_cache_hit_rate"].labels(rid).set(rate)
        return generate_latest(self.registry)
