"""Scheduling settings: the multi-level queues and anti-starvation.

The paper gives no values for these; the defaults and their reasons:

- Boundaries are geometric (1, 2, 4, ... 512 seconds of program service, K = 11
  queues). Program service in agent workloads spans four orders of magnitude (one
  short chat turn is under a second of executor time on a GPU; a LATS search is
  hundreds of seconds), and a geometric ladder keeps a program's rank among others
  of its own order of magnitude while the scan stays O(K). The first boundary of
  1 s is about one short call (a few dozen decode steps on a GPU).
- Quanta default to each queue's width (hi - lo), as in the paper: a call demotes
  once it has received as much service as its queue spans. The last queue has no
  quantum.
- beta = 5: a call is promoted to Q1 once it has waited five times its program's
  service (its own included), i.e. a slowdown of 6. Below that the least-attained-service
  order is kept; above it starvation is the bigger harm.
- The waiting weighed is the call's own, not its program's past calls' too (the paper's
  rule, `starvation_program_waiting`). Under a sustained overload every program waits,
  and a program that has waited beta times its service has every later call promoted the
  moment it arrives: the first queue fills with the oldest programs and the order becomes
  FCFS with preemption (docs/scheduling.md, "Anti-starvation under sustained overload").
- min_starvation_service: the service a call is assumed to have when it has none,
  so a fresh call in a low queue (skip-join MLFQ) is not promoted the instant it
  waits. Defaults to the first boundary.
- gittins_per_size = True: Gittins ranks for the mean latency per token, the metric this
  project and the paper serve, by weighing each program's end by 1/its size; the plain
  index (the mean latency in seconds) lets big programs near their end go before fresh
  ones, and a server that had learned the sizes of heavy-tailed agents then gained little
  over FCFS in the simulator (docs/scheduling.md, "Gittins per token").
- preempt = False: running calls keep their places, and the order decides which waiting
  call takes the next free one. Agent calls are short, so places free up within seconds;
  on the real engine preempting cost more than it gained (a preempted call holds its KV
  while it waits, which the prefix cache then lacks): slower than FCFS, measurably, on
  light-tailed agents, no gain on mixed or heavy-tailed ones, a tie or a loss in the
  simulator (docs/scheduling.md, "Preemption: off by default").
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from autellix.flags import check_fields


def geometric_boundaries(first: float = 1.0, ratio: float = 2.0, num_queues: int = 11) -> tuple:
    """Upper edges of Q1..Q(K-1); QK is unbounded."""
    return tuple(first * ratio**i for i in range(num_queues - 1))


# Field metadata: "help" is the flag's help text (autellix/flags.py makes the flags); "flag":
# None marks a setting without a flag; "min", "above" and "max" bound a number.


@dataclass
class GeometricBoundaries:
    """The boundaries as a geometric ladder: what they are built from when not given."""

    num_queues: int = field(default=11, metadata={"help": "K priority queues", "min": 1})
    first_boundary: float = field(
        default=1.0, metadata={"help": "upper edge of Q1 in seconds of service", "above": 0}
    )
    boundary_ratio: float = field(
        default=2.0, metadata={"help": "each boundary is this times the one before", "above": 1}
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def __call__(self) -> tuple:
        return geometric_boundaries(self.first_boundary, self.boundary_ratio, self.num_queues)


@dataclass
class SchedulingConfig:
    boundaries: tuple[float, ...] = field(
        default_factory=geometric_boundaries,
        metadata={
            "help": "explicit queue boundaries (seconds) (default: from --num-queues,"
            " --first-boundary and --boundary-ratio)",
            "built_from": GeometricBoundaries,
        },
    )
    quanta: tuple[float, ...] = field(
        default=(), metadata={"help": "per-queue quanta (default: each queue's width)"}
    )
    beta: float = field(
        default=5.0,
        metadata={
            "help": "anti-starvation ratio: a call is promoted to Q1 once its waiting reaches"
            " this many times its program's service (its own included)",
            "above": 0,
        },
    )
    starvation_program_waiting: bool = field(
        default=False,
        metadata={
            "help": "anti-starvation weighs the waiting of the program's past calls too (the"
            " paper's rule; under sustained overload it promotes every call of a program that"
            " once waited, and the order falls to FCFS)"
        },
    )
    min_starvation_service: float = field(
        default=0.0,  # 0: the first boundary
        metadata={"flag": None, "help": "the service assumed of a call without any"},
    )
    skip_join: bool = field(
        default=False, metadata={"help": "mlfq: enter by prompt length (FastServe's skip-join)"}
    )
    prefill_seconds_per_token: float = field(
        default=1e-4,
        metadata={"flag": None, "help": "skip-join's estimate of prefill time", "min": 0},
    )
    gittins_per_size: bool = field(
        default=True,
        metadata={
            "help": "gittins: rank for the mean latency per token (each program's end weighed"
            " by 1/its size); off, for the mean latency in seconds (the plain index)"
        },
    )
    tenant_shares: bool = field(
        default=True,
        metadata={
            "help": "with calls of two tenants or more in an engine, deal the batch's slots "
            "between tenants by their weights (--api-keys), the policy's order within each"
        },
    )

    preempt: bool = field(
        default=False,
        metadata={
            "help": "a waiting call that outranks a running one may take its place and memory;"
            " off, running calls keep theirs and the order acts on the waiting calls only"
            " (--batch-cut needs it)"
        },
    )
    batch_cut: bool = field(
        default=False,
        metadata={
            "help": "plas, atlas, gittins, srpt: leave a call out of the batch when the time it"
            " adds to each step costs the more urgent calls more than it gains and its program's"
            " class is expected to need more than a fresh program (scheduling/cut.py; gains on"
            " heavy-tailed loads, ties on light-tailed ones: docs/scheduling.md)"
        },
    )

    def __post_init__(self) -> None:
        self.boundaries = tuple(float(b) for b in self.boundaries)
        if any(b <= 0 for b in self.boundaries):
            raise ValueError("queue boundaries must be positive")
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:], strict=False)):
            raise ValueError("queue boundaries must be strictly increasing")
        if not self.quanta:
            lows = (0.0, *self.boundaries)
            self.quanta = (
                *(hi - lo for lo, hi in zip(lows, self.boundaries, strict=False)),
                math.inf,
            )
        self.quanta = tuple(float(q) for q in self.quanta)
        if len(self.quanta) != self.num_queues:
            raise ValueError(
                f"need {self.num_queues} quanta (one per queue), got {len(self.quanta)}"
            )
        if any(q <= 0 for q in self.quanta):
            raise ValueError("quanta must be positive")
        check_fields(self)
        if self.batch_cut and not self.preempt:
            raise ValueError(
                "batch_cut (--batch-cut) leaves running calls out: it needs preempt (--preempt)"
            )
        if not self.min_starvation_service:
            self.min_starvation_service = self.boundaries[0] if self.boundaries else 1.0

    @property
    def num_queues(self) -> int:
        return len(self.boundaries) + 1

    def queue_of(self, priority: float) -> int:
        """Index of the queue whose [lo, hi) holds this priority."""
        return bisect.bisect_right(self.boundaries, priority)
