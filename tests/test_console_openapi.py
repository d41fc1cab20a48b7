"""The console's OpenAPI document fuzzed with schemathesis against a live server, with a token of each role.

Every operation of ``/api/openapi.json`` gets generated requests (valid and invalid: schemathesis' positive
and negative modes, with a fixed seed) from an operator, a
reviewer and an admin token holding every scope; no answer may be a 5xx, and every answer must be one the
document declares, with the declared content type and a body matching its schema. The live-update stream
(``/api/events``, server-sent events that run for minutes) is left out: its contract is tested in
test_console_api.py. The example count is bounded so the test stays within a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from console_support import Env, Served, seed
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROLES = ("op", "rev", "adm")
EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Iterator[tuple[Env, str]]:
    env = seed(tmp_path_factory.mktemp("openapi"), media_dir)
    app, _ = env.make_app(live_poll_s=0.05)
    with Served(app) as server:
        yield env, server.url


def _operations(url: str, token: str) -> list[Any]:
    spec = httpx.get(f"{url}/api/openapi.json", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if op.path != "/api/events"]


@pytest.mark.parametrize("role", ROLES)
def test_no_operation_answers_5xx_or_off_its_schema(served: tuple[Env, str], role: str) -> None:
    env, url = served
    token = env.users.issue_token(role)
    headers = {"Authorization": f"Bearer {token}"}
    operations = _operations(url, token)
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "GET /api/me", "GET /api/cases", "GET /api/cases/{number}", "POST /api/cases/{number}/{action}",
        "POST /api/cases/{number}/feedback", "GET /api/cameras", "PUT /api/cameras/{camera_id}/zones"}
    calls = {"n": 0}
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                              operation.as_strategy(GenerationMode.NEGATIVE)))
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=url, headers=headers, timeout=15)
            calls["n"] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        fuzz()
    assert calls["n"] >= len(operations) * 2


def test_a_malformed_multipart_body_is_a_declared_400(served: tuple[Env, str]) -> None:
    """What the fuzzing found: a broken multipart body answered an undeclared 400 with a generic code."""
    env, url = served
    headers = {"Authorization": f"Bearer {env.users.issue_token('op')}"}
    r = httpx.post(f"{url}/api/cases/{env.cases['stray_dog']}/feedback", timeout=10, content=b"--xyz\r\n[]--xyz--\r\n",
                   headers={**headers, "Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    spec = httpx.get(f"{url}/api/openapi.json", headers=headers, timeout=10).json()
    assert "400" in spec["paths"]["/api/cases/{number}/feedback"]["post"]["responses"]
