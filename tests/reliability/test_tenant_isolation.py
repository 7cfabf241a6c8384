"""Tenant isolation and auth, for every route of the OpenAPI document plus exec,
session attach, watch and the public service URL:

- no credentials, a wrong key, a revoked key, a wrong or ended console session: 401
  (api.md's body), whatever the request carries;
- another account's key: 404 with VALID bodies (so validation cannot hide a leak),
  nothing changes, and no answer or watch frame carries the other account's cluster
  names, ids, session ids or money figures;
- the service URL never forwards `Authorization` or the `eco_session` cookie;
- the console session cookie is HttpOnly and SameSite=Strict;
- keys and session tokens never appear in the backend's log output (debug level,
  access log on);
- the embedded backend listens on loopback only; its state directory and key file
  are readable by the user alone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.reliability import (
    V5,
    RawWS,
    check_money,
    wait_for,
    ws_connect,
)

# Answers the replica: the request head it received, also printed to its log (so that
# a WebSocket upgrade that goes nowhere still shows what reached the replica).
HEAD_ECHO = r"""
import os, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(64)
while True:
    c, _ = s.accept(); c.settimeout(5); data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk: break
            data += chunk
    except OSError: pass
    head = data.split(b"\r\n\r\n")[0]
    if head:
        print("HEAD " + head.decode("latin-1").replace("\r\n", " | "), flush=True)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(head) + head)
    c.close()
"""

LAUNCH = {
    "region": "us-east",
    "gpu_type": "L40S",
    "gpu_count": 1,
    "replicas": 2,
    "image": "busybox:1.36",
}


def _head_echo_command() -> str:
    from ecolink.runtime.local.users import replica_python

    code = base64.b64encode(HEAD_ECHO.encode()).decode()
    # Replicas run under their own uid: an interpreter they can reach.
    return f"exec {replica_python()} -c \"import base64; exec(base64.b64decode('{code}'))\""


class Tenants:
    """Account A (the victim, with distinctive figures) and B (the neighbour)."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self.key_a = srv.new_account("alpha-tenant", "7777.123457")
        self.key_b = srv.new_account("bravo-tenant", "4242.654321")
        self.key_revoked = srv.new_account("revoked-tenant", "1")
        r = srv.cli("keys", "revoke", self.key_revoked)
        assert r.returncode == 0, r.stderr
        self.a = srv.client(self.key_a)
        self.b = srv.client(self.key_b)
        launched = self.a.post(
            "/gpu-clusters",
            json={
                **LAUNCH,
                "name": "secret-alpha-cluster",
                "estimated_duration_hours": "3.14159",
                "expose": {"port": 8080},
            },
        )
        assert launched.status_code == 201, launched.text
        self.cluster = launched.json()
        echo = self.a.post(
            "/gpu-clusters",
            json={
                **LAUNCH,
                "name": "secret-alpha-headers",
                "estimated_duration_hours": "2.71828",
                "startup_command": _head_echo_command(),
                "expose": {"port": 9000},
            },
        )
        assert echo.status_code == 201, echo.text
        self.echo = echo.json()
        for name in ("secret-alpha-cluster", "secret-alpha-headers"):
            wait_for(
                lambda n=name: self.a.get(f"/gpu-clusters/{n}").json()["ready_replicas"] == 2,
                30,
                what=f"{name} ready",
            )
        self.replica = self.cluster["replica_states"][0]["name"]
        s = self.a.post(
            f"/gpu-clusters/secret-alpha-cluster/replicas/{self.replica}/sessions",
            json={"command": ["sh"], "tty": False},
        )
        assert s.status_code == 201, s.text
        self.sid = s.json()["id"]
        cookie = self.a.post("/auth/session")
        assert cookie.status_code == 201
        self.cookie_a = cookie.cookies["eco_session"]
        self.cookie_set = cookie.headers.get_list("set-cookie")
        cookie_b = self.b.post("/auth/session")
        self.cookie_b = cookie_b.cookies["eco_session"]
        own = self.b.post(
            "/gpu-clusters",
            json={
                **LAUNCH,
                "name": "bravo-own",
                "estimated_duration_hours": 1,
                "startup_command": "sleep 3600",
            },
        )
        assert own.status_code == 201, own.text
        self.secrets = self._secrets()

    def _secrets(self) -> set[str]:
        """Strings that identify A's data: names, ids, the session, A's money."""
        acct = self.a.get("/account").json()
        out = {
            self.key_a,
            self.cookie_a,
            self.sid,
            acct["id"],
            acct["name"],
            acct["balance"],
            acct["held"],
            acct["available"],
        }
        for c in self.a.get("/gpu-clusters").json()["clusters"]:
            out |= {c["id"], c["name"], c["cost"]["hold"], c["cost"]["hold_remaining"]}
            out |= {r["name"] for r in c["replica_states"]}
        for e in self.a.get("/account/ledger").json()["entries"]:
            out |= {e["balance_after"], e["held_after"]}
        # What B sees of its own cannot identify A (a "0.000000" is everybody's).
        b_own = set(
            re.findall(
                r"\d+\.\d{6}",
                self.b.get("/account/ledger").text
                + self.b.get("/gpu-clusters").text
                + self.b.get("/account").text,
            )
        )
        return {s for s in out if s and s not in b_own}

    def leaks(self, text: str, sent: tuple[str, ...] = ()) -> list[str]:
        """A's strings in `text`, leaving out what the request itself carried."""
        for s in sent:
            text = text.replace(s, "<sent>")
        return sorted(s for s in self.secrets if s in text)

    def a_state(self) -> Any:
        clusters = self.a.get("/gpu-clusters").json()["clusters"]
        stable = [
            {k: c[k] for k in ("id", "status", "replicas", "expires_at", "endpoint")}
            for c in clusters
        ]
        return (
            stable,
            self.a.get("/account/ledger").json()["entries"],
            self.a.get("/gpu-clusters/secret-alpha-cluster/sessions").json(),
        )


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    from support.server import EcolinkServer

    srv = EcolinkServer(
        tmp_path_factory.mktemp("tenants"), extra_args=["--log-level", "debug", "--access-log"]
    )
    srv.start()
    t = Tenants(srv)
    try:
        yield t
    finally:
        t.a.close()
        t.b.close()
        srv.close()


