import pytest

from autellix.programs import ProcessTable, ProgramEnded, UnknownProgram


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> ProcessTable:
    return ProcessTable(ttl=10.0, clock=clock)


def test_start_get_end(table: ProcessTable) -> None:
    program = table.start("p1")
    assert table.get("p1") is program and "p1" in table
    with pytest.raises(ValueError, match="already exists"):
        table.start("p1")
    table.end("p1")
    assert "p1" not in table
    with pytest.raises(UnknownProgram, match="unknown program: 'p1'"):
        table.get("p1")
    with pytest.raises(UnknownProgram):
        table.end("p1")


def test_start_without_id_makes_unique_ids(table: ProcessTable) -> None:
    ids = {table.start().program_id for _ in range(100)}
    assert len(ids) == 100


def test_plas_sums_and_atlas_takes_the_critical_path(table: ProcessTable) -> None:
    # Two threads start at critical path 0; a third call starts after the first ends.
    a, snap_a = table.call_arrived("p", thread_id="t0")
    b, _ = table.call_arrived("p", thread_id="t1")
    assert snap_a.service == snap_a.critical_path == 0.0
    table.call_finished("p", a.call_id, waiting=1.0, service=3.0)
    c, snap_c = table.call_arrived("p", thread_id="t0")
    assert (snap_c.service, snap_c.critical_path, snap_c.waiting) == (3.0, 3.0, 1.0)
    table.call_finished("p", b.call_id, waiting=0.5, service=2.0)  # parallel branch: max
    program = table.get("p")
    assert program.service == 5.0 and program.critical_path == 3.0
    table.call_finished("p", c.call_id, waiting=0.0, service=4.0)  # sequential: 3 + 4
    assert program.service == 9.0 and program.critical_path == 7.0
    assert program.waiting == 1.5 and program.completed_calls == 3


def test_single_thread_atlas_equals_plas(table: ProcessTable) -> None:
    for service in (1.0, 2.5, 0.25, 4.0):
        call, _ = table.call_arrived("p")
        table.call_finished("p", call.call_id, waiting=0.0, service=service)
    program = table.get("p")
    assert program.critical_path == program.service == 7.75


def test_unknown_program_is_started_on_first_call(table: ProcessTable, clock: Clock) -> None:
    clock.now = 5.0
    call, _ = table.call_arrived("fresh")
    program = table.get("fresh")
    assert program.started == 5.0 and program.last_arrival == 5.0
    assert list(program.calls) == [call.call_id]


def test_call_without_program_is_a_program_of_one_call(table: ProcessTable) -> None:
    call, _ = table.call_arrived(None)
    assert call.program_id in table
    table.call_finished(call.program_id, call.call_id, waiting=0.0, service=1.0)
    assert call.program_id not in table


def test_ending_with_calls_in_flight_waits_for_them(table: ProcessTable) -> None:
    call, _ = table.call_arrived("p")
    program = table.end("p")
    assert program.ended and "p" in table
    with pytest.raises(ProgramEnded):
        table.call_arrived("p")
    table.call_finished("p", call.call_id, waiting=0.0, service=2.0)
    assert "p" not in table and program.service == 2.0
    # the id is free again: a new program
    table.call_arrived("p")
    assert table.get("p") is not program


def test_progress_reports_and_engines(table: ProcessTable) -> None:
    call, _ = table.call_arrived("p")
    table.call_progress("p", call.call_id, waiting=0.5, service=1.5, engine=2)
    program = table.get("p")
    assert program.live_service() == 1.5 and program.live_waiting() == 0.5
    assert program.engines == {2} and call.engine == 2
    table.call_finished("p", call.call_id, waiting=0.75, service=2.0, engine=2)
    assert program.live_service() == program.service == 2.0


def test_reap_idle_programs_only(table: ProcessTable, clock: Clock) -> None:
    table.start("idle")
    busy, _ = table.call_arrived("busy")
    clock.now = 5.0
    table.start("young")
    clock.now = 10.5
    assert [p.program_id for p in table.reap()] == ["idle"]
    assert table.reaped == 1
    clock.now = 100.0
    assert [p.program_id for p in table.reap()] == ["young"]  # busy has a call in flight
    assert table.reaped == 2 and "busy" in table
    table.call_finished("busy", busy.call_id, waiting=0.0, service=1.0)
    clock.now = 111.0
    assert [p.program_id for p in table.reap()] == ["busy"] and table.reaped == 3


