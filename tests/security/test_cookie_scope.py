"""The console-session cookie opens service URLs only (issue: "the cookie opens
service URLs only"), against a real `ecolink serve`:

- every API route and WebSocket answers 401 to the cookie alone, in every form a
  Cookie header can carry it, while the same cookie opens the service URL;
- only an API key mints a session;
- every service-URL answer carries `Content-Security-Policy: sandbox ...` without
  `allow-same-origin`;
- a cookie-authenticated WebSocket upgrade from a foreign or opaque `Origin` is
  refused; a key-authenticated one is not (a key is never ambient);
- the separate service origin (`--service-domain`): one host name per cluster that
  serves the cluster at its root with a relaxed sandbox.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support.edge import assert_sandboxed, is_error, launch_service


@dataclass
class Edge:
    srv: Any
    key: str
    api: httpx.Client
    cluster: dict[str, Any]
    replica: str
    sid: str
    cookie: str


@pytest.fixture(scope="module")
def edge(shared_ecolink_server: Any) -> Iterator[Edge]:
    srv = shared_ecolink_server
    key = srv.new_account("edge-" + secrets.token_hex(3), "1000")
    api = srv.client(key)
    cluster = launch_service(api, "edge-web")
    replica = cluster["replica_states"][0]["name"]
    s = api.post(
        f"/gpu-clusters/edge-web/replicas/{replica}/sessions",
        json={"command": ["sh"], "tty": False},
    )
    assert s.status_code == 201, s.text
    r = api.post("/auth/session")
    assert r.status_code == 201, r.text
    cookie = r.cookies["eco_session"]
    api.cookies.clear()  # the key alone from here on
    yield Edge(srv, key, api, cluster, replica, s.json()["id"], cookie)
    api.close()


def _cookie_forms(token: str) -> dict[str, list[tuple[str, str]]]:
    return {
        "alone": [("Cookie", f"eco_session={token}")],
        "semicolon": [("Cookie", f"theme=dark; eco_session={token}; lang=en")],
        "comma": [("Cookie", f"theme=dark, eco_session={token}")],
        "space": [("Cookie", f"theme=dark eco_session={token}")],
        "quoted": [("Cookie", f'eco_session="{token}"')],
        "repeated": [("Cookie", "theme=dark"), ("Cookie", f"eco_session={token}")],
    }


def _fill(e: Edge, path: str) -> str:
    return (
        path.replace("{id}", e.cluster["id"])
        .replace("{replica}", e.replica)
        .replace("{sid}", e.sid)
    )


def test_the_cookie_alone_opens_no_api_route(edge: Edge) -> None:
    e = edge
    doc = httpx.get(e.srv.url + "/openapi.json").json()
    ops = [
        (m.upper(), p)
        for p, item in doc["paths"].items()
        for m in item
        if m in ("get", "post", "put", "delete", "patch")
    ]
    open_ops = {("GET", "/healthz"), ("GET", "/openapi.json")}
    assert len(ops) >= 20
    before = e.api.get("/gpu-clusters/edge-web").json()["replicas"]
    checked = 0
    with httpx.Client(base_url=e.srv.url, timeout=15) as anon:
        for method, path in ops:
            if (method, path) in open_ops:
                continue
            for form, headers in _cookie_forms(e.cookie).items():
                r = anon.request(
                    method,
                    _fill(e, path),
                    headers=headers,
                    json={"replicas": 3} if method in ("POST", "PUT") else None,
                )
                assert r.status_code == 401, (form, method, path, r.status_code, r.text)
                is_error(r, 401, "unauthenticated")
                checked += 1
        # The same cookie, in each of those forms, opens the service URL.
        for form, headers in _cookie_forms(e.cookie).items():
            r = anon.get(f"/gpu-clusters/{e.cluster['id']}/service/who", headers=headers)
            assert r.status_code == 200, (form, r.text)
            sent = {k.lower(): v for k, v in r.json()["headers"]}
            assert e.cookie not in json.dumps(r.json()), form
            assert "eco_session" not in sent.get("cookie", ""), (form, sent)
    assert checked >= 20 * 6
    # Nothing a refused request carried was applied.
    assert e.api.get("/gpu-clusters/edge-web").json()["replicas"] == before


def test_the_cookie_alone_opens_no_api_websocket(edge: Edge) -> None:
    e = edge
    paths = [
        "/watch",
        f"/gpu-clusters/{e.cluster['id']}/replicas/{e.replica}/exec?command=true",
        f"/gpu-clusters/{e.cluster['id']}/sessions/{e.sid}/attach",
    ]
    for path in paths:
        for form, headers in _cookie_forms(e.cookie).items():
            with pytest.raises(InvalidStatus) as exc:
                connect(
                    e.srv.ws_url(path),
                    additional_headers=headers,
                    subprotocols=["v5.channel.k8s.io"],  # type: ignore[list-item]
                    open_timeout=10,
                    proxy=None,
                )
            resp = exc.value.response
            assert resp.status_code == 401, (path, form, resp.status_code)
            assert json.loads(resp.body or b"{}")["error"]["code"] == "unauthenticated"
    # The key opens them.
    with connect(
        e.srv.ws_url("/watch"),
        additional_headers={"Authorization": f"Bearer {e.key}"},
        open_timeout=10,
        proxy=None,
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"


def test_only_an_api_key_mints_a_session(edge: Edge) -> None:
    e = edge
    with httpx.Client(base_url=e.srv.url, timeout=15) as anon:
        for form, headers in _cookie_forms(e.cookie).items():
            r = anon.post("/auth/session", headers=headers)
            is_error(r, 401, "unauthenticated")
            assert "set-cookie" not in r.headers, form
        # A wrong key beside a good cookie is no better.
        r = anon.post(
            "/auth/session",
            headers={
                "Cookie": f"eco_session={e.cookie}",
                "Authorization": "Bearer eco_" + "x" * 43,
            },
        )
        is_error(r, 401, "unauthenticated")
    # Two different session tokens in one request authenticate nothing (no guessing).
    other = e.api.post("/auth/session").cookies["eco_session"]
    e.api.cookies.clear()
    with httpx.Client(base_url=e.srv.url, timeout=15) as anon:
        service = f"/gpu-clusters/{e.cluster['id']}/service/"
        assert anon.get(service, headers={"Cookie": f"eco_session={other}"}).status_code == 200
        r = anon.get(service, headers={"Cookie": f"eco_session={other}; eco_session={e.cookie}"})
        is_error(r, 401, "unauthenticated")


def test_service_answers_are_sandboxed(edge: Edge) -> None:
    e = edge
    cid = e.cluster["id"]
    with httpx.Client(base_url=e.srv.url, timeout=15) as anon:
        cookie = {"Cookie": f"eco_session={e.cookie}"}
        ok = anon.get(f"/gpu-clusters/{cid}/service/page.html", headers=cookie)
        assert ok.status_code == 200 and ok.json()["cluster_id"] == cid
        assert_sandboxed(ok)
        posted = anon.post(f"/gpu-clusters/{cid}/service/echo", headers=cookie, content=b"x" * 10)
        assert posted.status_code == 200 and posted.content == b"x" * 10
        assert_sandboxed(posted)
        redirect = anon.get(f"/gpu-clusters/{cid}/service", headers=cookie)
        assert redirect.status_code == 307
        assert_sandboxed(redirect)
        # ecolink's own refusals on a service URL are sandboxed too.
        assert_sandboxed(anon.get(f"/gpu-clusters/{cid}/service/"))  # 401
        missing = anon.get("/gpu-clusters/gc_00000000deadbeef/service/", headers=cookie)
        assert missing.status_code == 404
        assert_sandboxed(missing)
        # API answers are not service answers: no sandbox there.
    assert "content-security-policy" not in e.api.get("/account").headers


def test_cookie_websockets_check_origin(edge: Edge) -> None:
    e = edge
    url = e.srv.ws_url(f"/gpu-clusters/{e.cluster['id']}/service/ws")
    cookie = {"Cookie": f"eco_session={e.cookie}"}
    for origin in (
        "http://evil.example",
        "null",
        e.srv.url.replace("127.0.0.1", "localhost"),
        e.srv.url + ".evil.example",
        "http://127.0.0.1:1",
    ):
        with pytest.raises(InvalidStatus) as exc:
            connect(
                url,
                additional_headers={**cookie, "Origin": origin},
                open_timeout=10,
                proxy=None,
                origin=None,
            )
        resp = exc.value.response
        assert resp.status_code == 403, (origin, resp.status_code)
        assert json.loads(resp.body or b"{}")["error"]["code"] == "forbidden_origin"
    # Its own origin (or no Origin: not a browser) is fine, and the echo works.
    for headers in (
        {**cookie, "Origin": e.srv.url},
        cookie,
        # A key is never sent by a browser on its own: no Origin check.
        {"Authorization": f"Bearer {e.key}", "Origin": "http://evil.example"},
    ):
        with connect(url, additional_headers=headers, open_timeout=10, proxy=None) as ws:
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"


def test_separate_service_origin(ecolink_server_factory: Any) -> None:
    srv = ecolink_server_factory(extra_args=["--service-domain", "Svc.Test."])
    with srv.client() as api:
        cluster = launch_service(api, "origin-web")
        cid = cluster["id"]
        host = f"{cid.replace('_', '-')}.svc.test"
        assert cluster["endpoint"]["url"] == f"http://{host}:{srv.port}/"
        minted = api.post("/auth/session", headers={"Host": f"svc.test:{srv.port}"})
        assert minted.status_code == 201
        assert "domain=svc.test" in minted.headers["set-cookie"].lower()
        # (Set for svc.test: httpx keeps it for no 127.0.0.1 request, so read it here.)
        cookie = minted.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    with httpx.Client(base_url=srv.url, timeout=15) as anon:
        r = anon.get(
            "/some/page?q=1",
            headers={"Host": f"{host}:{srv.port}", "Cookie": f"eco_session={cookie}"},
        )
        assert r.status_code == 200, r.text
        info = r.json()
        assert info["cluster_id"] == cid and info["path"] == "/some/page"
        sent = {k.lower(): v for k, v in info["headers"]}
        assert sent["x-forwarded-prefix"] == "" and "eco_session" not in sent.get("cookie", "")
        assert_sandboxed(r, same_origin=True)
        # On the service origin every path is the replica's, API paths included.
        r = anon.get("/account", headers={"Host": host, "Authorization": f"Bearer {srv.key}"})
        assert r.status_code == 200 and r.json()["path"] == "/account", r.text
        is_error(anon.get("/", headers={"Host": host}), 401, "unauthenticated")
        # An unknown cluster's host name: 404, as for its service URL.
        r = anon.get(
            "/",
            headers={"Host": "gc-00000000deadbeef.svc.test", "Authorization": f"Bearer {srv.key}"},
        )
        is_error(r, 404, "not_found")
        # The API host itself still serves the API (and sandboxes the path form).
        assert (
            anon.get("/account", headers={"Authorization": f"Bearer {srv.key}"}).json()["name"]
            == "test"
        )
        r = anon.get(f"/gpu-clusters/{cid}/service/", headers={"Cookie": f"eco_session={cookie}"})
        assert r.status_code == 200
        assert_sandboxed(r)
    # Cookie WebSockets from the cluster's own origin pass, others do not.
    # (The URL names the service host; the socket goes to the server's own address.)
    ws_url = f"ws://{host}:{srv.port}/ws"
    base = {"Cookie": f"eco_session={cookie}"}
    sock = socket.create_connection(("127.0.0.1", srv.port))
    with connect(
        ws_url,
        sock=sock,
        additional_headers={**base, "Origin": f"http://{host}:{srv.port}"},
        open_timeout=10,
        proxy=None,
    ) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
    sock = socket.create_connection(("127.0.0.1", srv.port))
    with pytest.raises(InvalidStatus) as exc:
        connect(
            ws_url,
            sock=sock,
            additional_headers={**base, "Origin": "http://evil.example"},
            open_timeout=10,
            proxy=None,
        )
    sock.close()
    assert exc.value.response.status_code == 403
