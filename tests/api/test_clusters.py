"""Every cluster, account and ledger route of api.md through a real server with real
child processes as replicas: answers, refusals in api.md's order (each naming its
field), idempotency, and other accounts' clusters being 404."""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import Any

import httpx
import pytest

LAUNCH: dict[str, Any] = {
    "name": "demo",
    "region": "us-east",
    "gpu_type": "H100-80GB",
    "gpu_count": 1,
    "replicas": 2,
    "image": "python:3.12",
    "estimated_duration_hours": 10,
    "startup_command": "sleep infinity",
}


def launch(api: httpx.Client, **kw: Any) -> dict[str, Any]:
    body = {**LAUNCH, **kw}
    r = api.post("/gpu-clusters", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def err(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert e["code"] == code, e
    assert e.get("field") == field, e
    assert e["message"]
    return e


def wait_for(api: httpx.Client, ref: str, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        c = api.get(f"/gpu-clusters/{ref}").json()
        if pred(c):
            return c
        assert time.monotonic() < deadline, c
        time.sleep(0.1)


def test_healthz_catalog_filesystems_account(fresh_api: httpx.Client) -> None:
    h = httpx.get(str(fresh_api.base_url) + "/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["version"]
    cat = fresh_api.get("/catalog").json()
    us = next(r for r in cat["regions"] if r["name"] == "us-east")
    h100 = next(t for t in us["gpu_types"] if t["name"] == "H100-80GB")
    assert h100["rate_per_gpu_hour"] == "2.500000" and h100["gpu_counts"] == [1, 2, 4, 8]
    assert us["gpu_budget"] > 0
    assert fresh_api.get("/filesystems").json() == {"filesystems": []}
    acct = fresh_api.get("/account").json()
    assert acct["balance"] == "10000.000000" and acct["held"] == "0.000000"
    assert acct["available"] == "10000.000000" and acct["id"] and acct["name"]


def test_launch_get_list_and_the_cluster_shape(fresh_api: httpx.Client) -> None:
    c = launch(fresh_api)
    assert c["status"] in ("pending", "running")
    assert c["hourly_rate"] == "5.000000" and c["burn_rate"] == "5.000000"
    assert c["cost"] == {
        "hold": "50.000000",
        "spent": "0.000000",
        "hold_remaining": "50.000000",
        "projected_total": "50.000000",
    }
    assert c["estimated_duration_hours"] == 10 and c["endpoint"] is None
    assert c["stale"] is False and c["status_reason"] is None
    assert c["gpu_summary"]["telemetry"] in ("nvml", "simulated")
    assert c["id"] != c["name"]
    c = wait_for(fresh_api, c["id"], lambda c: c["ready_replicas"] == 2)
    assert c["status"] == "running" and c["started_at"]
    assert [r["name"] for r in c["replica_states"]] == ["demo-0", "demo-1"]
    assert {r["phase"] for r in c["replica_states"]} == {"Running"}
    by_name = fresh_api.get("/gpu-clusters/demo").json()
    assert by_name["id"] == c["id"]
    listed = fresh_api.get("/gpu-clusters").json()["clusters"]
    assert [x["id"] for x in listed] == [c["id"]]
    assert fresh_api.get("/gpu-clusters", params={"status": "stopped"}).json()["clusters"] == []
    assert (
        len(fresh_api.get("/gpu-clusters", params={"status": "running,pending"}).json()["clusters"])
        == 1
    )
    err(
        fresh_api.get("/gpu-clusters", params={"status": "sleeping"}),
        422,
        "invalid_request",
        "status",
    )
    acct = fresh_api.get("/account").json()
    assert acct["held"] == "50.000000" and acct["available"] == "9950.000000"


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"name": "Demo"}, "name"),
        ({"name": "1abc"}, "name"),
        ({"name": "abc-"}, "name"),
        ({"name": "a" * 41}, "name"),
        ({"name": None}, "name"),
        ({"region": "mars"}, "region"),
        ({"gpu_type": "TPU"}, "gpu_type"),
        ({"gpu_count": 3}, "gpu_count"),
        ({"gpu_count": "1"}, "gpu_count"),
        ({"gpu_count": True}, "gpu_count"),
        ({"replicas": 1}, "replicas"),
        ({"replicas": 2.5}, "replicas"),
        ({"image": ""}, "image"),
        ({"image": "UPPER/case"}, "image"),
        ({"image": "bad image"}, "image"),
        ({"estimated_duration_hours": 0}, "estimated_duration_hours"),
        ({"estimated_duration_hours": "0.009"}, "estimated_duration_hours"),
        ({"estimated_duration_hours": 720.5}, "estimated_duration_hours"),
        ({"estimated_duration_hours": "1.0000001"}, "estimated_duration_hours"),
        ({"estimated_duration_hours": "ten"}, "estimated_duration_hours"),
        ({"estimated_duration_hours": -1}, "estimated_duration_hours"),
        ({"startup_command": "x" * 4097}, "startup_command"),
        ({"startup_command": "é" * 2049}, "startup_command"),
        ({"shared_filesystems": ["nope"]}, "shared_filesystems"),
        ({"shared_filesystems": "nope"}, "shared_filesystems"),
        ({"expose": {"port": 0}}, "expose.port"),
        ({"expose": {"port": 65536}}, "expose.port"),
        ({"expose": {}}, "expose.port"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_launch_validation_names_the_field(
    fresh_api: httpx.Client, patch: dict[str, Any], field: str
) -> None:
    body = {**LAUNCH, **patch}
    r = fresh_api.post("/gpu-clusters", json=body)
    err(r, 422, "invalid_request", field)
    assert fresh_api.get("/gpu-clusters").json()["clusters"] == []
    assert fresh_api.get("/account").json()["held"] == "0.000000"


@pytest.mark.parametrize(
    "missing",
    ["name", "region", "gpu_type", "gpu_count", "replicas", "image", "estimated_duration_hours"],
)
def test_launch_missing_fields_are_422(fresh_api: httpx.Client, missing: str) -> None:
    body = {k: v for k, v in LAUNCH.items() if k != missing}
    err(fresh_api.post("/gpu-clusters", json=body), 422, "invalid_request", missing)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[1, 2]", b"null", b'"x"', b"\xff\xfe", b'{"replicas": NaN}']
)
def test_malformed_bodies_are_400(fresh_api: httpx.Client, raw: bytes) -> None:
    r = fresh_api.post("/gpu-clusters", content=raw, headers={"content-type": "application/json"})
    err(r, 400, "invalid_request")


def test_huge_bodies_are_refused_without_a_5xx(fresh_api: httpx.Client) -> None:
    r = fresh_api.post(
        "/gpu-clusters",
        content=b"{" + b" " * (1 << 20) + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "invalid_request"


def test_hours_as_decimal_strings_are_exact(fresh_api: httpx.Client) -> None:
    c = launch(fresh_api, estimated_duration_hours="0.333333", gpu_type="L40S")
    # 2 x $0.95 x 0.333333 h = $0.6333327, held rounded up.
    assert c["cost"]["hold"] == "0.633333"
    assert c["estimated_duration_hours"] == 0.333333


def test_conflicts_budget_and_balance_in_order(
    fresh_api: httpx.Client, shared_ecolink_server: Any
) -> None:
    launch(fresh_api)
    err(fresh_api.post("/gpu-clusters", json=LAUNCH), 409, "conflict", "name")
    # Over the region's budget (64 GPUs in us-east).
    e = err(
        fresh_api.post(
            "/gpu-clusters", json={**LAUNCH, "name": "big", "gpu_count": 8, "replicas": 8}
        ),
        409,
        "conflict",
    )
    assert "62 of 64 free" in e["message"]
    # A poor account: the hold of $50 cannot be placed.
    poor = shared_ecolink_server.new_account("poor-" + uuid.uuid4().hex[:6], "20")
    with shared_ecolink_server.client(poor) as p:
        e = err(p.post("/gpu-clusters", json=LAUNCH), 402, "insufficient_balance")
        assert "$30.000000 missing" in e["message"]
        # 409 (budget) is checked before 402 (balance).
        err(
            p.post("/gpu-clusters", json={**LAUNCH, "gpu_count": 8, "replicas": 9}), 409, "conflict"
        )
        # 422 before 409 and 402.
        err(
            p.post("/gpu-clusters", json={**LAUNCH, "replicas": 1}),
            422,
            "invalid_request",
            "replicas",
        )
        assert p.get("/gpu-clusters").json()["clusters"] == []


def test_refusal_order_on_cluster_routes(
    fresh_api: httpx.Client, shared_ecolink_server: Any
) -> None:
    c = launch(fresh_api, gpu_type="L40S")
    fresh_api.delete(f"/gpu-clusters/{c['id']}")
    url = shared_ecolink_server.url
    # 401 beats everything, a bad body included.
    r = httpx.post(f"{url}/gpu-clusters/nope/scale", content=b"{bad")
    err(r, 401, "unauthenticated")
    # 404 beats a malformed body and an out-of-range field.
    err(fresh_api.post("/gpu-clusters/nope/scale", content=b"{bad"), 404, "not_found")
    err(fresh_api.post("/gpu-clusters/nope/scale", json={"replicas": 1}), 404, "not_found")
    # 400 before 422 before 409 (the cluster is terminated).
    err(fresh_api.post(f"/gpu-clusters/{c['id']}/scale", content=b"{bad"), 400, "invalid_request")
    err(
        fresh_api.post(f"/gpu-clusters/{c['id']}/scale", json={"replicas": 1}),
        422,
        "invalid_request",
        "replicas",
    )
    err(fresh_api.post(f"/gpu-clusters/{c['id']}/scale", json={"replicas": 3}), 409, "conflict")
    err(
        fresh_api.post(f"/gpu-clusters/{c['id']}/extend", json={"hours": 0}),
        422,
        "invalid_request",
        "hours",
    )
    err(fresh_api.post(f"/gpu-clusters/{c['id']}/extend", json={"hours": 1}), 409, "conflict")
    err(
        fresh_api.put(f"/gpu-clusters/{c['id']}/endpoint", json={"port": 70000}),
        422,
        "invalid_request",
        "port",
    )
    err(fresh_api.put(f"/gpu-clusters/{c['id']}/endpoint", json={"port": 8000}), 409, "conflict")
    err(fresh_api.post(f"/gpu-clusters/{c['id']}/stop"), 409, "conflict")
    err(fresh_api.post(f"/gpu-clusters/{c['id']}/resume"), 409, "conflict")
    err(fresh_api.post(f"/gpu-clusters/{c['id']}/restart"), 409, "conflict")


def test_scale_extend_stop_resume_terminate(fresh_api: httpx.Client) -> None:
    c = launch(fresh_api)
    cid = c["id"]
    wait_for(fresh_api, cid, lambda c: c["ready_replicas"] == 2)
    r = fresh_api.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 3})
    assert r.status_code == 200, r.text
    c = wait_for(fresh_api, cid, lambda c: c["ready_replicas"] == 3)
    assert c["replicas"] == 3 and c["hourly_rate"] == "7.500000"
    assert float(c["cost"]["hold"]) > 50
    r = fresh_api.post(f"/gpu-clusters/{cid}/extend", json={"hours": "1.5"})
    assert r.status_code == 200 and r.json()["estimated_duration_hours"] == 11.5
    r = fresh_api.post(f"/gpu-clusters/{cid}/stop")
    assert r.status_code == 200 and r.json()["status"] in ("stopping", "stopped")
    c = wait_for(fresh_api, cid, lambda c: c["status"] == "stopped")
    assert c["burn_rate"] == "0.000000" and c["cost"]["hold_remaining"] == "0.000000"
    assert c["replica_states"] == [] and c["replicas"] == 3
    # Scaling while stopped keeps the desired count only.
    assert (
        fresh_api.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 2}).json()["replicas"] == 2
    )
    r = fresh_api.post(f"/gpu-clusters/{cid}/resume")
    assert r.status_code == 200 and r.json()["status"] in ("pending", "running")
    wait_for(fresh_api, cid, lambda c: c["ready_replicas"] == 2)
    r = fresh_api.post(f"/gpu-clusters/{cid}/restart")
    assert r.status_code == 200
    r = fresh_api.delete(f"/gpu-clusters/{cid}")
    assert r.status_code == 200 and r.json()["status"] == "terminated"
    assert r.json()["status_reason"] == "user"
    again = fresh_api.delete(f"/gpu-clusters/{cid}")
    assert again.status_code == 200 and again.json()["status"] == "terminated"
    kinds = [e["kind"] for e in fresh_api.get(f"/gpu-clusters/{cid}/events").json()["events"]]
    for k in ("launched", "scaled", "extended", "stopped", "resumed", "restarted", "terminated"):
        assert k in kinds
    acct = fresh_api.get("/account").json()
    assert acct["held"] == "0.000000"
    assert fresh_api.get("/gpu-clusters").json()["clusters"][0]["status"] == "terminated"
    # The name is free again.
    launch(fresh_api)