def test_a_tenants_programs_are_namespaced(table: ProcessTable, clock: Clock) -> None:
    from autellix.programs import program_key, split_key

    assert program_key("default", "p") == "p" and split_key("p") == ("default", "p")
    assert split_key(program_key("alice", "p")) == ("alice", "p") != split_key("p")
    mine = table.start("p", tenant="alice")
    theirs = table.start("p")  # the default tenant's own "p"
    assert (mine.tenant, mine.name, theirs.tenant, theirs.name) == ("alice", "p", "default", "p")
    assert mine.program_id != theirs.program_id
    assert table.start(tenant="alice").name.startswith("prog-")
    assert (table.count("alice"), table.count("default"), table.count("bob")) == (2, 1, 0)
    call, _ = table.call_arrived(program_key("bob", "q"))  # a call starts it, as bob's
    assert table.get(program_key("bob", "q")).tenant == "bob" and table.count("bob") == 1
    table.call_finished(program_key("bob", "q"), call.call_id, 0.0, 1.0)
    table.end(mine.program_id)
    assert table.count("alice") == 1
    clock.now = 100.0
    assert len(table.reap()) == 3
    assert table.tenants == {} and table.reaped_by == {"alice": 1, "default": 1, "bob": 1}


def test_pages_of_a_tenants_programs(table: ProcessTable) -> None:
    for name in ("c", "a", "d", "b"):
        table.start(name, tenant="alice")
    table.start("zz", tenant="bob")

    def names(limit: int, after: str | None = None) -> tuple[list[str], bool]:
        page, more = table.page("alice", limit, after)
        return [p.name for p in page], more

    assert names(2) == (["a", "b"], True)
    assert names(2, "b") == (["c", "d"], False)
    assert names(10, "bb") == (["c", "d"], False)  # after an id that is not there
    assert names(4) == (["a", "b", "c", "d"], False)
    assert table.page("carol", 5) == ([], False)


def finish_at(table: ProcessTable, clock: Clock, program_id: str, at: float) -> None:
    """The program's one call in flight finishes at `at`."""
    clock.now = at
    (call_id,) = table.get(program_id).calls
    table.call_finished(program_id, call_id, 0.0, 0.1)


def test_a_programs_gaps_between_calls_reach_its_next_calls_snapshot(
    table: ProcessTable, clock: Clock
) -> None:
    _, first = table.call_arrived("agent", kind="react")
    assert first.return_gaps == () and first.kind == "react"
    finish_at(table, clock, "agent", 1.0)
    clock.now = 1.5
    _, second = table.call_arrived("agent")
    assert second.return_gaps == (0.5,)
    finish_at(table, clock, "agent", 2.0)
    clock.now = 2.25
    _, third = table.call_arrived("agent", expect_return=0.7)
    assert third.return_gaps == (0.5, 0.25) and third.expect_return == 0.7


def test_a_parallel_stages_second_call_is_no_gap(table: ProcessTable, clock: Clock) -> None:
    table.call_arrived("tree", "a")
    table.call_arrived("tree", "b")  # while "a" runs
    assert tuple(table.get("tree").gaps) == ()


def test_a_program_without_gaps_gets_its_classs(table: ProcessTable, clock: Clock) -> None:
    table.call_arrived("old", kind="react")
    finish_at(table, clock, "old", 1.0)
    clock.now = 3.0
    table.call_arrived("old")
    _, fresh = table.call_arrived("new", kind="react")
    assert fresh.return_gaps == (2.0,)
    _, other = table.call_arrived("chat", kind="chat")
    assert other.return_gaps == (2.0,)  # no gaps of its class yet: everyone's


def test_a_program_of_one_call_expects_no_return(table: ProcessTable, clock: Clock) -> None:
    table.call_arrived("old")
    finish_at(table, clock, "old", 1.0)
    clock.now = 2.0
    table.call_arrived("old")
    _, snapshot = table.call_arrived(None)
    assert snapshot.return_gaps == ()
