"""The SDK (autellix.client) as users meet it: errors in openai's types with the server's
message, calls in flight at the block's end, a failing end that does not hide the
block's own exception, and the checks made before anything is sent."""

from __future__ import annotations

import asyncio
import math
import threading

import openai
import pytest

import autellix
import autellix.client

MODEL = "tiny"
FIXED = {"ignore_eos": True}


def test_the_programs_own_requests_raise_openai_errors_with_the_servers_message(serve) -> None:
    server = serve(api_key="sk-one", max_programs=1)
    with pytest.raises(openai.AuthenticationError) as e:
        autellix.Program(server.base_url, api_key="sk-two").__enter__()
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    with autellix.Program(server.base_url, api_key="sk-one", max_retries=0):
        with pytest.raises(openai.RateLimitError, match="programs") as e:
            autellix.Program(server.base_url, api_key="sk-one", max_retries=0).__enter__()
        assert e.value.status_code == 429


def test_the_blocks_end_waits_for_calls_in_flight(serve) -> None:
    """A call still running when the block ends gets its answer (the program's client
    used to be closed under it), and the program ends after it."""
    server = serve()
    ask = {"model": MODEL, "prompt": "w1", "max_tokens": 24, "extra_body": FIXED}

    async def main() -> openai.types.Completion:
        async with autellix.AsyncProgram(server.base_url, program_id="a") as program:
            task = asyncio.create_task(program.client.completions.create(**ask))
            while not server.frontend.calls_in_flight:
                await asyncio.sleep(0.01)
        assert task.done()  # the block's end waited for it
        return await task

    assert asyncio.run(main()).usage.completion_tokens == 24
    answers: list = []
    with autellix.Program(server.base_url, program_id="s") as program:
        stream = program.client.completions.create(stream=True, **ask)
        reader = threading.Thread(target=lambda: answers.extend(stream), daemon=True)
        reader.start()
    assert len(answers) == 24 and not reader.is_alive()  # streamed to its end
    assert "a" not in server.frontend.table and "s" not in server.frontend.table


def test_a_failing_end_does_not_hide_the_blocks_exception(serve) -> None:
    server = serve(api_key="sk-one")
    keys = server.frontend.keys

    def revoke() -> None:  # the program's key is refused from now on: ending it is a 401
        keys.api_key = "sk-two"
        keys.reload()

    with (
        pytest.raises(RuntimeError, match="the agent's own error"),
        pytest.warns(UserWarning, match=r"program '.+' not ended: .*401"),
        autellix.Program(server.base_url, api_key="sk-one", max_retries=0),
    ):
        revoke()
        raise RuntimeError("the agent's own error")
    keys.api_key = "sk-one"
    keys.reload()
    # without an exception of its own, the block's end raises the failure
    with (
        pytest.raises(openai.AuthenticationError),
        autellix.Program(server.base_url, api_key="sk-one", max_retries=0),
    ):
        revoke()
    server.frontend.table.programs.clear()  # the two it could not end


def test_a_program_the_server_has_ended_ends_quietly(serve) -> None:
    server = serve()
    with autellix.Program(server.base_url, program_id="p") as program:
        server.frontend.end_program("p")  # as the reaper does with an idle program
        assert program.id == "p"


def test_a_program_is_not_used_after_its_block(serve) -> None:
    server = serve()
    with autellix.Program(server.base_url) as program:
        pass
    for use in (lambda: program.client, program.info, program.thread):
        with pytest.raises(RuntimeError, match=f"program '{program.id}' has ended"):
            use()


@pytest.mark.parametrize("program_id", ["", "x" * 257, "agent-\u00e9", "a\nb"])
def test_an_id_no_header_can_carry_is_refused_before_anything_is_sent(program_id: str) -> None:
    with pytest.raises(ValueError, match="program_id: 1 to 256 printable ASCII characters"):
        autellix.Program("http://127.0.0.1:9/v1", program_id=program_id)


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan])
def test_an_expected_return_the_server_would_refuse_is_refused_here(seconds: float) -> None:
    with pytest.raises(ValueError, match="a finite number of seconds >= 0"):
        autellix.client.expect_return_headers(seconds)


def test_the_key_comes_from_openai_api_key_when_not_given(
    serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(api_key="sk-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    with autellix.Program(server.base_url) as program:
        program.client.completions.create(model=MODEL, prompt="w1", max_tokens=2)
    monkeypatch.delenv("OPENAI_API_KEY")
    assert autellix.Program(server.base_url).api_key == "EMPTY"  # an open server's


def test_a_program_is_entered_once(serve) -> None:
    server = serve()
    program = autellix.Program(server.base_url)
    with program:
        pass
    with pytest.raises(RuntimeError, match="was entered once already: make a new one"):
        program.__enter__()


def test_an_unread_stream_at_the_blocks_end_is_named(
    serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block's end waits for it (as documented); after a while it says so, instead of
    looking like a server that hangs."""
    monkeypatch.setattr(autellix.client, "WAIT_WARNING", 0.2)
    server = serve()
    ask = {"model": MODEL, "prompt": "w1", "max_tokens": 4, "extra_body": FIXED}
    waits = r"waits for 1 call\(s\) in flight; a stream waits"
    with pytest.warns(UserWarning, match=waits), autellix.Program(server.base_url) as program:
        stream = program.client.completions.create(stream=True, **ask)
        threading.Timer(1.0, stream.close).start()  # the user's code closes it later