def _operations(srv: Any) -> list[tuple[str, str]]:
    doc = httpx.get(srv.url + "/openapi.json").json()
    return [
        (m.upper(), p)
        for p, ops in doc["paths"].items()
        for m in ops
        if m in ("get", "post", "put", "delete", "patch")
    ]


# A valid body for every operation that takes one (a new route without an entry here
# fails the tests below, so that it gets checked too).
VALID_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/gpu-clusters"): {
        **LAUNCH,
        "name": "bravo-second",
        "estimated_duration_hours": 1,
        "startup_command": "sleep 3600",
    },
    ("POST", "/gpu-clusters/{id}/scale"): {"replicas": 3},
    ("POST", "/gpu-clusters/{id}/extend"): {"hours": 1},
    ("PUT", "/gpu-clusters/{id}/endpoint"): {"port": 8081},
    ("POST", "/gpu-clusters/{id}/replicas/{replica}/sessions"): {"command": ["true"], "tty": False},
}
OPEN = {("GET", "/healthz")}


def _fill(t: Tenants, path: str, by_name: bool = False) -> str:
    return (
        path.replace("{id}", t.cluster["name"] if by_name else t.cluster["id"])
        .replace("{replica}", t.replica)
        .replace("{sid}", t.sid)
    )


def test_every_route_without_valid_credentials_is_401(tenants: Tenants) -> None:
    t = tenants
    srv = t.srv
    ops = _operations(srv)
    assert len(ops) >= 20
    ended = t.a.post("/auth/session").cookies["eco_session"]
    assert (
        t.a.request(
            "DELETE", "/auth/session", headers={"Cookie": f"eco_session={ended}"}
        ).status_code
        == 204
    )
    creds: dict[str, dict[str, str]] = {
        "none": {},
        "wrong key": {"Authorization": "Bearer eco_" + "x" * 43},
        "revoked key": {"Authorization": f"Bearer {t.key_revoked}"},
        "not bearer": {"Authorization": f"Basic {t.key_a}"},
        "bare key": {"Authorization": t.key_a},
        "wrong cookie": {"Cookie": "eco_session=" + "y" * 43},
        "ended cookie": {"Cookie": f"eco_session={ended}"},
        "key as cookie": {"Cookie": f"eco_session={t.key_a}"},
    }
    before = t.a_state()
    checked = 0
    with httpx.Client(base_url=srv.url, timeout=15) as anon:
        for method, path in ops:
            if (method, path) in OPEN:
                continue
            url = _fill(t, path)
            for label, headers in creds.items():
                for body in (VALID_BODIES.get((method, path)), b"{not json", None):
                    kwargs: dict[str, Any] = {"headers": headers}
                    if isinstance(body, bytes):
                        kwargs["content"] = body
                    elif body is not None:
                        kwargs["json"] = body
                    r = anon.request(method, url, **kwargs)
                    assert r.status_code == 401, (label, method, path, r.status_code, r.text)
                    assert r.json() == {
                        "error": {
                            "code": "unauthenticated",
                            "message": (r.json()["error"]["message"]),
                        }
                    }, r.text
                    assert not t.leaks(r.text), (method, path, t.leaks(r.text))
                    checked += 1
    assert t.a_state() == before, "a refused request changed something"
    assert checked >= 20 * len(creds) * 3


