"""The one mapping of runtime failures to api.md's error form: an unknown replica is
404, a runtime that cannot be reached 503, one that refused 409 or 422 with the
runtime's own words (never 503 "nothing could be completed")."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from ecolink.api.errors import install, runtime_failure_answer
from ecolink.runtime.base import (
    ReplicaNotFound,
    RuntimeFailure,
    RuntimeRefused,
    RuntimeUnavailable,
)

FORBIDDEN = 'deployments.apps "eco-c1" is forbidden: exceeded quota: gpus'


@pytest.mark.parametrize(
    ("api_status", "status", "code"),
    [
        (403, 409, "conflict"),
        (409, 409, "conflict"),
        (404, 409, "conflict"),
        (400, 422, "invalid_request"),
        (422, 422, "invalid_request"),
    ],
)
def test_a_refusal_keeps_the_api_servers_words(api_status: int, status: int, code: str) -> None:
    exc = RuntimeRefused.from_api_status(api_status, FORBIDDEN)
    got_status, body = runtime_failure_answer(exc)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"] == f"the API server refused: {api_status} {FORBIDDEN}"


def test_unavailable_unknown_replica_and_the_unexpected() -> None:
    assert runtime_failure_answer(RuntimeUnavailable("connection refused")) == (
        503,
        {
            "error": {
                "code": "runtime_unavailable",
                "message": "the runtime cannot be reached: connection refused",
            }
        },
    )
    assert runtime_failure_answer(ReplicaNotFound("web-7")) == (
        404,
        {"error": {"code": "not_found", "message": "no replica web-7", "field": "replica"}},
    )
    status, body = runtime_failure_answer(RuntimeFailure("the API server chose no protocol"))
    assert status == 503 and body["error"]["code"] == "runtime_unavailable"
    assert "chose no protocol" not in body["error"]["message"]


async def test_the_app_answers_a_refusal_409_or_422_and_unavailable_503() -> None:
    app = FastAPI()
    install(app)
    raised: dict[str, Exception] = {
        "forbidden": RuntimeRefused.from_api_status(403, FORBIDDEN),
        "invalid": RuntimeRefused.from_api_status(422, "spec.replicas: Invalid value: -1"),
        "down": RuntimeUnavailable("connection refused"),
    }

    @app.post("/raise/{kind}")
    async def fail(kind: str) -> None:
        raise raised[kind]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        forbidden = await client.post("/raise/forbidden")
        invalid = await client.post("/raise/invalid")
        down = await client.post("/raise/down")
    assert forbidden.status_code == 409
    assert forbidden.json() == {
        "error": {"code": "conflict", "message": f"the API server refused: 403 {FORBIDDEN}"}
    }
    assert invalid.status_code == 422
    assert invalid.json()["error"] == {
        "code": "invalid_request",
        "message": "the API server refused: 422 spec.replicas: Invalid value: -1",
    }
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "runtime_unavailable"
