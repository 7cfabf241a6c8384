"""The public service URL against real replicas: round-robin, prefix, forwarded
headers, credentials removed, every method, streamed bodies, WebSocket, errors."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from support.e2e_helpers import all_ready, launch, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def demo(fresh_api):
    c = launch(fresh_api, "svc", replicas=3, port=8080)
    return wait_for(fresh_api, c["id"], all_ready(3), what="3 ready replicas")


def test_round_robin_prefix_and_forwarded_headers(fresh_api, demo):
    cid = demo["id"]
    assert demo["endpoint"]["url"].endswith(f"/gpu-clusters/{cid}/service/")
    seen = []
    for _ in range(6):
        r = fresh_api.get(
            f"/gpu-clusters/{cid}/service/api/v1/items?x=1&y=%2F",
            headers={
                "Cookie": "theme=dark; eco_session=secret-token; lang=en",
                "X-Forwarded-For": "10.1.2.3",
                "X-Custom": "kept",
            },
        )
        assert r.status_code == 200, r.text
        info = r.json()
        seen.append(info["replica"])
        assert info["path"] == "/api/v1/items" and info["query"] == "x=1&y=%2F"
        headers = {k.lower(): v for k, v in info["headers"]}
        assert "authorization" not in headers
        assert headers["cookie"] == "theme=dark; lang=en"
        assert headers["x-custom"] == "kept"
        assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-host"] == fresh_api.base_url.netloc.decode()
        assert headers["x-forwarded-prefix"] == f"/gpu-clusters/{cid}/service"
    # Round-robin over the three ready replicas, in turn.
    assert set(seen) == {"svc-0", "svc-1", "svc-2"}
    assert seen[:3] == seen[3:]
    # By name too, and the bare /service redirects to /service/.
    r = fresh_api.get("/gpu-clusters/svc/service", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/gpu-clusters/svc/service/"
    r = fresh_api.get("/gpu-clusters/svc/service/", follow_redirects=False)
    assert r.status_code == 200 and r.json()["path"] == "/"


def test_every_method_and_streamed_bodies(fresh_api, demo):
    cid = demo["id"]
    base = f"/gpu-clusters/{cid}/service"
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"):
        r = fresh_api.request(method, f"{base}/m", content=b"abc")
        assert r.status_code == 200 and r.json()["method"] == method
        assert r.json()["body_bytes"] == 3
    r = fresh_api.head(f"{base}/h")
    assert r.status_code == 200 and r.content == b""
    # A 4 MB body sent in chunks (no length known up front) comes back whole.
    blob = bytes(range(256)) * (4 * 4096)

    def chunks():
        for i in range(0, len(blob), 65536):
            yield blob[i : i + 65536]

    r = fresh_api.post(
        f"{base}/echo", content=chunks(), headers={"Content-Type": "application/x-blob"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-blob"
    assert r.content == blob
    # The answer streams: the first chunk arrives long before the last is made.
    t0 = time.monotonic()
    with fresh_api.stream("GET", f"{base}/stream?chunks=8&delay=0.25") as resp:
        it = resp.iter_lines()
        first = next(it)
        t_first = time.monotonic() - t0
        rest = list(it)
    assert first.startswith("chunk 0 from svc-")
    assert len(rest) == 7 and t_first < 1.0 and time.monotonic() - t0 >= 1.7


async def test_websocket_through_the_service_url(shared_ecolink_server, fresh_api, demo):
    cid = demo["id"]
    url = shared_ecolink_server.ws_url(f"/gpu-clusters/{cid}/service/ws")
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {fresh_api.account_key}"},
        proxy=None,
        max_size=None,
    ) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01binary" * 10000)
        assert await ws.recv() == b"\x00\x01binary" * 10000
    # Without credentials: refused before the upgrade.
    with pytest.raises(websockets.InvalidStatus) as e:
        async with websockets.connect(url, proxy=None):
            pass
    assert e.value.response.status_code == 401


def test_refusals(shared_ecolink_server, fresh_api, demo):
    cid = demo["id"]
    url = f"{shared_ecolink_server.url}/gpu-clusters/{cid}/service/x"
    assert httpx.get(url).status_code == 401
    r = httpx.get(url, headers={"Authorization": "Bearer eco_wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    # Another account's cluster does not exist for it.
    other = shared_ecolink_server.new_account("other-svc-acct", "100")
    r = httpx.get(url, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404
    assert fresh_api.get("/gpu-clusters/nope/service/").status_code == 404
    # A cluster without an endpoint: 404. A port nobody listens on: 503, never 5xx else.
    plain = launch(fresh_api, "noendpoint", command="sleep infinity")
    r = fresh_api.get(f"/gpu-clusters/{plain['id']}/service/")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    deaf = launch(fresh_api, "deaf", command="sleep infinity", port=9999)
    wait_for(
        fresh_api,
        deaf["id"],
        lambda c: (
            c["status"] == "running" and all(s["phase"] == "Running" for s in c["replica_states"])
        ),
    )
    r = fresh_api.get(f"/gpu-clusters/{deaf['id']}/service/")
    assert r.status_code == 503 and r.json()["error"]["code"] == "runtime_unavailable"
    # The endpoint survives stop and resume (same URL), and changes port in place.
    r = fresh_api.post(f"/gpu-clusters/{cid}/stop")
    assert r.status_code == 200
    wait_for(fresh_api, cid, lambda c: c["status"] == "stopped")
    assert fresh_api.get(f"/gpu-clusters/{cid}/service/").status_code == 503
    assert fresh_api.post(f"/gpu-clusters/{cid}/resume").status_code == 200
    c = wait_for(fresh_api, cid, all_ready(3))
    assert c["endpoint"] == demo["endpoint"]
    assert fresh_api.get(f"/gpu-clusters/{cid}/service/").status_code == 200


def test_client_disconnect_mid_stream(fresh_api, demo):
    cid = demo["id"]
    # Drop a long answer after a few lines; the backend and the replicas carry on.
    for _ in range(3):
        with fresh_api.stream(
            "GET", f"/gpu-clusters/{cid}/service/stream?chunks=100000&delay=0"
        ) as r:
            it = r.iter_bytes()
            next(it)
    r = fresh_api.get(f"/gpu-clusters/{cid}/service/after")
    assert r.status_code == 200 and r.json()["path"] == "/after"


async def test_concurrent_requests(fresh_api, demo, shared_ecolink_server):
    cid = demo["id"]
    async with httpx.AsyncClient(
        base_url=shared_ecolink_server.url,
        headers={"Authorization": f"Bearer {fresh_api.account_key}"},
    ) as client:
        rs = await asyncio.gather(
            *(client.get(f"/gpu-clusters/{cid}/service/c{i}") for i in range(60))
        )
    assert all(r.status_code == 200 for r in rs)
    counts: dict[str, int] = {}
    for r in rs:
        counts[json.loads(r.content)["replica"]] = (
            counts.get(json.loads(r.content)["replica"], 0) + 1
        )
    # Least outstanding requests: every replica takes a share, none most of it.
    assert set(counts) == {"svc-0", "svc-1", "svc-2"}
    assert all(10 <= n <= 30 for n in counts.values()), counts