def test_other_accounts_get_404_and_learn_nothing(tenants: Tenants) -> None:
    t = tenants
    ops = _operations(t.srv)
    missing = [
        op
        for op in ops
        if op[0] in ("POST", "PUT")
        and op not in VALID_BODIES
        and op[1] not in ("/auth/session",)
        and not op[1].endswith(("/stop", "/resume", "/restart"))
    ]
    assert not missing, f"give these operations a valid body in VALID_BODIES: {missing}"
    before = t.a_state()
    seen: list[str] = []
    for method, path in ops:
        body = VALID_BODIES.get((method, path))
        for by_name in (False, True):
            url = _fill(t, path, by_name)
            # B's console cookie opens no API route (tests/security checks that), so
            # B's key is the one way in.
            clients = [(t.b, "key")]
            for client, label in clients:
                r = client.request(method, url, json=body)
                seen.append(f"{method} {path}")
                sent = tuple(
                    x for x in (t.cluster["id"], t.cluster["name"], t.replica, t.sid) if x in url
                )
                assert not t.leaks(r.text, sent), (label, method, url, t.leaks(r.text, sent))
                if "{id}" in path:
                    assert r.status_code == 404, (label, method, url, r.status_code, r.text)
                    assert r.json()["error"]["code"] == "not_found", r.text
                    # Indistinguishable from a cluster that never existed: no oracle.
                    ghost_ref = "gc_00000000deadbeef" if not by_name else "never-existed"
                    ghost = client.request(
                        method,
                        url.replace(t.cluster["name"] if by_name else t.cluster["id"], ghost_ref),
                        json=body,
                    )
                    assert ghost.status_code == 404, ghost.text
                    assert _masked(r.text, sent) == _masked(ghost.text, (ghost_ref,)), (
                        r.text,
                        ghost.text,
                    )
                elif (method, path) == ("POST", "/gpu-clusters"):
                    assert r.status_code == 201, r.text
                    assert t.b.delete(f"/gpu-clusters/{r.json()['id']}").status_code == 200
                else:
                    assert r.status_code < 300, (label, method, path, r.status_code, r.text)
    # Names are per account: a third account may take A's names, and learns nothing.
    with t.srv.client(t.srv.new_account("charlie-tenant", "100")) as c:
        for name in (t.cluster["name"], t.echo["name"]):
            r = c.post(
                "/gpu-clusters", json={**VALID_BODIES[("POST", "/gpu-clusters")], "name": name}
            )
            assert r.status_code == 201, r.text
            assert not t.leaks(r.text, (name, name + "-0", name + "-1")), t.leaks(r.text)
            assert c.delete(f"/gpu-clusters/{name}").status_code == 200
    # The ledger and the cluster filters of B never reach A's data either.
    for params in (
        {"cluster_id": t.cluster["id"]},
        {"cluster_id": t.cluster["name"]},
        {"cluster_id": t.cluster["id"], "format": "csv"},
    ):
        r = t.b.get("/account/ledger", params=params)
        assert r.status_code == 404, r.text
        assert not t.leaks(r.text, (params["cluster_id"],)), r.text
    for status in ("running", "pending,running,stopped,terminated"):
        r = t.b.get("/gpu-clusters", params={"status": status})
        assert r.status_code == 200 and not t.leaks(r.text), t.leaks(r.text)
    r = t.b.get("/account/ledger", params={"format": "csv", "limit": 1000})
    assert r.status_code == 200 and not t.leaks(r.text)
    assert t.a_state() == before, "B changed A's clusters, ledger or sessions"
    check_money(t.a, where="A after B's attempts")
    check_money(t.b, where="B")
    assert len(set(seen)) == len(ops)


