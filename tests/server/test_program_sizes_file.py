"""`--program-sizes FILE`: the sizes the Gittins policy learned survive a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from autellix import cli

MODEL = "tiny"  # the served model name of the `serve` fixture


def test_a_restarted_server_ranks_with_the_sizes_it_learned(serve, tmp_path: Path) -> None:
    path = tmp_path / "sizes.json"
    first = serve(program_sizes=str(path))
    for i in range(8):  # the fewest sizes a kind is ranked by
        headers = {"X-Autellix-Program": f"p{i}", "X-Autellix-Kind": "react"}
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 2}
        reply = httpx.post(f"{first.base_url}/completions", json=body, headers=headers)
        assert reply.status_code == 200
        assert httpx.delete(f"{first.base_url}/programs/p{i}").status_code == 200
    learned = first.frontend.table.sizes.sizes("react")
    assert len(learned) == 8
    # a program still live at shutdown, not idle long enough to be reported: it is
    headers = {"X-Autellix-Program": "live", "X-Autellix-Kind": "react"}
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 2}
    assert httpx.post(f"{first.base_url}/completions", json=body, headers=headers).is_success
    first.wait_idle()
    first.stop()
    assert path.is_file()

    second = serve(program_sizes=str(path))
    assert len(second.frontend.table.sizes.sizes("react")) == 9
    assert set(learned) <= set(second.frontend.table.sizes.sizes("react"))


def test_a_file_that_holds_no_sizes_is_one_line(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "sizes.json"
    path.write_text('{"version": 2}')
    assert cli.main(["serve", "--program-sizes", str(path), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{path} holds no program sizes: version 2, not 1" in err
    assert err.count("\n") == 1