def test_endpoint_and_replica_routes(fresh_api: httpx.Client, shared_ecolink_server: Any) -> None:
    c = launch(fresh_api, expose={"port": 8000})
    cid = c["id"]
    assert c["endpoint"] == {
        "url": f"{shared_ecolink_server.url}/gpu-clusters/{cid}/service/",
        "port": 8000,
    }
    r = fresh_api.put(f"/gpu-clusters/{cid}/endpoint", json={"port": 9000})
    assert r.status_code == 200
    assert r.json() == {
        "url": f"{shared_ecolink_server.url}/gpu-clusters/{cid}/service/",
        "port": 9000,
    }
    r = fresh_api.delete(f"/gpu-clusters/{cid}/endpoint")
    assert r.status_code == 204 and r.content == b""
    assert fresh_api.get(f"/gpu-clusters/{cid}").json()["endpoint"] is None
    wait_for(fresh_api, cid, lambda c: c["ready_replicas"] == 2)
    reps = fresh_api.get(f"/gpu-clusters/{cid}/replicas").json()["replicas"]
    assert [r["name"] for r in reps] == ["demo-0", "demo-1"]
    for rep in reps:
        assert rep["telemetry"] in ("nvml", "simulated") and isinstance(rep["gpus"], list)
        assert {"phase", "ready", "restarts", "reason", "node", "index"} <= set(rep)
    r = fresh_api.post(f"/gpu-clusters/{cid}/replicas/demo-1/restart")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "demo-1"
    err(fresh_api.post(f"/gpu-clusters/{cid}/replicas/demo-7/restart"), 404, "not_found", "replica")
    m = fresh_api.get(f"/gpu-clusters/{cid}/metrics")
    assert m.status_code == 200 and "interval_s" in m.json() and "replicas" in m.json()
    assert (
        fresh_api.get(
            f"/gpu-clusters/{cid}/metrics", params={"since": "2026-01-01T00:00:00Z"}
        ).status_code
        == 200
    )
    err(
        fresh_api.get(f"/gpu-clusters/{cid}/metrics", params={"since": "yesterday"}),
        422,
        "invalid_request",
        "since",
    )
    events = fresh_api.get(f"/gpu-clusters/{cid}/events").json()["events"]
    assert events[0]["kind"] == "launched"
    assert all({"at", "kind", "message"} <= set(e) for e in events)


