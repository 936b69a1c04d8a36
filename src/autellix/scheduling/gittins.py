"""Program-level Gittins index: the best non-clairvoyant order for a known size law.

A program's size is its total service. Given the sizes of past programs of its class,
a program that has attained ``a`` seconds of service is ranked by

    rank(a) = min over d > 0 of  E[min(S - a, d) | S > a] / P(S - a <= d | S > a),

the expected service it needs per unit chance of finishing within the next ``d``
(the inverse of its Gittins index; smaller is served first). When the size law has a
decreasing hazard rate (heavy tails, a few huge programs among many small ones) the
rank grows with ``a`` and the order is least-attained-service (PLAS); when the hazard
rises (sizes alike) the rank falls with ``a`` and the order finishes what is nearly
done first, close to FCFS or SRPT. One rule, so the load's shape need not be known.

That index minimizes the mean latency in seconds. The metric served here is the latency
per token, which weighs a program's latency by the inverse of its size, so by default
each chance of finishing counts 1/S (the Gittins index for a weighted mean latency, with
the weight a function of the unknown size), and the rank is the square root of the ratio,
in seconds again: a program of known size S with r left ranks at sqrt(r S), a fresh one
at S. The plain index lets a big program near its end go before a fresh one that is
probably small (`--no-gittins-per-size`; docs/scheduling.md, "Gittins per token").

The process table learns the sizes per program class (``programs.SizeModel``: the kind a
client names, else its system prompt) and sends them with each call's program snapshot,
with the sizes of all classes together. A program whose class has too few sizes (or that
has no class) is ranked by its attained service, as PLAS ranks it, or lower where the law
of all programs says it is nearly done. Ranked by that mixture of kinds outright, fresh
programs waited behind programs near the end of another kind's sizes (docs/scheduling.md,
"One law per class"). Ranks are placed in the same discretized queues as PLAS (FCFS inside
a queue, anti-starvation), and a call is re-ranked each time it uses up its queue's
quantum: it may move up as well as down. Anti-starvation weighs a call's waiting against
its rank as well as its service: against service alone, a fresh program of a class known
to be long (ranked in a low queue with no service yet) is promoted after a few seconds of
waiting, and at loads past the engine's capacity those promotions undo the order
(docs/scheduling.md).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from autellix.scheduling.call import CallState
from autellix.scheduling.policy import Policy
from autellix.scheduling.queues import MultiLevelPolicy


def gittins_rank(sizes: Sequence[float], attained: float, per_size: bool = True) -> float:
    """The rank above for the empirical law of `sizes` (sorted ascending); `per_size`:
    weighted by 1/S as the policy ranks, else the plain rank. A program that has outgrown
    every size seen is ranked by its attained service (PLAS)."""
    first = bisect.bisect_right(sizes, attained)
    n = len(sizes) - first
    if n == 0:
        return attained
    best = float("inf")
    # With d = sizes[j] - a: the service it expects within d is the sum of min(S, sizes[j])
    # over the sizes beyond a, less a for each; it finishes within d for those up to j,
    # each counted 1/S per size (or 1).
    prefix = finished = 0.0
    for j in range(first, len(sizes)):
        prefix += sizes[j]
        finished += 1.0 / sizes[j] if per_size else 1.0
        beyond = len(sizes) - 1 - j
        expected = prefix + sizes[j] * beyond - attained * n
        best = min(best, expected / finished)
    return math.sqrt(best) if per_size else best


class Gittins(MultiLevelPolicy):
    name = "gittins"
    cuts_batch = True

    def rank(self, call: CallState) -> float:
        program = call.program
        attained = program.service + call.service
        per_size = self.config.gittins_per_size
        if program.sizes:
            return gittins_rank(program.sizes, attained, per_size)
        # No law of its own class: least attained service, or the rank under the law of
        # all programs where that is lower (a program that law says is nearly done).
        return min(attained, gittins_rank(program.sizes_of_all, attained, per_size))

    def entry_priority(self, call: CallState) -> float:
        return self.rank(call)

    def priority_now(self, call: CallState) -> float:
        return self.rank(call)  # the rank already counts the call's service

    def starvation_service(self, call: CallState, program_service: float) -> float:
        # Weighed against its rank too: a program expected to need much waits longer
        # before it is promoted over the ones expected to finish soon (under PLAS the rank
        # is the attained service, so the rule is the same).
        return max(super().starvation_service(call, program_service), self.rank(call))

    def add_services(self, call: CallState, steps: Sequence[float]) -> None:
        Policy.add_services(self, call, steps)  # this class's add_service, step by step

    def add_service(self, call: CallState, seconds: float) -> None:
        Policy.add_service(self, call, seconds)
        call.quantum_used += seconds
        if call.quantum_used >= self.config.quanta[call.level]:
            call.quantum_used = 0.0
            level = self.config.queue_of(self.rank(call))
            if level != call.level:
                self._move(call, level)
                self.demotions += 1
