"""The paper's toy engine: one decode step per time unit, a small batch, no memory limit.

Semantics, exactly (they decide the numbers):
- Time is integral. At each time t: the calls that finished at t leave and report
  to the process table; their programs' next calls arrive at t (a stage's parallel
  calls together, once every call of the previous stage is done); then one
  scheduling round picks up to `max_batch` calls; then one step runs from t to t+1.
- A call waits during every step it is queued and not in the batch, whether it has
  not started yet or was preempted. `total_wait` sums those call-steps.
- Each step gives every call in the batch one unit of service.
- Ties inside a queue go by arrival, then by the order calls were added (programs
  in the order listed; within a program, thread order).
"""

from __future__ import annotations

from dataclasses import dataclass

from autellix.programs import ProcessTable
from autellix.scheduling import CallState, SchedulingConfig, make_policy, select_batch


@dataclass
class ToyProgram:
    name: str
    stages: list[list[int]]  # decode steps of each call; a stage's calls run in parallel


SCENARIOS: dict[str, list[ToyProgram]] = {
    # Figure 2 of the paper: four single-threaded programs, all arriving at t=0.
    "toy-fig2": [
        ToyProgram("A", [[4], [3], [1], [1]]),
        ToyProgram("B", [[3], [3], [4]]),
        ToyProgram("C", [[1], [2]]),
        ToyProgram("D", [[4]]),
    ],
    # A map-reduce program (P: fan out to four threads, then reduce) beside two chat
    # programs. PLAS charges P the sum of its threads; ATLAS its critical path.
    "toy-atlas": [
        ToyProgram("P", [[1], [2, 2, 2, 2], [2]]),
        ToyProgram("Q", [[2], [2], [2], [2]]),
        ToyProgram("R", [[2], [2], [2], [2]]),
    ],
}

# One queue per step of service (quanta of one step): the toy ranks exactly by attained
# service, and preempts as the paper's does. The defaults are in seconds and would put every
# toy call in Q1.
TOY_CONFIG = SchedulingConfig(boundaries=tuple(range(1, 16)), beta=5.0, preempt=True)


class _ToyRun:
    """One scenario under one policy: the state `run_toy` steps."""

    def __init__(self, programs: list[ToyProgram], policy, max_batch: int) -> None:
        self.programs, self.policy, self.max_batch = programs, policy, max_batch
        self.clock = [0]
        self.table = ProcessTable(ttl=float("inf"), clock=lambda: self.clock[0])
        self.work_left = {p.name: sum(map(sum, p.stages)) for p in programs}
        self.next_stage = dict.fromkeys(self.work_left, 0)
        self.in_flight = dict.fromkeys(self.work_left, 0)
        self.steps_left: dict[str, int] = {}
        self.finish: dict[str, int] = {}
        self.total_wait = 0.0
        for program in programs:
            self.table.start(program.name)
            self.start_stage(program)

    def start_stage(self, program: ToyProgram) -> None:
        stage = program.stages[self.next_stage[program.name]]
        self.next_stage[program.name] += 1
        for thread, steps in enumerate(stage):
            call, snapshot = self.table.call_arrived(program.name, thread_id=str(thread))
            state = CallState(
                call.call_id,
                program.name,
                self.clock[0],
                snapshot,
                remaining_work=self.work_left[program.name],
            )
            self.steps_left[call.call_id] = steps
            self.in_flight[program.name] += 1
            self.policy.add(state, self.clock[0])

    def step(self) -> None:
        """One scheduling round and one decode step; finished calls leave."""
        batch, _ = select_batch(self.policy, self.clock[0], self.max_batch)
        for call in batch:
            self.policy.add_service(call, 1)
            self.steps_left[call.call_id] -= 1
            self.work_left[call.program_id] -= 1
        self.clock[0] += 1
        for call in [c for c in batch if self.steps_left[c.call_id] == 0]:
            self.policy.remove(call, self.clock[0])
            self.table.call_finished(call.program_id, call.call_id, call.waiting, call.service)
            self.total_wait += call.waiting
            self.in_flight[call.program_id] -= 1

    def advance_programs(self) -> None:
        """Programs whose stage is done start their next one, or finish."""
        for program in self.programs:
            if self.in_flight[program.name] or program.name in self.finish:
                continue
            if self.next_stage[program.name] < len(program.stages):
                self.start_stage(program)
            else:
                self.finish[program.name] = self.clock[0]
                self.table.end(program.name)


def run_toy(
    scenario: str,
    policy_name: str,
    max_batch: int = 2,
    config: SchedulingConfig | None = None,
) -> dict:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    run = _ToyRun(SCENARIOS[scenario], make_policy(policy_name, config or TOY_CONFIG), max_batch)
    while len(run.policy):
        run.step()
        run.advance_programs()
    return {
        "scenario": scenario,
        "policy": policy_name,
        "total_wait": int(run.total_wait),
        "makespan": run.clock[0],
        "finish": run.finish,
        "mean_program_latency": sum(run.finish.values()) / len(run.finish),
    }


def print_tables() -> None:
    """Every scenario under every policy, as tables (`autellix demo`)."""
    from rich.console import Console
    from rich.table import Table

    from autellix.scheduling import POLICIES

    console = Console()
    for scenario in SCENARIOS:
        table = Table(title=f"{scenario}: batch of 2, one decode step per time unit")
        for column in ("policy", "total wait", "makespan", "mean program latency", "finish"):
            table.add_column(column)
        for policy in POLICIES:
            r = run_toy(scenario, policy)
            finish = " ".join(f"{p}={t}" for p, t in sorted(r["finish"].items()))
            latency = f"{r['mean_program_latency']:.2f}"
            table.add_row(policy, str(r["total_wait"]), str(r["makespan"]), latency, finish)
        console.print(table)
