"""Every route fuzzed from the server's own OpenAPI schema (schemathesis): valid and
invalid bodies, queries and path parameters never get a 5xx or a traceback, and every
4xx is an error in OpenAI's shape."""

from __future__ import annotations

import json
import zlib

import schemathesis
from hypothesis import HealthCheck, settings

from autellix.server.app import create_app
from autellix.server.frontend import Frontend, ServeConfig

MODEL = "tiny"
# the schema only: a frontend that is never started loads no model
SCHEMA = schemathesis.openapi.from_dict(create_app(Frontend(ServeConfig())).openapi())
ERROR_FIELDS = {"message", "type", "param", "code"}


def check(status: int, text: str, content_type: str, cut_short: bool = False) -> None:
    assert status < 500, f"{status}: {text[:500]}"
    assert "Traceback" not in text and "internal_error" not in text, text[:500]
    if status >= 400:
        error = json.loads(text)["error"]
        assert set(error) == ERROR_FIELDS, error
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
    elif content_type.startswith("text/event-stream") and not cut_short:
        # (schemathesis stops reading a stream after 20 events: only a whole one must end)
        assert text.rstrip().endswith("data: [DONE]"), text[-500:]


def crc(body: dict) -> int:
    return zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode())


@SCHEMA.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_route_answers_5xx_or_a_bare_error(case, module_server) -> None:
    body = case.body
    # half the calls name the served model, so that they reach the engine
    if isinstance(body, dict) and "model" in body and crc(body) % 2:
        body["model"] = MODEL
    response = case.call(base_url=module_server.url, timeout=60)
    content_type = response.headers.get("content-type") or [""]  # schemathesis: a list
    check(response.status_code, response.text, content_type[0], response.stream_cut_short)