def test_idempotency_key_replays_the_first_answer(fresh_api: httpx.Client) -> None:
    key = uuid.uuid4().hex
    r1 = fresh_api.post("/gpu-clusters", json=LAUNCH, headers={"Idempotency-Key": key})
    r2 = fresh_api.post("/gpu-clusters", json=LAUNCH, headers={"Idempotency-Key": key})
    assert r1.status_code == r2.status_code == 201
    assert r2.content == r1.content
    assert len(fresh_api.get("/gpu-clusters").json()["clusters"]) == 1
    holds = [e for e in fresh_api.get("/account/ledger").json()["entries"] if e["kind"] == "hold"]
    assert len(holds) == 1
    # Same key, another body: 409.
    err(
        fresh_api.post(
            "/gpu-clusters", json={**LAUNCH, "replicas": 3}, headers={"Idempotency-Key": key}
        ),
        409,
        "conflict",
    )
    cid = r1.json()["id"]
    k2 = uuid.uuid4().hex
    s1 = fresh_api.post(
        f"/gpu-clusters/{cid}/scale", json={"replicas": 3}, headers={"Idempotency-Key": k2}
    )
    fresh_api.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 4})
    s2 = fresh_api.post(
        f"/gpu-clusters/{cid}/scale", json={"replicas": 3}, headers={"Idempotency-Key": k2}
    )
    assert s2.status_code == 200 and s2.content == s1.content
    assert fresh_api.get(f"/gpu-clusters/{cid}").json()["replicas"] == 4
    err(
        fresh_api.post(f"/gpu-clusters/{cid}/stop", headers={"Idempotency-Key": ""}),
        422,
        "invalid_request",
        "Idempotency-Key",
    )


