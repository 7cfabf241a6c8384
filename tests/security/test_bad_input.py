"""Absurd input is a 422 naming the field, and the connection survives any error:

- values that overflow decimal arithmetic or exceed any sane magnitude ("1e999999"
  hours, 10**30 replicas, a 4,400-digit port, absurd query parameters) are 422s that
  name the field, never 5xx;
- one keep-alive connection goes on serving after 400, 401, 404, 409, 413 and 422
  answers, bodies left unread included;
- a WebSocket to a route that does not exist gets the JSON 404, not a bare 403;
- an action sent by name and retried by id with the same `Idempotency-Key` is a
  replay of the first answer, not a 409.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support.edge import LAUNCH, KeepAlive, is_error, launch_service


@dataclass
class Target:
    srv: Any
    key: str
    api: httpx.Client
    cluster: dict[str, Any]
    replica: str


@pytest.fixture(scope="module")
def target(shared_ecolink_server: Any) -> Iterator[Target]:
    srv = shared_ecolink_server
    key = srv.new_account("input-" + secrets.token_hex(3), "1000")
    api = srv.client(key)
    cluster = launch_service(api, "input-web")
    yield Target(srv, key, api, cluster, cluster["replica_states"][0]["name"])
    api.close()


HUGE_HOURS: list[Any] = [
    "1e999999",
    "-1e999999",
    "1e-999999",
    "1E+999999999",
    "0.01e999999",
    "9" * 40,
    "1e30",
    1e308,
    "NaN",
    "Infinity",
    "-0",
    "1e-7",
]


def _raw(api: httpx.Client, method: str, path: str, body: bytes) -> httpx.Response:
    return api.request(method, path, content=body, headers={"content-type": "application/json"})


def test_absurd_hours_are_422_naming_the_field(target: Target) -> None:
    t = target
    before = t.api.get("/account").json()
    launch = {**LAUNCH, "name": "never-launched", "startup_command": "sleep 100"}
    for value in HUGE_HOURS:
        r = t.api.post("/gpu-clusters", json={**launch, "estimated_duration_hours": value})
        is_error(r, 422, "invalid_request", "estimated_duration_hours")
        r = t.api.post(f"/gpu-clusters/{t.cluster['id']}/extend", json={"hours": value})
        is_error(r, 422, "invalid_request", "hours")
    # As JSON numbers too: 1e999999 parses to infinity; a 4,400-digit integer is valid
    # JSON that no integer field takes.
    long_int = b"1" + b"0" * 4400
    for number in (b"1e999999", b"-1e999999", b"1e-999999", long_int, b"-" + long_int):
        r = _raw(
            t.api, "POST", f"/gpu-clusters/{t.cluster['id']}/extend", b'{"hours": ' + number + b"}"
        )
        is_error(r, 422, "invalid_request", "hours")
        body = (
            json.dumps({**launch, "estimated_duration_hours": 1})
            .encode()
            .replace(b'"estimated_duration_hours": 1', b'"estimated_duration_hours": ' + number)
        )
        is_error(
            _raw(t.api, "POST", "/gpu-clusters", body),
            422,
            "invalid_request",
            "estimated_duration_hours",
        )
    assert t.api.get("/account").json() == before
    assert t.api.get("/gpu-clusters/never-launched").status_code == 404


def test_absurd_integers_and_query_parameters_are_422(target: Target) -> None:
    t = target
    cid = t.cluster["id"]
    long_int = b"1" + b"0" * 4400
    cases: list[tuple[str, str, bytes, str]] = []
    for number in (b"1e999999", b"-1e999999", long_int, b"1" + b"0" * 30, b"-" + long_int):
        cases += [
            ("POST", f"/gpu-clusters/{cid}/scale", b'{"replicas": ' + number + b"}", "replicas"),
            ("PUT", f"/gpu-clusters/{cid}/endpoint", b'{"port": ' + number + b"}", "port"),
            (
                "POST",
                "/gpu-clusters",
                json.dumps({**LAUNCH, "name": "n1", "replicas": 2})
                .encode()
                .replace(b'"replicas": 2', b'"replicas": ' + number),
                "replicas",
            ),
            (
                "POST",
                "/gpu-clusters",
                json.dumps({**LAUNCH, "name": "n1", "expose": {"port": 1}})
                .encode()
                .replace(b'"port": 1', b'"port": ' + number),
                "expose.port",
            ),
        ]
    for method, path, body, field in cases:
        is_error(_raw(t.api, method, path, body), 422, "invalid_request", field)
    replica = t.replica
    queries = [
        ("/account/ledger", "before", ["1e999999", str(10**30), "9" * 5000, "-1", "", "%00"]),
        ("/account/ledger", "limit", ["1e999999", str(10**300), "0", "1.5"]),
        (
            f"/gpu-clusters/{cid}/metrics",
            "since",
            ["1e999999", "+999999-01-01T00:00:00Z", "2026-13-40T00:00:00Z", "9" * 5000],
        ),
        (
            f"/gpu-clusters/{cid}/replicas/{replica}/logs",
            "tail",
            ["1e999999", str(10**30), "9" * 5000, "-1", ""],
        ),
        (f"/gpu-clusters/{cid}/replicas/{replica}/logs", "follow", ["2", "1e999999"]),
        ("/gpu-clusters", "status", ["x" * 5000, "1e999999"]),
    ]
    for path, name, values in queries:
        for value in values:
            r = t.api.get(path, params={name: value})
            is_error(r, 422, "invalid_request", name)
    # Extremes that are valid stay valid.
    assert (
        t.api.get(
            f"/gpu-clusters/{cid}/metrics", params={"since": "9999-12-31T23:59:59-23:59"}
        ).status_code
        == 200
    )
    assert t.api.get("/account/ledger", params={"before": str(2**63 - 1)}).status_code == 200


def test_one_keep_alive_connection_survives_every_kind_of_error(target: Target) -> None:
    t = target
    cid = t.cluster["id"]
    conn = KeepAlive(t.srv.url)
    big = json.dumps({"hours": 1, "pad": "x" * 300_000}).encode()
    errors: list[tuple[int, str, str, str | None, Any, bytes | None]] = [
        (400, "POST", f"/gpu-clusters/{cid}/scale", t.key, None, b"{not json"),
        (401, "POST", f"/gpu-clusters/{cid}/scale", None, None, b'{"replicas": 3}' * 1000),
        (401, "GET", "/account", "eco_" + "x" * 43, None, None),
        (404, "POST", "/gpu-clusters/gc_00000000deadbeef/extend", t.key, {"hours": 1}, None),
        (404, "GET", "/no/such/route", t.key, None, None),
        (405, "PATCH", "/account", t.key, {"a": 1}, None),
        (
            409,
            "POST",
            "/gpu-clusters",
            t.key,
            {**LAUNCH, "name": "input-web", "startup_command": "sleep 1"},
            None,
        ),
        (413, "POST", f"/gpu-clusters/{cid}/extend", t.key, None, big),
        (422, "POST", f"/gpu-clusters/{cid}/extend", t.key, {"hours": "1e999999"}, None),
        (422, "GET", "/account/ledger?before=1e999999", t.key, None, None),
    ]
    try:
        for status, method, path, key, data, raw in errors:
            got, body = conn.json(method, path, key, data, raw)
            assert got == status, (method, path, got, body)
            assert "error" in body, body
            # The same connection serves the next request at once.
            ok, account = conn.json("GET", "/account", t.key)
            assert ok == 200 and account["name"].startswith("input-"), (status, ok, account)
    finally:
        conn.close()


def test_websocket_to_an_unknown_route_is_a_json_404(target: Target) -> None:
    t = target
    auth = {"Authorization": f"Bearer {t.key}"}
    for path in (
        "/no/such/socket",
        "/account",
        "/gpu-clusters/gc_00000000deadbeef/nothing",
        f"/gpu-clusters/{t.cluster['id']}/exec",
    ):
        with pytest.raises(InvalidStatus) as exc:
            connect(t.srv.ws_url(path), additional_headers=auth, open_timeout=10, proxy=None)
        resp = exc.value.response
        assert resp.status_code == 404, (path, resp.status_code, resp.body)
        assert resp.headers["content-type"] == "application/json"
        assert json.loads(resp.body or b"{}") == {
            "error": {"code": "not_found", "message": "no such route"}
        }
    # Without credentials it is the 401 first, as for HTTP.
    with pytest.raises(InvalidStatus) as exc:
        connect(t.srv.ws_url("/no/such/socket"), open_timeout=10, proxy=None)
    assert exc.value.response.status_code == 401


def test_retry_by_id_after_sending_by_name_is_a_replay(target: Target) -> None:
    t = target
    cid = t.cluster["id"]
    ledger_before = t.api.get("/account/ledger").json()["entries"]
    key = {"Idempotency-Key": "extend-" + secrets.token_hex(4)}
    first = t.api.post("/gpu-clusters/input-web/extend", json={"hours": "1.5"}, headers=key)
    assert first.status_code == 200, first.text
    again = t.api.post(f"/gpu-clusters/{cid}/extend", json={"hours": "1.5"}, headers=key)
    assert again.status_code == 200, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    # And the other way round, for an action without a body.
    key = {"Idempotency-Key": "restart-" + secrets.token_hex(4)}
    first = t.api.post(f"/gpu-clusters/{cid}/restart", headers=key)
    assert first.status_code == 200, first.text
    again = t.api.post("/gpu-clusters/input-web/restart", headers=key)
    assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
    # The same key on another cluster or with another body is still a conflict.
    other = t.api.post(
        f"/gpu-clusters/{cid}/extend",
        json={"hours": "2"},
        headers={"Idempotency-Key": key["Idempotency-Key"]},
    )
    is_error(other, 409, "conflict")
    # One extension's hold was placed, not two.
    entries = t.api.get("/account/ledger").json()["entries"]
    new = entries[: len(entries) - len(ledger_before)]
    assert sum(1 for e in new if e["kind"] == "hold") == 1, new
