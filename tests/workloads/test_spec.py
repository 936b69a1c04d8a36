"""Program specs: helpers, ref substitution and the JSON round trip (no tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

from autellix.workloads.spec import CallSpec, ProgramSpec, Stage, load, resolve, save


def two_stage_program() -> ProgramSpec:
    first = CallSpec([{"role": "user", "content": "hi"}], max_tokens=5, prompt_tokens=10)
    parallel = [
        CallSpec(
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "ref": [0, 0]},
                {"role": "user", "content": f"again {i}"},
            ],
            max_tokens=3,
            prompt_tokens=20,
            tool_delay=0.5,
        )
        for i in range(2)
    ]
    return ProgramSpec("p-0", "react", 1.5, [Stage([first]), Stage(parallel)])


def test_helpers() -> None:
    spec = two_stage_program()
    assert spec.num_calls == 3
    assert spec.decode_tokens == 5 + 3 + 3
    assert spec.prefill_tokens == 10 + 20 + 20


def test_resolve_substitutes_refs_and_leaves_the_rest() -> None:
    spec = two_stage_program()
    call = spec.stages[1].calls[0]
    resolved = resolve(call.messages, [["hello there"], ["x", "y"]])
    assert resolved == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "again 0"},
    ]
    assert call.messages[1] == {"role": "assistant", "ref": [0, 0]}  # not modified


def test_json_round_trip(tmp_path: Path) -> None:
    spec = two_stage_program()
    data = json.loads(json.dumps(spec.to_json()))
    assert ProgramSpec.from_json(data) == spec
    save([spec, spec], tmp_path / "specs.json")
    assert load(tmp_path / "specs.json") == [spec, spec]