def test_other_accounts_clusters_are_404_everywhere(
    fresh_api: httpx.Client, shared_ecolink_server: Any
) -> None:
    c = launch(fresh_api)
    other = shared_ecolink_server.new_account("other-" + uuid.uuid4().hex[:6], "1000")
    with shared_ecolink_server.client(other) as o:
        for ref in (c["id"], c["name"]):
            for method, path, body in [
                ("GET", "", None),
                ("POST", "/scale", {"replicas": 3}),
                ("POST", "/extend", {"hours": 1}),
                ("POST", "/stop", None),
                ("POST", "/resume", None),
                ("POST", "/restart", None),
                ("DELETE", "", None),
                ("PUT", "/endpoint", {"port": 80}),
                ("DELETE", "/endpoint", None),
                ("GET", "/replicas", None),
                ("POST", "/replicas/demo-0/restart", None),
                ("GET", "/metrics", None),
                ("GET", "/events", None),
            ]:
                r = o.request(method, f"/gpu-clusters/{ref}{path}", json=body)
                err(r, 404, "not_found")
        assert o.get("/gpu-clusters").json()["clusters"] == []
        err(
            o.get("/account/ledger", params={"cluster_id": c["id"]}), 404, "not_found", "cluster_id"
        )
        assert c["id"] not in o.get("/account/ledger").text
    assert fresh_api.get(f"/gpu-clusters/{c['id']}").json()["status"] in ("pending", "running")