def _masked(text: str, sent: tuple[str, ...]) -> str:
    for x in sent:
        text = text.replace(x, "<ref>")
    return text


def _cookie_client(t: Tenants, cookie: str) -> httpx.Client:
    return httpx.Client(base_url=t.srv.url, timeout=15, headers={"Cookie": f"eco_session={cookie}"})


def test_websockets_and_service_url_refuse_strangers(tenants: Tenants) -> None:
    t = tenants
    srv = t.srv
    paths = {
        "exec": f"/gpu-clusters/{t.cluster['id']}/replicas/{t.replica}/exec?command=id",
        "attach": f"/gpu-clusters/{t.cluster['id']}/sessions/{t.sid}/attach",
        "watch": "/watch",
        "service ws": f"/gpu-clusters/{t.cluster['id']}/service/ws",
    }
    for name, path in paths.items():
        protos = [V5] if name in ("exec", "attach") else None
        for label, key in (
            ("none", None),
            ("wrong", "eco_" + "z" * 43),
            ("revoked", t.key_revoked),
        ):
            raw = RawWS(srv.url, path, key=key, subprotocols=protos)
            body = raw.read_some(1.0, limit=4096)
            raw.abort()
            assert raw.status == 401, (name, label, raw.head)
            assert b"unauthenticated" in body and not t.leaks(body.decode("latin-1")), body
        if name != "watch":
            for by_name in (False, True):
                p = path.replace(t.cluster["id"], t.cluster["name"]) if by_name else path
                raw = RawWS(srv.url, p, key=t.key_b, subprotocols=protos)
                body = raw.read_some(1.0, limit=4096)
                raw.abort()
                assert raw.status == 404, (name, raw.head, body)
                sent = (t.cluster["name"] if by_name else t.cluster["id"], t.sid, t.replica)
                assert not t.leaks(body.decode("latin-1"), sent), body

    # The service URL over HTTP: 401 for strangers, 404 for B, the replica for A.
    base = f"/gpu-clusters/{t.cluster['id']}/service/"
    with httpx.Client(base_url=srv.url, timeout=15) as anon:
        for headers in (
            {},
            {"Authorization": "Bearer eco_nope"},
            {"Authorization": f"Bearer {t.key_revoked}"},
            {"Cookie": "eco_session=nope"},
        ):
            for method in ("GET", "POST", "DELETE", "PATCH"):
                r = anon.request(method, base + "anything?x=1", headers=headers, content=b"{}")
                assert r.status_code == 401, (headers, method, r.text)
    for ref in (t.cluster["id"], t.cluster["name"]):
        r = t.b.get(f"/gpu-clusters/{ref}/service/")
        assert r.status_code == 404 and not t.leaks(r.text, (ref,)), r.text
        with _cookie_client(t, t.cookie_b) as cb:
            r = cb.get(f"/gpu-clusters/{ref}/service/")
            assert r.status_code == 404 and not t.leaks(r.text, (ref,)), r.text
    r = t.a.get(base)
    assert r.status_code == 200 and r.json()["cluster_id"] == t.cluster["id"], r.text


