"""The HTTP layer's pieces without a server: the program view and the per-call helpers."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from autellix.programs import ProcessTable
from autellix.server.app import check_model, program_of, sampling_params
from autellix.server.errors import APIError
from autellix.server.protocol import CompletionRequest, ProgramView
from autellix.server.tenants import OPEN, Tenant


def test_program_view_shows_the_table_and_round_trips() -> None:
    ticks = itertools.count(1.0)
    table = ProcessTable(clock=lambda: float(next(ticks)))
    table.start("p", kind="chat")  # t=1
    first, _ = table.call_arrived("p", "main")  # t=2
    second, _ = table.call_arrived("p", "side")  # t=3
    table.call_progress("p", second.call_id, waiting=0.5, service=0.25, engine=1)
    table.call_finished("p", first.call_id, waiting=1.0, service=2.0, engine=0)  # t=4

    view = ProgramView.of(table.get("p"))
    assert view.model_dump(mode="json") == {
        "id": "p",
        "object": "program",
        "kind": "chat",
        "started": 1.0,
        "ended": False,
        "service": 2.0,
        "critical_path": 2.0,
        "waiting": 1.0,
        "completed_calls": 1,
        "engines": [0, 1],
        "pinned_engine": None,
        "first_arrival": 2.0,
        "last_arrival": 3.0,
        "last_completion": 4.0,
        "calls": [
            {
                "id": second.call_id,
                "thread_id": "side",
                "arrival": 3.0,
                "engine": 1,
                "waiting": 0.5,
                "service": 0.25,
            }
        ],
    }
    # what a client reads back is the same view
    assert ProgramView.model_validate_json(view.model_dump_json()) == view


def fake_frontend() -> SimpleNamespace:
    return SimpleNamespace(
        model_name="tiny", default_max_tokens=lambda num_prompt: 100 - num_prompt, table=None
    )


def test_sampling_params_of_each_of_n_calls() -> None:
    frontend = fake_frontend()
    req = CompletionRequest(model="tiny", prompt="w1", seed=7, stop="w9", n=2)
    second = sampling_params(frontend, req, None, num_prompt=30, index=1)
    assert (second.seed, second.max_tokens, second.stop) == (8, 70, ("w9",))
    assert sampling_params(frontend, req, 5, num_prompt=30, index=0).max_tokens == 5
    # each choice has a seed of its own, the largest seed's next choice the smallest
    last = req.model_copy(update={"seed": 2**63 - 1})
    seeds = [sampling_params(frontend, last, 5, 30, i).seed for i in range(3)]
    assert seeds == [2**63 - 1, 0, 1]
    # a negative seed (OpenAI and vLLM take any int64) is a seed of the engine's range
    negative = CompletionRequest(model="tiny", prompt="w1", seed=-1, n=2, priority=-1)
    assert [sampling_params(frontend, negative, 5, 30, i).seed for i in range(2)] == [
        2**63 - 1,
        0,
    ]


def test_a_model_not_served_is_a_404_naming_the_field() -> None:
    frontend = fake_frontend()
    check_model(frontend, CompletionRequest(model="tiny", prompt="w1"))
    with pytest.raises(APIError) as wrong:
        check_model(frontend, CompletionRequest(model="big", prompt="w1"))
    assert (wrong.value.status, wrong.value.code, wrong.value.param) == (
        404,
        "model_not_found",
        "model",
    )


def request_with(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw})


def test_program_of_a_call() -> None:
    frontend = fake_frontend()
    frontend.table = ProcessTable()
    body = CompletionRequest(model="tiny", prompt="w1", program_id="body", thread_id="t")
    headers = {"X-Autellix-Program": "header", "X-Autellix-Thread": "h"}
    assert program_of(frontend, request_with(headers), body, OPEN) == ("header", "h", False)
    assert program_of(frontend, request_with({}), body, OPEN) == ("body", "t", False)
    # another tenant's calls name programs of its own
    alice = Tenant("alice")
    assert program_of(frontend, request_with({}), body, alice) == ("alice\x1fbody", "t", False)
    # no program: a program of one call, under a fresh id (started with its calls)
    anonymous, thread, is_anonymous = program_of(
        frontend,
        request_with({}),
        body.model_copy(update={"program_id": None, "thread_id": None}),
        OPEN,
    )
    assert (thread, is_anonymous) == (None, True) and anonymous.startswith("prog-")
    # a header's ids are held to the body's bounds
    for header in ("X-Autellix-Program", "X-Autellix-Thread"):
        assert program_of(frontend, request_with({header: "x" * 256}), body, OPEN)
        with pytest.raises(APIError) as long:
            program_of(frontend, request_with({header: "x" * 257}), body, OPEN)
        assert long.value.status == 400
    with pytest.raises(APIError, match="printable ASCII"):
        program_of(frontend, request_with({"X-Autellix-Program": "a\tb"}), body, OPEN)
    # an ended program with calls in flight takes no new ones
    frontend.table.call_arrived("busy")
    frontend.table.end("busy")
    with pytest.raises(APIError) as ended:
        program_of(frontend, request_with({"X-Autellix-Program": "busy"}), body, OPEN)
    assert (ended.value.status, ended.value.code) == (400, "program_ended")