def test_ledger_json_csv_and_paging(fresh_api: httpx.Client) -> None:
    c = launch(fresh_api)
    fresh_api.post(f"/gpu-clusters/{c['id']}/stop")
    entries = fresh_api.get("/account/ledger").json()["entries"]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    assert [e["kind"] for e in entries][-1] == "credit"
    for e in entries:
        assert set(e) == {
            "id",
            "at",
            "cluster_id",
            "kind",
            "amount",
            "balance_after",
            "held_after",
            "memo",
        }
    holds = [e for e in entries if e["kind"] == "hold"]
    assert holds[0]["amount"] == "50.000000" and holds[0]["cluster_id"] == c["id"]
    page = fresh_api.get("/account/ledger", params={"limit": 1}).json()["entries"]
    assert [e["id"] for e in page] == ids[:1]
    older = fresh_api.get("/account/ledger", params={"before": ids[0]}).json()["entries"]
    assert [e["id"] for e in older] == ids[1:]
    only = fresh_api.get("/account/ledger", params={"cluster_id": c["name"]}).json()["entries"]
    assert all(e["cluster_id"] == c["id"] for e in only) and only
    r = fresh_api.get("/account/ledger", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["id"]) for x in rows] == ids
    assert rows[-1]["kind"] == "credit" and rows[-1]["amount"] == "10000.000000"
    assert rows[-1]["cluster_id"] == ""
    for bad, field in [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"before": "-1"}, "before"),
        ({"before": str(10**30)}, "before"),
        ({"limit": "9" * 50}, "limit"),
        ({"format": "xml"}, "format"),
    ]:
        err(fresh_api.get("/account/ledger", params=bad), 422, "invalid_request", field)


def test_unknown_routes_and_methods_answer_in_the_error_form(fresh_api: httpx.Client) -> None:
    err(fresh_api.get("/nope"), 404, "not_found")
    r = fresh_api.patch("/gpu-clusters")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