def test_watch_frames_never_cross_accounts(tenants: Tenants) -> None:
    t = tenants
    srv = t.srv
    frames_b: list[str] = []
    frames_a: list[str] = []
    with (
        ws_connect(srv.ws_url("/watch"), t.key_b) as wb,
        ws_connect(srv.ws_url("/watch"), t.key_a) as wa,
    ):
        # B asks to watch A's cluster by id and by name: it must get nothing of it.
        wb.send(
            json.dumps(
                {"type": "focus", "clusters": [t.cluster["id"], t.cluster["name"], "bravo-own"]}
            )
        )
        wa.send(json.dumps({"type": "focus", "clusters": [t.cluster["id"]]}))
        # A acts: cluster, account and event frames go out (to A).
        assert (
            t.a.post("/gpu-clusters/secret-alpha-cluster/extend", json={"hours": "0.5"}).status_code
            == 200
        )
        assert (
            t.a.post("/gpu-clusters/secret-alpha-cluster/scale", json={"replicas": 3}).status_code
            == 200
        )
        assert (
            t.a.post("/gpu-clusters/secret-alpha-cluster/scale", json={"replicas": 2}).status_code
            == 200
        )
        deadline = time.monotonic() + 6.5  # past one `summaries` round (every 5 s)
        while time.monotonic() < deadline:
            for ws, sink in ((wb, frames_b), (wa, frames_a)):
                with contextlib.suppress(TimeoutError):
                    sink.append(ws.recv(timeout=0.1))
    t.secrets = t._secrets()  # A's figures moved: scan for the new ones too
    kinds_b = {json.loads(f)["type"] for f in frames_b}
    kinds_a = {json.loads(f)["type"] for f in frames_a}
    assert {"snapshot", "summaries", "replicas"} <= kinds_b, kinds_b
    assert {"snapshot", "cluster", "event", "account", "summaries", "replicas"} <= kinds_a, kinds_a
    for f in frames_b:
        assert not t.leaks(f), (t.leaks(f), f[:300])
        frame = json.loads(f)
        if frame["type"] == "replicas":
            assert frame["cluster_id"] != t.cluster["id"], frame
    # The scan can fail: A's own feed is full of A's data.
    assert any(t.leaks(f) for f in frames_a)


def test_service_url_never_forwards_credentials(tenants: Tenants) -> None:
    t = tenants
    srv = t.srv
    base = f"/gpu-clusters/{t.echo['id']}/service/"
    cases = [
        {"Authorization": f"Bearer {t.key_a}", "Cookie": "a=1; eco_session=zzz; b=2"},
        {"Cookie": f"theme=dark; eco_session={t.cookie_a}"},
        {"Cookie": f"eco_session={t.cookie_a}"},
        {"Authorization": f"Bearer {t.key_a}", "X-Forwarded-For": "10.9.8.7"},
        {"Cookie": f"eco_session={t.cookie_a};other=x", "authorization": f"Bearer {t.key_a}"},
    ]
    heads = []
    for headers in cases:
        with httpx.Client(base_url=srv.url, timeout=15) as c:
            r = c.get(base + "path?q=1", headers=headers)
        if "Authorization" not in headers and "authorization" not in headers:
            assert r.status_code == 200, r.text  # the cookie alone authenticates
        assert r.status_code == 200, (headers, r.text)
        head = r.text
        heads.append(head)
        assert "GET /path?q=1 HTTP/1.1" in head, head
        low = head.lower()
        assert "authorization:" not in low, head
        assert "eco_session" not in low and t.key_a not in head and t.cookie_a not in head, head
    assert "cookie: a=1; b=2" in heads[0].lower(), heads[0]
    assert "cookie: theme=dark" in heads[1].lower(), heads[1]
    assert "\r\ncookie:" not in heads[2].lower(), heads[2]
    # A WebSocket upgrade through the service URL: the replica's log shows its head.
    with (
        contextlib.suppress(Exception),
        ws_connect(
            srv.ws_url(base + "ws-probe"),
            t.key_a,
            headers={"Cookie": f"eco_session={t.cookie_a}; keep=1"},
        ) as ws,
    ):
        ws.recv(timeout=2)

    def logged() -> str:
        text = ""
        for replica in (r["name"] for r in t.echo["replica_states"]):
            text += t.a.get(f"/gpu-clusters/{t.echo['id']}/replicas/{replica}/logs").text
        return text if "ws-probe" in text else ""

    log_text = wait_for(logged, 10, what="the upgrade reached the replica")
    probe = [line for line in log_text.splitlines() if "ws-probe" in line]
    assert probe and "upgrade: websocket" in probe[0].lower(), probe
    for line in probe:
        assert "authorization" not in line.lower() and "eco_session" not in line, line
        assert t.key_a not in line and t.cookie_a not in line, line
        assert "keep=1" in line, line


