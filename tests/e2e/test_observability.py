"""End to end: what an operator watches a running `ecolink serve` by. `/metrics`
(parsed with prometheus_client's own parser), the request id through the front
and in JSON log lines, and `/readyz` against `/healthz`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families

from support.e2e_helpers import all_ready, connect, exec_url, launch, wait_for, wait_until
from support.server import EcolinkServer, serve_once


def scrape(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    r = api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_watch_clients_exec_and_store_calls(
    ecolink_server_factory: Callable[..., EcolinkServer],
) -> None:
    srv = ecolink_server_factory()
    api = srv.client()
    before = scrape(api)
    assert sample(before, "ecolink_leader") == 1
    assert sample(before, "ecolink_runtime_available") == 1
    for _ in range(3):
        assert api.get("/gpu-clusters").status_code == 200
    assert api.get("/gpu-clusters/gc_nothere").status_code == 404
    assert httpx.get(srv.url + "/gpu-clusters").status_code == 401
    c = launch(api, "observed", replicas=2, command="sleep 600")
    c = wait_for(api, c["id"], all_ready(2), what="2 ready")
    replica = c["replica_states"][0]["name"]
    kept = api.post(
        f"/gpu-clusters/{c['id']}/replicas/{replica}/sessions", json={"command": ["sleep", "600"]}
    )
    assert kept.status_code in (200, 201), kept.text

    async def with_sockets_open() -> dict[Any, float]:
        watch = await websockets.connect(
            srv.ws_url("/watch"),
            additional_headers={"Authorization": f"Bearer {srv.key}", "X-Request-Id": "watch-1"},
            proxy=None,
        )
        assert watch.response is not None
        assert watch.response.headers["x-request-id"] == "watch-1"
        shell = await connect(
            exec_url(srv, c["id"], replica, ["sleep", "30"], tty="false", stdin="false"), srv.key
        )
        try:
            await watch.recv()  # the snapshot: the hub holds the client by now
            return await asyncio.to_thread(scrape, api)
        finally:
            await shell.ws.close()
            await watch.close()

    during = asyncio.run(with_sockets_open())
    assert api.delete(f"/gpu-clusters/{c['id']}/sessions/{kept.json()['id']}").status_code in (
        200,
        204,
    )
    after = scrape(api)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert (
        delta("ecolink_http_requests_total", method="GET", route="/gpu-clusters", status="200") == 3
    )
    assert (
        delta("ecolink_http_requests_total", method="GET", route="/gpu-clusters", status="401") == 1
    )
    assert (
        delta("ecolink_http_requests_total", method="GET", route="/gpu-clusters/{id}", status="404")
        == 1
    )
    assert (
        delta("ecolink_http_requests_total", method="POST", route="/gpu-clusters", status="201")
        == 1
    )
    # The latency histogram saw each of them, in its buckets and its count.
    assert (
        delta("ecolink_http_request_duration_seconds_count", method="GET", route="/gpu-clusters")
        == 4
    )
    assert (
        delta(
            "ecolink_http_request_duration_seconds_bucket",
            method="GET",
            route="/gpu-clusters",
            le="+Inf",
        )
        == 4
    )
    assert (
        sample(
            after, "ecolink_http_request_duration_seconds_sum", method="GET", route="/gpu-clusters"
        )
        > 0
    )
    # The launch wrote through the store: its transaction and its hold were timed.
    assert delta("ecolink_store_call_duration_seconds_count", call="tx") >= 1
    assert delta("ecolink_store_call_duration_seconds_count", call="post") >= 1
    # While the watch and the exec WebSockets were open they were counted.
    assert sample(during, "ecolink_watch_clients") == 1
    assert sample(during, "ecolink_websockets_open", route="/watch") == 1
    assert sample(during, "ecolink_exec_sessions", kind="direct") == 1
    assert sample(during, "ecolink_exec_sessions", kind="kept") == 1
    assert sample(after, "ecolink_exec_sessions", kind="kept") == 0
    wait_until(lambda: sample(scrape(api), "ecolink_watch_clients") == 0, what="watch gone")
    assert sample(after, "ecolink_exec_sessions", kind="direct") == 0
    assert sample(after, "ecolink_websockets_open", route="/watch") == 0
    api.delete(f"/gpu-clusters/{c['id']}")
    api.close()


def test_request_id_crosses_the_front_and_lands_in_json_logs(
    ecolink_server_factory: Callable[..., EcolinkServer],
) -> None:
    srv = ecolink_server_factory(
        extra_args=["--access-log", "--log-level", "info"], env={"ECOLINK_LOG_FORMAT": "json"}
    )
    api = srv.client()
    r = api.get("/gpu-clusters", headers={"X-Request-Id": "trace-42.a:b"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42.a:b"
    # An id that is not well-formed is replaced, not echoed.
    r = api.get("/gpu-clusters", headers={"X-Request-Id": "x" * 200})
    made = r.headers["x-request-id"]
    assert made != "x" * 200 and len(made) == 32 and int(made, 16) >= 0
    # Without one, each request gets its own, refusals too.
    r1 = httpx.get(srv.url + "/account")
    r2 = httpx.get(srv.url + "/account")
    assert r1.status_code == 401 and r1.headers["x-request-id"] != r2.headers["x-request-id"]
    api.close()
    srv.stop()
    lines = [json.loads(ln) for ln in srv.log_tail(200_000).splitlines() if ln.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(ln) for ln in lines)
    mine = [ln for ln in lines if ln.get("request_id") == "trace-42.a:b"]
    assert [(ln["method"], ln["path"], ln["status"]) for ln in mine] == [
        ("GET", "/gpu-clusters", 200)
    ]
    assert any(ln.get("request_id") == made for ln in lines)
    assert any(
        ln.get("request_id") == r1.headers["x-request-id"] and ln["status"] == 401 for ln in lines
    )


def test_a_log_format_that_is_not_known_is_refused(tmp_path: Any) -> None:
    r = serve_once(tmp_path, {"ECOLINK_LOG_FORMAT": "xml"})
    assert r.returncode == 1
    assert "ECOLINK_LOG_FORMAT='xml': use text or json" in r.stderr


def test_readyz_fails_while_the_database_is_gone_and_healthz_stays(
    ecolink_server_factory: Callable[..., EcolinkServer],
) -> None:
    srv = ecolink_server_factory()
    r = httpx.get(srv.url + "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    db = srv.state_dir / "ecolink.db"
    away = db.with_name("ecolink.db.away")
    db.rename(away)
    try:
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "store_unavailable"
        assert "ecolink.db" in r.json()["error"]["message"]
        assert httpx.get(srv.url + "/healthz").status_code == 200
    finally:
        away.rename(db)
    assert httpx.get(srv.url + "/readyz").status_code == 200
