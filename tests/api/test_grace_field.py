"""The launch field `termination_grace_seconds`: a bad value is a 422 naming the
field in the error form of api.md, and nothing is launched or held."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

LAUNCH: dict[str, Any] = {
    "name": "grace",
    "region": "us-east",
    "gpu_type": "H100-80GB",
    "gpu_count": 1,
    "replicas": 2,
    "image": "python:3.12",
    "estimated_duration_hours": 1,
    "startup_command": "sleep infinity",
}


@pytest.mark.parametrize("bad", [-1, 3601, 1.5, "30", True, None, [5]])
def test_a_bad_grace_is_refused_naming_the_field(fresh_api: httpx.Client, bad: Any) -> None:
    body = {**LAUNCH, "termination_grace_seconds": bad}
    r = fresh_api.post("/gpu-clusters", json=body)
    if bad is None:  # null is the same as leaving it out
        assert r.status_code == 201, r.text
        fresh_api.delete(f"/gpu-clusters/{r.json()['id']}")
        return
    assert r.status_code == 422, r.text
    e = r.json()["error"]
    assert e["code"] == "invalid_request" and e["field"] == "termination_grace_seconds", e
    assert e["message"]
    assert fresh_api.get("/gpu-clusters").json()["clusters"] == []
    assert fresh_api.get("/account").json()["held"] == "0.000000"


def test_the_grace_is_in_the_answer_and_the_openapi(fresh_api: httpx.Client) -> None:
    r = fresh_api.post("/gpu-clusters", json={**LAUNCH, "termination_grace_seconds": 0})
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["termination_grace_seconds"] == 0
    listed = fresh_api.get("/gpu-clusters").json()["clusters"]
    assert [x["termination_grace_seconds"] for x in listed] == [0]
    fresh_api.delete(f"/gpu-clusters/{c['id']}")
    schemas = fresh_api.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["LaunchIn"]["properties"]["termination_grace_seconds"]
    bounds = next(s for s in field["anyOf"] if s.get("type") == "integer")
    assert (bounds["minimum"], bounds["maximum"]) == (0, 3600)
    assert "termination_grace_seconds" in schemas["ClusterOut"]["required"]