def test_console_session_cookie_flags(tenants: Tenants) -> None:
    t = tenants
    assert len(t.cookie_set) == 1, t.cookie_set
    parts = [p.strip() for p in t.cookie_set[0].split(";")]
    attrs = {p.split("=", 1)[0].lower(): (p.split("=", 1) + [""])[1] for p in parts[1:]}
    assert parts[0].startswith("eco_session=") and len(parts[0]) > len("eco_session=") + 20
    assert "httponly" in attrs, t.cookie_set
    assert attrs.get("samesite", "").lower() == "strict", t.cookie_set
    assert attrs.get("path") == "/", t.cookie_set
    assert int(attrs.get("max-age", "0")) <= 12 * 3600, t.cookie_set
    # The cookie is a credential of its own, never the key.
    assert t.key_a not in t.cookie_set[0]
    service = f"/gpu-clusters/{t.cluster['id']}/service/"
    with _cookie_client(t, t.cookie_a) as c:
        assert c.get(service).json()["cluster_id"] == t.cluster["id"]
        assert c.get("/account").status_code == 401  # the cookie opens service URLs only
        assert c.delete("/auth/session").status_code == 401
        # Ending it takes a key of the same account; B's key cannot end A's session.
        assert (
            t.b.delete("/auth/session", headers={"Cookie": f"eco_session={t.cookie_a}"}).status_code
            == 204
        )
        assert c.get(service).status_code == 200
        ended = t.a.delete("/auth/session", headers={"Cookie": f"eco_session={t.cookie_a}"})
        assert ended.status_code == 204
        gone = ended.headers.get("set-cookie", "")
        assert "eco_session=" in gone and ("max-age=0" in gone.lower() or "expires" in gone.lower())
        assert c.get(service).status_code == 401


def test_keys_and_tokens_never_in_logs(tenants: Tenants) -> None:
    # Runs after the tests above: their traffic (401s, 404s, WebSockets, the service
    # URL) went through this backend with the debug log and the access log on.
    t = tenants
    srv = t.srv
    with httpx.Client(base_url=srv.url, timeout=15) as c:
        for key in (t.key_a, t.key_revoked, "eco_" + "q" * 43):
            c.get("/account", headers={"Authorization": f"Bearer {key}"})
            c.post("/gpu-clusters", headers={"Authorization": f"Bearer {key}"}, content=b"{")
            c.get("/watch", headers={"Authorization": f"Bearer {key}"})
    time.sleep(0.5)
    log = srv.log_path.read_text(errors="replace")
    assert "GET /account" in log or "/account" in log, "the access log is not on"
    secrets = {t.key_a, t.key_b, t.key_revoked, srv.key, t.cookie_a, t.cookie_b}
    for s in secrets:
        assert s not in log, "a credential appears in the backend's log"
        # Nor the secret part of a key on its own.
        assert s.removeprefix("eco_")[8:] not in log
    assert not re.search(r"eco_[A-Za-z0-9_-]{30,}", log), "something key-shaped was logged"


# --------------------------------------------------------------------------- embedded


def _listening(pid: int) -> list[str]:
    """Local addresses of the TCP sockets `pid` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # LISTEN
                    addr_hex = f[1].split(":")[0]
                    raw = bytes.fromhex(addr_hex)
                    if v6:
                        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                        out.append(socket.inet_ntop(socket.AF_INET6, raw))
                    else:
                        out.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return out


def test_embedded_backend_is_loopback_only_and_private(tmp_path: Path) -> None:
    from ecotui import embedded

    state = tmp_path / "state"
    conn = embedded.ensure_backend(state)
    try:
        info = json.loads((state / "server.json").read_text())
        assert conn.url.startswith("http://127.0.0.1:"), conn.url
        addrs = _listening(int(info["pid"]))
        assert addrs, "found no listening socket"
        assert all(a in ("127.0.0.1", "::1") for a in addrs), addrs
        assert (
            httpx.get(
                conn.url + "/account", headers={"Authorization": f"Bearer {conn.key}"}
            ).status_code
            == 200
        )
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(state) == 0o700, oct(mode(state))
        assert mode(state / "dashboard.key") == 0o600, oct(mode(state / "dashboard.key"))
        for name in ("server.json", "backend.log", "embedded.lock"):
            assert mode(state / name) & 0o077 == 0, (name, oct(mode(state / name)))
        assert conn.key not in (state / "backend.log").read_text(errors="replace")
    finally:
        embedded.stop_backend(state)
    # Serving plain HTTP beyond loopback is refused outright.
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[2] / "backend"), os.environ.get("PYTHONPATH", "")]
        ),
    )
    import subprocess

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecolink",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "other"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "refusing" in r.stderr, (r.returncode, r.stderr)
