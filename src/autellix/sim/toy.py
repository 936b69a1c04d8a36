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
# service. The defaults are in seconds and would put every toy call in Q1.
TOY_CONFIG = SchedulingConfig(boundaries=tuple(range(1, 16)), beta=5.0)


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
    programs = SCENARIOS[scenario]
    clock = [0]
    table = ProcessTable(ttl=float("inf"), clock=lambda: clock[0])
    policy = make_policy(policy_name, config or TOY_CONFIG)
    work_left = {p.name: sum(map(sum, p.stages)) for p in programs}
    next_stage = dict.fromkeys(work_left, 0)
    in_flight = dict.fromkeys(work_left, 0)
    steps_left: dict[str, int] = {}
    finish: dict[str, int] = {}
    total_wait = 0.0

    def start_stage(program: ToyProgram) -> None:
        stage = program.stages[next_stage[program.name]]
        next_stage[program.name] += 1
        for thread, steps in enumerate(stage):
            call, snapshot = table.call_arrived(program.name, thread_id=str(thread))
            state = CallState(
                call.call_id,
                program.name,
                clock[0],
                snapshot,
                remaining_work=work_left[program.name],
            )
            steps_left[call.call_id] = steps
            in_flight[program.name] += 1
            policy.add(state, clock[0])

    for program in programs:
        table.start(program.name)
        start_stage(program)
    while len(policy):
        batch, _ = select_batch(policy, clock[0], max_batch)
        for call in batch:
            policy.add_service(call, 1)
            steps_left[call.call_id] -= 1
            work_left[call.program_id] -= 1
        clock[0] += 1
        for call in [c for c in batch if steps_left[c.call_id] == 0]:
            policy.remove(call, clock[0])
            table.call_finished(call.program_id, call.call_id, call.waiting, call.service)
            total_wait += call.waiting
            in_flight[call.program_id] -= 1
        for program in programs:
            if in_flight[program.name] or program.name in finish:
                continue
            if next_stage[program.name] < len(program.stages):
                start_stage(program)
            else:
                finish[program.name] = clock[0]
                table.end(program.name)
    return {
        "scenario": scenario,
        "policy": policy_name,
        "total_wait": int(total_wait),
        "makespan": clock[0],
        "finish": finish,
        "mean_program_latency": sum(finish.values()) / len(finish),
    }
