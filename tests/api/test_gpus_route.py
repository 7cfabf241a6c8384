"""`GET /gpus` through a real server (local runtime, simulated telemetry): every GPU of
the account's live clusters with its health, the brief and unhealthy forms, a bad flag
refused in api.md's error form, and other accounts' GPUs never listed."""

from __future__ import annotations

import secrets
import time

LAUNCH = {
    "name": "fleet",
    "region": "us-east",
    "gpu_type": "H100-80GB",
    "gpu_count": 2,
    "replicas": 2,
    "image": "python:3.12",
    "estimated_duration_hours": 1,
    "startup_command": "sleep infinity",
}


def launch(api, **kw) -> dict:
    r = api.post("/gpu-clusters", json={**LAUNCH, **kw})
    assert r.status_code == 201, r.text
    return r.json()


def err(r, status: int, code: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert (e["code"], e.get("field")) == (code, field), e
    assert e["message"]


def wait_gpus(api, n: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get("/gpus")
        assert r.status_code == 200, r.text
        body = r.json()
        if len(body["gpus"]) >= n:
            return body
        time.sleep(0.3)
    raise AssertionError(f"fewer than {n} GPUs after {timeout} s: {body}")


def test_gpus_route(fresh_api, shared_ecolink_server):
    c = launch(fresh_api, name="fleet", gpu_count=2, replicas=2)
    body = wait_gpus(fresh_api, 4)
    assert {(g["cluster_id"], g["replica"], g["index"]) for g in body["gpus"]} == {
        (c["id"], f"fleet-{r}", i) for r in range(2) for i in range(2)
    }
    g = body["gpus"][0]
    assert g["telemetry"] == "simulated" and g["region"] == "us-east"
    assert g["health"]["verdict"] in ("ok", "degraded", "failing")
    assert g["health"]["nvlink_links"] == 18 and "processes" in g["health"]
    assert set(body["health"]) == {"verdict", "reason", "failing", "degraded"}

    brief = fresh_api.get("/gpus", params={"brief": "true"}).json()
    assert all(set(x["health"]) == {"verdict", "reason"} for x in brief["gpus"])
    bad = fresh_api.get("/gpus", params={"unhealthy": "true"}).json()
    assert all(x["health"]["verdict"] in ("degraded", "failing") for x in bad["gpus"])

    err(fresh_api.get("/gpus", params={"unhealthy": "maybe"}), 422, "invalid_request", "unhealthy")
    err(fresh_api.get("/gpus", params={"brief": "2"}), 422, "invalid_request", "brief")

    # Another account sees none of these GPUs.
    key = shared_ecolink_server.new_account("other-" + secrets.token_hex(4), "100")
    with shared_ecolink_server.client(key) as other:
        r = other.get("/gpus")
        assert r.status_code == 200 and r.json()["gpus"] == []
        assert r.json()["health"]["verdict"] == "unknown"

    # Health is in the cluster's summary and its replicas too.
    summary = fresh_api.get(f"/gpu-clusters/{c['id']}").json()["gpu_summary"]
    assert summary["health"]["verdict"] in ("ok", "degraded", "failing")
    reps = fresh_api.get(f"/gpu-clusters/{c['id']}/replicas").json()["replicas"]
    assert all("verdict" in gpu["health"] for r in reps for gpu in r["gpus"])
    metrics = fresh_api.get(f"/gpu-clusters/{c['id']}/metrics").json()
    assert all(
        gpu["health"] and gpu["health"][0][1] in ("ok", "degraded", "failing")
        for r in metrics["replicas"]
        for gpu in r["gpus"]
    )
    fresh_api.delete(f"/gpu-clusters/{c['id']}")


def test_gpus_since_a_version_answers_what_changed(fresh_api, shared_ecolink_server):
    from ecocore.fleet_delta import apply_answer, row_key

    c = launch(fresh_api, name="delta", gpu_count=2, replicas=2)
    wait_gpus(fresh_api, 4)
    first = fresh_api.get("/gpus", params={"brief": "true"}).json()
    assert "since" not in first and first["version"]
    held = {row_key(g): g for g in first["gpus"]}
    time.sleep(1.2)  # a telemetry round later: readings move
    r = fresh_api.get("/gpus", params={"brief": "true", "since": first["version"]})
    assert r.status_code == 200, r.text
    delta = r.json()
    assert delta["since"] == first["version"] and delta["version"] != first["version"]
    assert delta["removed"] == []
    # Changed rows carry their key and the fields that changed, nothing unchanged.
    for d in delta["gpus"]:
        old = held[row_key(d)]
        assert all(
            old.get(f) != v for f, v in d.items() if f not in ("cluster_id", "replica", "index")
        )
    rows, _ = apply_answer(held, delta)
    # The same rows a whole read gives, keyed alike (readings may have moved since).
    whole = fresh_api.get("/gpus", params={"brief": "true"}).json()
    assert set(rows) == {row_key(g) for g in whole["gpus"]}
    assert all(set(g) == set(whole["gpus"][0]) for g in rows.values())

    # A cluster gone: its rows are in `removed`.
    mark = fresh_api.get("/gpus", params={"brief": "true"}).json()["version"]
    assert fresh_api.delete(f"/gpu-clusters/{c['id']}").status_code in (200, 202, 204)
    gone = fresh_api.get("/gpus", params={"brief": "true", "since": mark}).json()
    assert {tuple(k)[0] for k in gone["removed"]} == {c["id"]}

    # A version this server never gave, or another account's: the whole list.
    unknown = fresh_api.get("/gpus", params={"brief": "true", "since": "nope-1"}).json()
    assert "since" not in unknown and "removed" not in unknown
    key = shared_ecolink_server.new_account("other-" + secrets.token_hex(4), "100")
    with shared_ecolink_server.client(key) as other:
        theirs = other.get("/gpus", params={"brief": "true", "since": mark}).json()
        assert "since" not in theirs and theirs["gpus"] == []
    err(fresh_api.get("/gpus", params={"since": "x" * 65}), 422, "invalid_request", "since")
