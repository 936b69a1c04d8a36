"""The runner's record of programs a run's time limit cut off."""

from autellix.bench.runner import ProgramRecord, _cut_off
from autellix.workloads.spec import ProgramSpec


def test_programs_cut_off_get_an_error_record() -> None:
    specs = [ProgramSpec(f"p{i}", "chatbot", float(i), []) for i in range(3)]
    done = [ProgramRecord("p1", "chatbot", 1.0)]
    cut = _cut_off(specs, done)
    assert [(r.program_id, r.arrival) for r in cut] == [("p0", 0.0), ("p2", 2.0)]
    assert all(r.error == "cut off by the run's time limit" for r in cut)
    assert _cut_off(specs[1:2], done) == []
