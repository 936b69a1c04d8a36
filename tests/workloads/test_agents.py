"""The agents workload: the shapes issue 12's independent load describes."""

import pytest

from autellix.workloads import build_workload


def test_light_and_heavy_tailed_shapes() -> None:
    light = build_workload("agents", 200, 1.0, seed=3)
    assert {p.workload for p in light} == {"chat", "fan-out"}
    heavy = build_workload("agents", 200, 1.0, seed=3, searches=0.25)
    searches = [p for p in heavy if p.workload == "search"]
    assert 30 <= len(searches) <= 70
    for p in light + heavy:
        widths = [len(stage.calls) for stage in p.stages]
        if p.workload == "chat":
            assert 1 <= len(widths) <= 12 and set(widths) == {1}
        elif p.workload == "fan-out":
            assert 2 <= len(widths) <= 5 and all(2 <= w <= 5 for w in widths)
        else:
            assert 8 <= len(widths) <= 16 and all(4 <= w <= 6 for w in widths)
        assert all(8 <= c.max_tokens <= 64 for c in p.calls)
        for s, stage in enumerate(p.stages):  # refs point at earlier stages' calls
            for call in stage.calls:
                refs = [m["ref"] for m in call.messages if "ref" in m]
                assert all(r[0] < s and r[1] < widths[r[0]] for r in refs)
    work = {k: [p.decode_tokens for p in heavy if p.workload == k] for k in ("chat", "search")}
    mean = {k: sum(v) / len(v) for k, v in work.items()}
    assert mean["search"] > 5 * mean["chat"]  # the heavy tail


def test_bad_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="shares"):
        build_workload("agents", 2, 1.0, searches=1.5)
