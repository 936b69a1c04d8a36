"""The ShareGPT reader keeps complete records only (the wheel's file is truncated)."""

from __future__ import annotations

import json

from autellix.workloads.sharegpt import read_records, turns


def conversation(i: int) -> dict:
    return {
        "id": f"c{i}",
        "conversations": [
            {"from": "human", "value": f'question {i}, with "quotes", {{braces}} and ]'},
            {"from": "gpt", "value": f"answer {i}"},
        ],
    }


def test_a_truncated_array_keeps_exactly_the_complete_records() -> None:
    records = [conversation(i) for i in range(3)]
    parts = [json.dumps(r, indent=2) for r in records]
    text = "[\n" + ",\n".join(parts) + "\n]"
    ends = []  # where each record's text ends
    pos = 2
    for part in parts:
        pos += len(part)
        ends.append(pos)
        pos += 2
    for cut in range(len(text) + 1):
        complete = sum(end <= cut for end in ends)
        assert read_records(text[:cut]) == records[:complete], cut


def test_degenerate_inputs() -> None:
    assert read_records("") == []
    assert read_records("[") == []
    assert read_records("[]") == []


def test_turns_pairs_human_and_gpt_from_the_first_human_message() -> None:
    record = {
        "conversations": [
            {"from": "gpt", "value": "a leftover answer"},
            {"from": "human", "value": "q1"},
            {"from": "gpt", "value": "a1"},
            {"from": "human", "value": "q2"},
            {"from": "gpt", "value": "a2"},
            {"from": "human", "value": "q3 without an answer"},
        ]
    }
    assert turns(record) == [("q1", "a1"), ("q2", "a2")]
    assert turns({"conversations": []}) == []
