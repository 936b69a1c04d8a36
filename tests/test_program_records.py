"""What the process table records of a program and its calls, as GET /programs shows
it: class, threads, arrival and completion times, latency, the engines it ran on."""

from __future__ import annotations

import pytest

from autellix.programs import ProcessTable, ProgramEnded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_program_started_with_a_class_keeps_it() -> None:
    table = ProcessTable(clock=Clock())
    table.start("p", kind="search")
    table.call_arrived("p")  # a call that names no class
    assert table.get("p").kind == "search"
    table.call_arrived("q", kind="chat")
    table.call_arrived("q", kind="other")  # the first call's class stays
    assert table.get("q").kind == "chat"


def test_calls_record_their_thread_and_arrival() -> None:
    clock = Clock()
    table = ProcessTable(clock=clock)
    clock.now = 3.0
    a, _ = table.call_arrived("p", thread_id="t0")
    clock.now = 4.0
    b, _ = table.call_arrived("p", thread_id="t1")
    assert (a.thread_id, a.arrival, b.thread_id, b.arrival) == ("t0", 3.0, "t1", 4.0)
    assert a.program_id == b.program_id == "p" and a.call_id != b.call_id


def test_latency_runs_from_the_first_arrival_to_the_last_completion() -> None:
    clock = Clock()
    table = ProcessTable(clock=clock)
    clock.now = 2.0
    table.start("p")
    assert table.get("p").latency is None
    clock.now = 5.0
    first, _ = table.call_arrived("p")
    clock.now = 7.0
    second, _ = table.call_arrived("p")
    program = table.get("p")
    assert (program.first_arrival, program.last_arrival) == (5.0, 7.0)
    assert program.latency is None  # nothing completed yet
    clock.now = 8.0
    table.call_finished("p", first.call_id, 0.0, 1.0)
    clock.now = 11.0
    table.call_finished("p", second.call_id, 0.0, 1.0)
    assert program.last_completion == 11.0 and program.latency == 6.0
    assert program.last_activity == 11.0


def test_the_engine_a_call_finished_on_is_recorded() -> None:
    table = ProcessTable(clock=Clock())
    call, _ = table.call_arrived("p")
    table.call_finished("p", call.call_id, 0.0, 1.0, engine=3)
    other, _ = table.call_arrived("p")
    table.call_finished("p", other.call_id, 0.0, 1.0)  # no engine named
    assert table.get("p").engines == {3}


def test_an_ended_program_refuses_calls_by_name() -> None:
    table = ProcessTable(clock=Clock())
    table.call_arrived("p")
    table.end("p")
    with pytest.raises(ProgramEnded, match="program 'p' has ended"):
        table.call_arrived("p")
