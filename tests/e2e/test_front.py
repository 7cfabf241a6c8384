"""The front that owns the listening socket, against a real `ecolink serve`: bad
framing refused on raw sockets, HTTP/1.0 and pipelining, the session cookie in every
form, headers of ours and of the replica's, revocation, slow clients, and how
requests are spread over replicas."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecolink.runtime.local.proc import _has_tty
from ecolink.runtime.local.users import replica_python
from support.e2e_helpers import all_ready, launch, wait_for
from support.server import serve_once

pytestmark = pytest.mark.timeout(180)


def _addr(base_url: str) -> tuple[str, int]:
    host, port = base_url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    return host, int(port)


def raw(base_url: str, blob: bytes, timeout: float = 5.0) -> bytes:
    """Send `blob` on a fresh connection and read until the server closes it."""
    s = socket.create_connection(_addr(base_url), timeout=timeout)
    try:
        s.sendall(blob)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of Content-Length framed answers."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(headers.get("content-length", len(rest)))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


@pytest.fixture
def svc(fresh_api: httpx.Client) -> dict[str, Any]:
    c = launch(fresh_api, "front", replicas=2, port=8080)
    return wait_for(fresh_api, c["id"], all_ready(2), what="2 ready replicas")


def _auth(api: httpx.Client) -> bytes:
    return f"Authorization: Bearer {api.account_key}\r\n".encode()  # type: ignore[attr-defined]


BAD = {
    "content-length and transfer-encoding": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding and content-length": b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "obs-fold": b"X-A: a\r\n  folded\r\n\r\n",
    "bare LF": b"X-A: a\nX-B: b\r\n\r\n",
    "bare CR": b"X-A: a\rX-B: b\r\n\r\n",
    "invalid chunk size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    "transfer coding not chunked": b"Transfer-Encoding: gzip\r\n\r\n",
    "oversized head": b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "two host lines": b"Host: other\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_framing_is_refused_with_400(
    shared_ecolink_server: Any, fresh_api: httpx.Client, svc: dict[str, Any], case: str
) -> None:
    for path in (f"/gpu-clusters/{svc['id']}/service/x", "/gpu-clusters"):
        blob = f"POST {path} HTTP/1.1\r\nHost: h\r\n".encode() + _auth(fresh_api) + BAD[case]
        answer = raw(shared_ecolink_server.url, blob)
        assert answer.startswith(b"HTTP/1.1 400 "), (case, path, answer[:200])
        status, headers, body = responses(answer)[0]
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "invalid_request"
    # Nothing of it reached a replica as a request of its own.
    r = fresh_api.get(f"/gpu-clusters/{svc['id']}/service/after")
    assert r.status_code == 200 and r.json()["path"] == "/after"


def test_http10_pipelining_and_error_keep_alive(
    shared_ecolink_server: Any, fresh_api: httpx.Client, svc: dict[str, Any]
) -> None:
    base = f"/gpu-clusters/{svc['id']}/service"
    auth = _auth(fresh_api)
    # Pipelined: service, API, an error, service again; answered in order on one connection.
    blob = (
        f"GET {base}/one HTTP/1.1\r\nHost: h\r\n".encode()
        + auth
        + b"\r\n"
        + b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
        + f"GET {base}/two HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        + f"POST {base}/three HTTP/1.1\r\nHost: h\r\n".encode()
        + auth
        + b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    answers = responses(raw(shared_ecolink_server.url, blob))
    assert [a[0] for a in answers] == [200, 200, 401, 200]
    assert json.loads(answers[0][2])["path"] == "/one"
    assert json.loads(answers[3][2])["path"] == "/three"
    assert json.loads(answers[3][2])["body_bytes"] == 5
    # HTTP/1.0: answered and closed.
    answer = raw(
        shared_ecolink_server.url, f"GET {base}/old HTTP/1.0\r\n".encode() + auth + b"\r\n"
    )
    status, _, body = responses(answer)[0]
    assert status == 200 and json.loads(body)["path"] == "/old"


def _session(api: httpx.Client) -> str:
    r = api.post("/auth/session")
    assert r.status_code == 201, r.text
    token = r.cookies.get("eco_session")
    assert token
    return token


@pytest.mark.parametrize("form", ["space", "comma", "semicolon", "repeated", "alone"])
def test_session_cookie_opens_and_never_reaches_the_replica(
    shared_ecolink_server: Any, fresh_api: httpx.Client, svc: dict[str, Any], form: str
) -> None:
    token = _session(fresh_api)
    cookie_lines = {
        "space": [f"theme=dark eco_session={token} lang=en"],
        "comma": [f"theme=dark, eco_session={token}, lang=en"],
        "semicolon": [f"theme=dark;eco_session={token};lang=en"],
        "repeated": ["theme=dark", f"eco_session={token}", "lang=en"],
        "alone": [f"eco_session={token}"],
    }[form]
    head = "".join(f"Cookie: {c}\r\n" for c in cookie_lines)
    blob = (
        f"GET /gpu-clusters/{svc['id']}/service/c HTTP/1.1\r\nHost: h\r\n{head}"
        "Connection: close\r\n\r\n"
    ).encode()
    status, _, body = responses(raw(shared_ecolink_server.url, blob))[0]
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert token not in json.dumps(seen)
    assert "eco_session" not in json.dumps(seen)
    cookies = [v for k, v in seen if k.lower() == "cookie"]
    if form != "alone":
        assert "theme=dark" in " ".join(cookies) and "lang=en" in " ".join(cookies)
    else:
        assert cookies == []


def test_forwarded_headers_replaced_and_path_as_sent(
    fresh_api: httpx.Client, svc: dict[str, Any]
) -> None:
    r = fresh_api.get(
        f"/gpu-clusters/{svc['id']}/service/a%2fb/c%2F?q=%2f",
        headers={
            "Forwarded": "for=6.6.6.6;proto=https",
            "X-Real-IP": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil",
            # A header the client's Connection names ends at the front like the rest.
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "hop-by-hop",
            "X-Kept": "end-to-end",
        },
    )
    assert r.status_code == 200
    info = r.json()
    assert info["path"] == "/a%2fb/c%2F" and info["query"] == "q=%2f"
    headers: dict[str, list[str]] = {}
    for k, v in info["headers"]:
        headers.setdefault(k.lower(), []).append(v)
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["forwarded"] == [
        f'for="127.0.0.1";proto=http;host="{fresh_api.base_url.netloc.decode()}"'
    ]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [fresh_api.base_url.netloc.decode()]
    assert "6.6.6.6" not in json.dumps(info["headers"])
    assert headers["x-kept"] == ["end-to-end"] and "x-hop" not in headers


COOKIE_REPLICA = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
prefix = sys.argv[1]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        for c in ("eco_session=planted; Path=/", "ECO_SESSION=planted2",
                  "wide=1; Path=/", "other=1; Path=/gpu-clusters/", "dom=1; Domain=example.com",
                  "plain=1", "inside=1; Path=" + prefix + "/x", "exact=1; Path=" + prefix):
            self.send_header("Set-Cookie", c)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def test_replica_set_cookie_scoped_to_the_service(
    fresh_api: httpx.Client, request: pytest.FixtureRequest
) -> None:
    # Replicas may run under a uid of their own: the script and the interpreter must
    # be where any uid can read them (the test's own tmp_path is private).
    shared = Path(tempfile.mkdtemp(prefix="ecolink-cookies-"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o755)
    script = shared / "cookies.py"
    script.write_text(COOKIE_REPLICA)
    script.chmod(0o644)
    c = launch(
        fresh_api,
        "cookies",
        replicas=2,
        port=8080,
        command=f"{replica_python()} {script} /gpu-clusters/cookies/service",
    )
    wait_for(fresh_api, c["id"], all_ready(2))
    for ref in ("cookies", c["id"]):
        for _ in range(50):  # the replica is ready once its process runs: wait for it to listen
            r = fresh_api.get(f"/gpu-clusters/{ref}/service/")
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.status_code == 200 and r.content == b"ok"
        names = sorted(v.split("=", 1)[0] for k, v in r.headers.multi_items() if k == "set-cookie")
        assert names == ["exact", "inside", "plain"]


def test_new_key_works_at_once_and_revocation_is_quick(
    shared_ecolink_server: Any, fresh_api: httpx.Client, svc: dict[str, Any]
) -> None:
    srv = shared_ecolink_server
    url = f"{srv.url}/gpu-clusters/{svc['id']}/service/k"
    out = srv.cli("keys", "create", "--account", _account_name(srv, fresh_api.account_key)).stdout  # type: ignore[attr-defined]
    key = next(w for w in out.split() if w.startswith("eco_"))
    with httpx.Client() as c:
        assert c.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        session = _session(
            httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"})
        )
        srv.cli("keys", "revoke", key[:12])
        t0 = time.monotonic()
        while c.get(url, headers={"Authorization": f"Bearer {key}"}).status_code != 401:
            assert time.monotonic() - t0 < 1.0, "a revoked key still opens the service URL"
        # The account's other key keeps working.
        assert (
            c.get(url, headers={"Authorization": f"Bearer {fresh_api.account_key}"}).status_code
            == 200
        )  # type: ignore[attr-defined]
        del session


def _account_name(srv: Any, key: str) -> str:
    store = srv.store()
    try:
        acct = store.account_for_key(key)
        assert acct is not None
        return str(acct.name)
    finally:
        store.close()


def test_least_outstanding_avoids_the_busy_replica(ecolink_server_factory: Any) -> None:
    # One front process: outstanding requests are counted per process.
    srv = ecolink_server_factory(extra_args=["--workers", "1"])
    fresh_api = srv.client()
    c = launch(fresh_api, "lor", replicas=2, port=8080)
    svc = wait_for(fresh_api, c["id"], all_ready(2))
    base = f"/gpu-clusters/{svc['id']}/service"
    with fresh_api.stream("GET", f"{base}/stream?chunks=30&delay=0.1") as long:
        lines = long.iter_lines()  # kept: a dropped iterator closes the answer
        busy = next(lines).split()[-1]
        seen = [fresh_api.get(f"{base}/quick").json()["replica"] for _ in range(6)]
        assert busy not in seen and len(set(seen)) == 1
    # Once the front has seen the stream go (its client closed it), turns come back
    # to both.
    again: set[str] = set()
    deadline = time.monotonic() + 10
    while len(again) < 2 and time.monotonic() < deadline:
        again.add(fresh_api.get(f"{base}/quick").json()["replica"])
    assert again == {"lor-0", "lor-1"}


def test_round_robin_option_and_slow_clients(ecolink_server_factory: Any) -> None:
    srv = ecolink_server_factory(
        extra_args=["--load-balancing", "round-robin", "--head-timeout", "2", "--workers", "2"]
    )
    api = srv.client()
    c = launch(api, "rr", replicas=2, port=8080)
    wait_for(api, c["id"], all_ready(2))
    base = f"/gpu-clusters/{c['id']}/service"
    with api.stream("GET", f"{base}/stream?chunks=30&delay=0.1") as long:
        lines = long.iter_lines()  # kept: a dropped iterator closes the answer
        busy = next(lines).split()[-1]
        seen = [api.get(f"{base}/quick").json()["replica"] for _ in range(6)]
        # Round-robin takes turns whatever each replica is doing (least-outstanding
        # would send none to the busy one). Not exactly 3 each: two fronts keep a
        # turn each, and a replica whose readiness flickers on a busy machine leaves
        # the rotation for a moment.
        assert seen.count(busy) >= 2 and len(seen) - seen.count(busy) >= 2, seen
    # 500 connections with incomplete heads, and one that sends nothing.
    host, port = _addr(srv.url)
    socks = []
    for _ in range(500):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        socks.append(s)
    quiet = socket.create_connection((host, port), timeout=10)
    t0 = time.monotonic()
    r = httpx.get(srv.url + "/healthz", timeout=5)
    healthz_s = time.monotonic() - t0
    assert r.status_code == 200 and healthz_s < 1.0
    deadline = time.monotonic() + 40
    answers = []
    for s in [*socks, quiet]:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        answers.append(data)
        s.close()
    assert time.monotonic() < deadline
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[:-1])
    assert answers[-1] in (b"",) or answers[-1].startswith(b"HTTP/1.1 408 ")
    # The server is still whole.
    assert api.get(f"{base}/after").status_code == 200
    api.close()


def test_traffic_per_replica_on_the_api_the_watch_and_metrics(
    shared_ecolink_server: Any, fresh_api: httpx.Client, svc: dict[str, Any]
) -> None:
    base = f"/gpu-clusters/{svc['id']}/service"
    for _ in range(20):
        assert fresh_api.get(f"{base}/t").status_code == 200
    # Counters reach the control plane within a second or two (each front reports
    # once a second, the view samples once a second).
    deadline = time.monotonic() + 15
    while True:
        replicas = fresh_api.get(f"/gpu-clusters/{svc['id']}/replicas").json()["replicas"]
        traffic = [r["traffic"] for r in replicas]
        done = all(t for t in traffic) and sum(t["statuses"]["2xx"] for t in traffic) >= 20
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert sum(t["statuses"]["2xx"] for t in traffic) == 20
    assert all(t["path"] == "local" and t["in_flight"] == 0 for t in traffic)
    assert all(t["latency_p50_ms"] is not None for t in traffic)
    cluster = fresh_api.get(f"/gpu-clusters/{svc['id']}").json()
    assert cluster["traffic"]["requests_per_s"] > 0 and cluster["traffic"]["path"] == "local"
    metrics = fresh_api.get("/metrics").text
    lines = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith("ecolink_service_requests_total{")
        and 'class="2xx"' in ln
        and svc["id"] in ln
    ]
    assert sum(float(ln.rsplit(" ", 1)[1]) for ln in lines) == 20
    # Another account sees none of it.
    other = shared_ecolink_server.new_account("metrics-other", "10")
    r = httpx.get(
        shared_ecolink_server.url + "/metrics", headers={"Authorization": f"Bearer {other}"}
    )
    assert r.status_code == 200 and svc["id"] not in r.text
    assert httpx.get(shared_ecolink_server.url + "/metrics").status_code == 401


def test_cookie_websocket_needs_our_origin(
    shared_ecolink_server: Any, fresh_api: httpx.Client, svc: dict[str, Any]
) -> None:
    token = _session(fresh_api)
    host = fresh_api.base_url.netloc.decode()
    path = f"/gpu-clusters/{svc['id']}/service/ws"

    def upgrade(origin: str | None) -> bytes:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Cookie: eco_session={token}\r\n"
        )
        if origin is not None:
            head += f"Origin: {origin}\r\n"
        s = socket.create_connection(_addr(shared_ecolink_server.url), timeout=5)
        s.sendall((head + "\r\n").encode())
        data = s.recv(4096)
        s.close()
        return data

    assert upgrade("https://evil.example").startswith(b"HTTP/1.1 403 ")
    assert upgrade(f"http://{host}").startswith(b"HTTP/1.1 101 ")
    assert upgrade(None).startswith(b"HTTP/1.1 101 ")


def _head_names(blob: bytes) -> list[str]:
    head = blob.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return [ln.partition(":")[0].strip().lower() for ln in head[1:]]


DATED_REPLICA = r"""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = os.environ["ECO_REPLICA_NAME"].encode()
        self.send_response(200)  # with Server: and Date:
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def test_one_server_and_one_date_header_on_every_answer(
    fresh_api: httpx.Client, request: pytest.FixtureRequest
) -> None:
    """A replica that names itself and dates its answers (as http.server does): through
    the service URL its Server and Date pass once, nothing of ours beside them; the API
    behind the front and the front's own refusals carry at most one of each."""
    shared = Path(tempfile.mkdtemp(prefix="ecolink-headers-"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o755)
    script = shared / "replica.py"
    script.write_text(DATED_REPLICA)
    script.chmod(0o644)
    c = launch(fresh_api, "dated", replicas=2, port=8080, command=f"{replica_python()} {script}")
    wait_for(fresh_api, c["id"], all_ready(2))
    # Ready once its process runs: wait until both replicas answer (each says its name).
    answered: set[str] = set()
    deadline = time.monotonic() + 20
    while len(answered) < 2 and time.monotonic() < deadline:
        r = fresh_api.get(f"/gpu-clusters/{c['id']}/service/")
        if r.status_code == 200:
            answered.add(r.text)
        else:
            time.sleep(0.05)
    assert len(answered) == 2, answered
    host = fresh_api.base_url.netloc
    service = f"/gpu-clusters/{c['id']}/service/".encode()
    for what, path, auth in (
        ("service", service, _auth(fresh_api)),
        ("api", b"/account", _auth(fresh_api)),
        ("refused", service, b""),
    ):
        blob = raw(
            str(fresh_api.base_url),
            b"GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (path, host, auth),
        )
        assert blob.startswith(b"HTTP/1.1 401" if what == "refused" else b"HTTP/1.1 200"), (
            what,
            blob[:200],
        )
        names = _head_names(blob)
        if what == "refused":
            assert names.count("server") <= 1 and names.count("date") <= 1, names
        else:  # a server answered: it says who and when, once
            assert names.count("server") == 1 and names.count("date") == 1, (what, names)


@pytest.mark.parametrize("python_front", [False, True], ids=["compiled", "python"])
def test_the_service_url_through_either_front(
    ecolink_server_factory: Any, python_front: bool
) -> None:
    # The compiled front ships; the Python one is what runs where no build of these
    # sources exists (or when asked for): both serve the same bytes, and the log
    # says which one runs.
    env = {"ECOLINK_FRONT_PYTHON": "1"} if python_front else None
    srv = ecolink_server_factory(extra_args=["--workers", "1"], env=env)
    expected = (
        "front: Python (ECOLINK_FRONT_PYTHON is set)" if python_front else "front: compiled ("
    )
    deadline = time.monotonic() + 10  # (the line follows server.json by a moment)
    while expected not in srv.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert expected in srv.log_tail(), srv.log_tail()
    api = srv.client()
    c = launch(api, "either", replicas=2, port=8080)
    wait_for(api, c["id"], all_ready(2))
    base = f"/gpu-clusters/{c['id']}/service"
    r = api.post(f"{base}/echo?x=1", content=b"hello", headers={"Content-Type": "text/x-a"})
    assert r.status_code == 200 and r.content == b"hello"
    assert r.headers["content-type"] == "text/x-a"
    assert r.headers["content-security-policy"].startswith("sandbox")
    with api.stream("GET", f"{base}/stream?chunks=3&delay=0.01") as s:
        lines = list(s.iter_lines())
    assert [line.split()[:2] for line in lines] == [["chunk", "0"], ["chunk", "1"], ["chunk", "2"]]
    denied = httpx.get(srv.url + f"{base}/echo", timeout=10)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthenticated"


def replica_pids(api: httpx.Client, cid: str, n: int) -> set[int]:
    """The pids of a cluster's `n` replicas, as they answer its service URL: asked
    until all `n` have answered (a replica the API calls ready may not listen yet:
    the front then skips it for a short back-off)."""
    pids: set[int] = set()
    deadline = time.monotonic() + 10
    while len(pids) < n and time.monotonic() < deadline:
        r = api.get(f"/gpu-clusters/{cid}/service/who")
        assert r.status_code == 200, r.text
        pids.add(int(r.json()["pid"]))
    assert len(pids) == n, pids
    return pids


@pytest.mark.parametrize("scheduling", ["batch", "normal"])
def test_the_front_runs_as_sched_batch_and_its_replicas_do_not(
    ecolink_server_factory: Any, scheduling: str
) -> None:
    # By default the front's event loop is SCHED_BATCH (a busy front does not crowd
    # out the replicas on shared cores); a replica it starts is back to normal.
    extra = ["--workers", "1"] + (
        ["--front-scheduling", "normal"] if scheduling == "normal" else []
    )
    srv = ecolink_server_factory(extra_args=extra)
    said = "scheduling: SCHED_BATCH" if scheduling == "batch" else "scheduling: normal"
    deadline = time.monotonic() + 10
    while said not in srv.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert said in srv.log_tail(), srv.log_tail()
    want = os.SCHED_BATCH if scheduling == "batch" else os.SCHED_OTHER
    assert os.sched_getscheduler(srv.proc.pid) == want
    api = srv.client()
    c = launch(api, "sched", replicas=2, port=8080)
    wait_for(api, c["id"], all_ready(2))
    pids = replica_pids(api, c["id"], 2)
    assert [os.sched_getscheduler(p) for p in pids] == [os.SCHED_OTHER] * 2


@pytest.mark.parametrize("terminal", [False, True], ids=["no-terminal", "terminal"])
def test_replicas_share_the_backends_session_and_scheduling_group_but_not_its_terminal(
    ecolink_server_factory: Any, terminal: bool
) -> None:
    # A replica in a session of its own is a scheduling group of its own where the
    # kernel groups by session (autogroup), and was starved beside a busy front. So
    # it stays in the backend's session, leads a process group of its own (stopped
    # with killpg), and never holds the backend's terminal, when there is one.
    srv = ecolink_server_factory(start=False)
    srv.terminal = terminal
    srv.start()
    serve = srv.proc.pid
    assert _has_tty(serve) == terminal  # the case is the one named
    api = srv.client()
    c = launch(api, "group", replicas=2, port=8080)
    wait_for(api, c["id"], all_ready(2))
    pids = replica_pids(api, c["id"], 2)
    autogroup = Path("/proc/self/autogroup").exists()
    for pid in pids:
        assert os.getpgid(pid) == pid
        assert os.getsid(pid) == os.getsid(serve)
        assert not _has_tty(pid)
        if autogroup:
            assert (
                Path(f"/proc/{pid}/autogroup").read_text()
                == Path(f"/proc/{serve}/autogroup").read_text()
            )
    r = api.delete(f"/gpu-clusters/{c['id']}")
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


def test_a_bad_scheduling_value_stops_serve_with_a_clear_error(tmp_path: Path) -> None:
    r = serve_once(tmp_path, {"ECOLINK_FRONT_SCHEDULING": "fast"})
    assert r.returncode != 0
    assert "ECOLINK_FRONT_SCHEDULING must be batch or normal, not 'fast'" in r.stderr
