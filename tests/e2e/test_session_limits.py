"""Kept sessions are bounded per cluster (live ones refused with 409 beyond the cap,
ended ones beyond the newest few forgotten), and /openapi.json describes the session
and logs routes exactly as they check their input."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ecolink.sessions import KEEP_ENDED_SESSIONS, MAX_LIVE_SESSIONS
from support.e2e_helpers import all_ready, launch, wait_for

pytestmark = pytest.mark.timeout(120)


def _sessions(api: httpx.Client, cid: str) -> list[dict[str, Any]]:
    r = api.get(f"/gpu-clusters/{cid}/sessions")
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["sessions"]
    return out


def test_live_sessions_are_capped_per_cluster(fresh_api):
    c = launch(fresh_api, "capped", replicas=2, command="sleep infinity")
    other = launch(fresh_api, "uncapped", replicas=2, command="sleep infinity")
    cid = wait_for(fresh_api, c["id"], all_ready(2))["id"]
    wait_for(fresh_api, other["id"], all_ready(2))
    ids = []
    for i in range(MAX_LIVE_SESSIONS):
        r = fresh_api.post(
            f"/gpu-clusters/{cid}/replicas/capped-{i % 2}/sessions",
            json={"command": "sleep 3600", "tty": False},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = fresh_api.post(
        f"/gpu-clusters/{cid}/replicas/capped-0/sessions", json={"command": "sleep 3600"}
    )
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "conflict"
    assert f"{MAX_LIVE_SESSIONS} live sessions" in err["message"]
    # At the cap, an unknown replica is still a 404 (checked first).
    r = fresh_api.post(f"/gpu-clusters/{cid}/replicas/capped-9/sessions", json={})
    assert r.status_code == 404, r.text
    # The cap is per cluster: the other cluster is not affected.
    r = fresh_api.post(
        f"/gpu-clusters/{other['id']}/replicas/uncapped-0/sessions", json={"command": "sleep 3600"}
    )
    assert r.status_code == 201, r.text
    # Ending one makes room for one more.
    assert fresh_api.delete(f"/gpu-clusters/{cid}/sessions/{ids[0]}").status_code == 200
    r = fresh_api.post(
        f"/gpu-clusters/{cid}/replicas/capped-1/sessions", json={"command": ["sleep", "3600"]}
    )
    assert r.status_code == 201, r.text
    live = [s for s in _sessions(fresh_api, cid) if not s["exited"]]
    assert len(live) == MAX_LIVE_SESSIONS


def test_old_ended_sessions_are_forgotten(fresh_api):
    c = launch(fresh_api, "ender", replicas=2, command="sleep infinity")
    cid = wait_for(fresh_api, c["id"], all_ready(2))["id"]
    total = KEEP_ENDED_SESSIONS + 6
    ids = []
    for _ in range(total):
        r = fresh_api.post(
            f"/gpu-clusters/{cid}/replicas/ender-0/sessions",
            json={"command": "exit 0", "tty": False},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        time.sleep(0.002)  # distinct start times: "newest" is well defined
    deadline = time.monotonic() + 20
    while True:
        listed = _sessions(fresh_api, cid)
        if all(s["exited"] for s in listed) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(s["exited"] and s["ended_reason"] == "exited" for s in listed)
    # Exactly the newest ones are kept.
    assert sorted(s["id"] for s in listed) == sorted(ids[-KEEP_ENDED_SESSIONS:])
    # A forgotten session is unknown.
    assert fresh_api.delete(f"/gpu-clusters/{cid}/sessions/{ids[0]}").status_code == 404


def test_openapi_describes_sessions_and_logs(shared_ecolink_server):
    doc = httpx.get(shared_ecolink_server.url + "/openapi.json").json()
    paths = doc["paths"]
    create = paths["/gpu-clusters/{id}/replicas/{replica}/sessions"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["type"] == "object" and body["additionalProperties"] is False
    assert set(body["properties"]) == {"command", "tty", "width", "height"}
    assert {"201", "400", "401", "404", "409", "413", "422", "503"} <= set(create["responses"])
    out = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert out == {"$ref": "#/components/schemas/SessionOut"}
    session = doc["components"]["schemas"]["SessionOut"]
    assert set(session["required"]) == {
        "id",
        "cluster_id",
        "replica",
        "command",
        "tty",
        "started_at",
        "exited",
        "exit_code",
        "ended_reason",
        "attached",
    }
    listing = paths["/gpu-clusters/{id}/sessions"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SessionsOut"
    }
    delete = paths["/gpu-clusters/{id}/sessions/{sid}"]["delete"]["responses"]["200"]
    assert delete["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SessionOut"
    }
    logs = paths["/gpu-clusters/{id}/replicas/{replica}/logs"]["get"]
    params = {p["name"]: p for p in logs["parameters"] if p["in"] == "query"}
    assert params["tail"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 1_000_000}
    for flag in ("follow", "previous"):
        assert set(params[flag]["schema"]["enum"]) == {"0", "1", "true", "false"}


def test_logs_query_is_checked_as_documented(fresh_api):
    c = launch(fresh_api, "quiet", replicas=2, command="echo one; echo two; sleep infinity")
    cid = wait_for(fresh_api, c["id"], all_ready(2))["id"]
    url = f"/gpu-clusters/{cid}/replicas/quiet-0/logs"
    deadline = time.monotonic() + 10
    while fresh_api.get(url).content != b"one\ntwo\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (
        fresh_api.get(url, params={"tail": "1", "follow": "0", "previous": "false"}).content
        == b"two\n"
    )
    assert fresh_api.get(url, params={"tail": "0"}).content == b""
    for params in (
        {"tail": "-1"},
        {"tail": "+1"},
        {"tail": " 1"},
        {"tail": "1_0"},
        {"tail": ""},
        {"tail": "1000001"},
        {"tail": "\u0663"},
        {"follow": "yes"},
        {"follow": "TRUE"},
        {"previous": ""},
    ):
        r = fresh_api.get(url, params=params)
        assert r.status_code == 422, (params, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_request" and err["field"] == next(iter(params))
