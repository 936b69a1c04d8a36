"""What the process table teaches the size model (for the Gittins policy): which
programs are reported, when, under which class, and which sizes are kept."""

from __future__ import annotations

from autellix.programs import ProcessTable, SizeModel, kind_of


def test_a_re_reported_program_counts_as_recent() -> None:
    model = SizeModel(keep=2, min_samples=1)
    model.observe("k", "a", 1.0)
    model.observe("k", "b", 2.0)
    model.observe("k", "a", 3.0)  # a again: now the most recent
    model.observe("k", "c", 4.0)  # over `keep`: b, the least recent, goes
    assert model.sizes("k") == (3.0, 4.0)
    assert model.everyone() == (3.0, 4.0)


def test_only_the_last_reported_classes_are_kept() -> None:
    """Clients name classes: a client with a new system prompt per program must not grow
    the model without bound."""
    model = SizeModel(keep=4, min_samples=1, max_kinds=2)
    model.observe("a", "p1", 1.0)
    model.observe("b", "p2", 2.0)
    model.observe("a", "p3", 3.0)  # a again: now the most recent class
    model.observe("c", "p4", 4.0)  # over max_kinds: b, the least recent, goes
    assert model.sizes("a") == (1.0, 3.0) and model.sizes("c") == (4.0,)
    assert model.sizes("b") == ()  # forgotten
    assert model.everyone() == (1.0, 2.0, 3.0, 4.0)
    for i in range(100):
        model.observe(f"k{i}", f"q{i}", 1.0)
    assert len(model._sizes) == 3


def test_one_class_per_system_prompt_start() -> None:
    start = "x" * 255  # 255 characters, then the 256th and what follows
    a = kind_of([{"role": "system", "content": start + "A" + "1: the task"}])
    b = kind_of([{"role": "system", "content": start + "A" + "2: the task"}])
    assert a == b  # only the first 256 characters name the class
    c = kind_of([{"role": "system", "content": start + "B" + "1: the task"}])
    assert a != c and a is not None
    assert kind_of([]) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def table_with(clock: Clock, keep: int = 256) -> ProcessTable:
    table = ProcessTable(ttl=1000.0, clock=clock, idle_after=5.0)
    table.sizes = SizeModel(keep=keep, min_samples=1)
    return table


def run_call(table: ProcessTable, program_id: str, service: float, kind: str = "k") -> None:
    call, _ = table.call_arrived(program_id, kind=kind)
    table.call_finished(program_id, call.call_id, 0.0, service)


def test_every_program_of_a_class_adds_its_own_size() -> None:
    clock = Clock()
    table = table_with(clock)
    run_call(table, "p", 2.0)
    run_call(table, "q", 3.0)
    table.end("p")
    table.end("q")
    assert table.sizes.sizes("k") == (2.0, 3.0)


def test_a_program_with_no_finished_call_teaches_nothing() -> None:
    clock = Clock()
    table = table_with(clock)
    table.start("empty", kind="k")
    clock.now = 100.0
    table.reap()  # idle long enough to be reported, but it has no size yet
    table.end("empty")
    assert table.sizes.sizes("k") == ()


def test_idleness_is_measured_from_the_last_activity() -> None:
    clock = Clock()
    table = table_with(clock)
    clock.now = 100.0
    run_call(table, "p", 2.0)
    clock.now = 104.0  # idle 4 s of 5
    table.reap()
    assert table.sizes.sizes("k") == ()
    clock.now = 105.5
    table.reap()
    assert table.sizes.sizes("k") == (2.0,)


def test_an_idle_program_is_reported_once_until_its_size_changes() -> None:
    clock = Clock()
    table = table_with(clock, keep=2)
    run_call(table, "old", 1.0)
    clock.now = 10.0
    table.reap()  # old is reported
    run_call(table, "mid", 2.0)
    table.end("mid")
    clock.now = 20.0
    table.reap()  # old is still idle, with the same size: not reported again
    run_call(table, "new", 3.0)
    table.end("new")  # over `keep`: the least recent report (old's) goes
    assert table.sizes.sizes("k") == (2.0, 3.0)
    assert "old" in table


def test_sizes_saved_and_loaded_are_the_same_model(tmp_path) -> None:
    """Sizes, classes and their recency: the loaded model forgets what the saved one would."""
    model = SizeModel(keep=3, min_samples=1, max_kinds=2)
    for kind, program, size in [("a", "p1", 1.0), ("b", "p2", 2.0), (None, "p3", 3.0)]:
        model.observe(kind, program, size)
    model.observe("a", "p4", 4.0)  # a is now the more recent class
    path = tmp_path / "sizes.json"
    model.save(path)
    loaded = SizeModel(keep=3, min_samples=1, max_kinds=2)
    loaded.load(path)
    for m in (model, loaded):
        assert m.sizes("a") == (1.0, 4.0) and m.sizes("b") == (2.0,)
        assert m.everyone() == (2.0, 3.0, 4.0)
        m.observe("c", "p5", 5.0)  # over max_kinds: b, the least recent class, goes
    assert loaded._sizes == model._sizes and list(loaded._sizes) == list(model._sizes)
    assert loaded.sizes("b") == ()


def test_a_smaller_model_loads_only_what_it_keeps(tmp_path) -> None:
    """A server restarted with a smaller `keep` or `max_kinds` forgets at once what it
    would have forgotten had it learned the sizes itself."""
    model = SizeModel(keep=4, min_samples=1, max_kinds=3)
    for i, kind in enumerate("aabbcca"):
        model.observe(kind, f"p{i}", float(i))
    path = tmp_path / "sizes.json"
    model.save(path)
    small = SizeModel(keep=1, min_samples=1, max_kinds=2)
    small.load(path)
    learned = SizeModel(keep=1, min_samples=1, max_kinds=2)
    for i, kind in enumerate("aabbcca"):
        learned.observe(kind, f"p{i}", float(i))
    assert small._sizes == learned._sizes and list(small._sizes) == list(learned._sizes)
    assert small.sizes("b") == () and small.sizes("a") == (6.0,) and small.everyone() == (6.0,)
