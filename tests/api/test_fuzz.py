"""No input makes ecolink answer a 5xx: random JSON bodies, valid bodies with one field
replaced by random JSON, random query strings and headers, against a real server.

The account has no credit, so a body that passes validation stops at 402 and no
random startup command is ever run."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LAUNCH: dict[str, Any] = {
    "name": "fz",
    "region": "us-east",
    "gpu_type": "L40S",
    "gpu_count": 1,
    "replicas": 2,
    "image": "python:3.12",
    "estimated_duration_hours": 1,
    "startup_command": "sleep infinity",
}
CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    402: "insufficient_balance",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "invalid_request",
    422: "invalid_request",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def broke(shared_ecolink_server: Any) -> Any:
    key = shared_ecolink_server.new_account("fuzz-" + uuid.uuid4().hex[:6], "0")
    client = shared_ecolink_server.client(key)
    yield client
    client.close()


def check(r: httpx.Response) -> None:
    assert r.status_code < 500, (
        r.request.method,
        r.request.url,
        r.request.content[:300],
        r.text[:300],
    )
    if r.status_code >= 400:
        err = r.json()["error"]
        assert err["code"] == CODES[r.status_code], err
        assert isinstance(err["message"], str) and err["message"]


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=json_values)
def test_random_bodies(broke: httpx.Client, body: Any) -> None:
    for method, path in [
        ("POST", "/gpu-clusters"),
        ("POST", "/gpu-clusters/fz/scale"),
        ("POST", "/gpu-clusters/fz/extend"),
        ("PUT", "/gpu-clusters/fz/endpoint"),
    ]:
        check(
            broke.request(
                method,
                path,
                content=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
            )
        )


@FUZZ
@given(
    field=st.sampled_from(sorted(LAUNCH) + ["expose", "shared_filesystems", "extra"]),
    value=json_values,
)
def test_one_field_replaced(broke: httpx.Client, field: str, value: Any) -> None:
    r = broke.post("/gpu-clusters", json={**LAUNCH, field: value})
    check(r)
    assert r.status_code in (400, 402, 409, 422)
    if r.status_code == 422:
        assert r.json()["error"]["field"].split(".")[0] == field


@FUZZ
@given(raw=st.binary(max_size=200))
def test_random_bytes(broke: httpx.Client, raw: bytes) -> None:
    check(broke.post("/gpu-clusters", content=raw))


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["limit", "before", "cluster_id", "format", "status", "since", "x"]),
        st.text(max_size=30),
        max_size=4,
    ),
    path=st.sampled_from(["/account/ledger", "/gpu-clusters", "/gpu-clusters/fz/metrics"]),
    key=st.text(max_size=20),
)
def test_random_queries_and_keys(
    broke: httpx.Client, params: dict[str, str], path: str, key: str
) -> None:
    check(broke.get(path, params=params))
    try:
        r = broke.post("/gpu-clusters/fz/stop", headers={"Idempotency-Key": key})
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # not a header value the client can send at all
    check(r)
