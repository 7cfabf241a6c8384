"""Crash safety: SIGKILL the server while launches, scales and extends are in flight,
restart it, and check that every acknowledged action is in the ledger exactly once,
that retries with the same Idempotency-Key apply an action at most once, and that the
ledger's invariants hold with every cluster in a state matching its ledger."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx

LAUNCH: dict[str, Any] = {
    "region": "us-east",
    "gpu_type": "L40S",
    "gpu_count": 1,
    "replicas": 2,
    "image": "python:3.12",
    "estimated_duration_hours": 2,
    "startup_command": "sleep infinity",
}
BURST = 8


def _holds(store: Any) -> int:
    return int(store.execute("SELECT COUNT(*) FROM ledger WHERE kind = 'hold'").fetchone()[0])


def _burst(
    srv: Any, requests: list[tuple[str, str, dict[str, Any] | None, str]], extra_commits: int
) -> dict[str, httpx.Response]:
    """Send the requests concurrently and SIGKILL the server as soon as the database
    shows `extra_commits` more holds than before (so the kill lands inside the burst,
    however fast or slow the machine); returns the answers that arrived, by key."""
    answers: dict[str, httpx.Response] = {}
    lock = threading.Lock()

    def send(method: str, path: str, body: dict[str, Any] | None, key: str) -> None:
        try:
            with srv.client(timeout=10) as c:
                r = c.request(method, path, json=body, headers={"Idempotency-Key": key})
            with lock:
                answers[key] = r
        except httpx.HTTPError:
            pass  # the server died under it

    store = srv.store()
    try:
        start = _holds(store)
        threads = [threading.Thread(target=send, args=req) for req in requests]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while _holds(store) < start + extra_commits and time.monotonic() < deadline:
            time.sleep(0.001)
        srv.kill()
    finally:
        store.close()
    for t in threads:
        t.join(15)
    return answers


def _audit(srv: Any) -> None:
    store = srv.store()
    try:
        assert store.audit() == []
    finally:
        store.close()


def _ledger(srv: Any) -> list[dict[str, Any]]:
    with srv.client() as c:
        return c.get("/account/ledger", params={"limit": 1000}).json()["entries"]


def test_sigkill_during_launches_loses_and_doubles_nothing(ecolink_server: Any) -> None:
    srv = ecolink_server
    committed = lost = 0
    for round_ in range(3):
        reqs = [
            ("POST", "/gpu-clusters", {**LAUNCH, "name": f"r{round_}-{i}"}, uuid.uuid4().hex)
            for i in range(BURST)
        ]
        answers = _burst(srv, reqs, 1 + round_)
        srv.restart()
        _audit(srv)
        with srv.client() as c:
            listed = {x["name"]: x for x in c.get("/gpu-clusters").json()["clusters"]}
            present = sum(1 for _, _, b, _ in reqs if b is not None and b["name"] in listed)
            committed += present
            lost += len(reqs) - present
            for _, _, body, key in reqs:
                assert body is not None
                first = answers.get(key)
                if first is not None and first.status_code == 201:
                    # Acknowledged before the crash: it must have survived.
                    assert body["name"] in listed
                retry = c.post("/gpu-clusters", json=body, headers={"Idempotency-Key": key})
                assert retry.status_code == 201, retry.text
                if first is not None and first.status_code == 201:
                    assert retry.json()["id"] == first.json()["id"]
            clusters = c.get("/gpu-clusters").json()["clusters"]
        names = [x["name"] for x in clusters if x["name"].startswith(f"r{round_}-")]
        assert sorted(names) == sorted(f"r{round_}-{i}" for i in range(BURST))
        holds: dict[str, int] = {}
        for e in _ledger(srv):
            if e["kind"] == "hold":
                holds[e["cluster_id"]] = holds.get(e["cluster_id"], 0) + 1
        for x in clusters:
            assert holds.get(x["id"]) == 1, x["name"]
        _audit(srv)
    # The kills landed inside the bursts: some launches had committed, some not.
    assert committed > 0 and lost > 0, (committed, lost)
    # After the restarts every cluster runs its replicas again.
    deadline = time.monotonic() + 20
    with srv.client() as c:
        while True:
            cs = c.get("/gpu-clusters").json()["clusters"]
            if all(x["ready_replicas"] == 2 for x in cs):
                break
            assert time.monotonic() < deadline, [(x["name"], x["ready_replicas"]) for x in cs]
            time.sleep(0.2)


def test_sigkill_during_scales_and_extends(ecolink_server: Any) -> None:
    srv = ecolink_server
    with srv.client() as c:
        ids = [
            c.post("/gpu-clusters", json={**LAUNCH, "name": f"s{i}"}).json()["id"]
            for i in range(12)
        ]
    half = len(ids) // 2
    applied_before_retry = not_applied = 0
    for round_ in range(3):
        target = 3 + round_
        reqs: list[tuple[str, str, dict[str, Any] | None, str]] = []
        for cid in ids[:half]:
            reqs.append(
                ("POST", f"/gpu-clusters/{cid}/scale", {"replicas": target}, uuid.uuid4().hex)
            )
        for cid in ids[half:]:
            reqs.append(("POST", f"/gpu-clusters/{cid}/extend", {"hours": "0.5"}, uuid.uuid4().hex))
        with srv.client() as c:
            before = {cid: c.get(f"/gpu-clusters/{cid}").json() for cid in ids}
        answers = _burst(srv, reqs, 1 + round_)
        srv.restart()
        _audit(srv)
        with srv.client() as c:
            for method, path, body, key in reqs:
                cid = path.split("/")[2]
                now = c.get(f"/gpu-clusters/{cid}").json()
                first = answers.get(key)
                applied = (
                    now["replicas"] == target
                    if "scale" in path
                    else now["estimated_duration_hours"] > before[cid]["estimated_duration_hours"]
                )
                applied_before_retry += applied
                not_applied += not applied
                if first is not None and first.status_code == 200:
                    assert applied, (path, now)
                retry = c.request(method, path, json=body, headers={"Idempotency-Key": key})
                assert retry.status_code == 200, retry.text
                if first is not None and first.status_code == 200:
                    assert retry.content == first.content
                after = c.get(f"/gpu-clusters/{cid}").json()
                if "scale" in path:
                    assert after["replicas"] == target
                else:
                    # Applied exactly once, whether or not the first try got through.
                    assert after["estimated_duration_hours"] == (
                        before[cid]["estimated_duration_hours"] + 0.5
                    )
        # Exactly one hold per extension and per scale-up of each cluster so far.
        entries = _ledger(srv)
        for cid in ids:
            memos = [e["memo"] for e in entries if e["cluster_id"] == cid and e["kind"] == "hold"]
            assert len(memos) == len(set(memos)) or cid in ids[half:], memos
            if cid in ids[half:]:
                assert sum(m.startswith("extend") for m in memos) == round_ + 1
            else:
                assert sum(m.startswith("scale") for m in memos) == round_ + 1
        _audit(srv)
    assert applied_before_retry > 0 and not_applied > 0, (applied_before_retry, not_applied)
