"""WebSocket memory is bounded, against a real `ecolink serve`:

- each route has its own message limit: the watch feed a few KiB, exec stdin and
  kept sessions about 1 MiB; one byte more closes the socket with 1009;
- an account holds at most N WebSockets at once (`--max-websockets-per-account`);
  the next gets a clear 429 in the error form, and closing one frees its place; with
  several front processes the cap is still the account's across the whole server;
- forty clients each sending an oversized frame move the backend's resident memory
  by less than 100 MB (read from /proc), and /healthz keeps answering within 1 s.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from support.edge import launch_service
from support.reliability import CLOSE, STDIN, V5, RawWS, read_exec, rss_kib, ws_connect

KIB = 1024
MIB = 1024 * KIB


def _closed_with(ws: Any, code: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as exc:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    assert exc.value.rcvd is not None and exc.value.rcvd.code == code, exc.value


def test_each_route_has_its_own_frame_limit(ecolink_server: Any) -> None:
    srv = ecolink_server
    url = srv.ws_url("/watch")
    with ws_connect(url, srv.key) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        focus = json.dumps({"type": "focus", "clusters": []})
        ws.send(focus + " " * (8 * KIB - len(focus)))  # exactly the limit: fine
        ws.ping().wait(10)
        ws.send(focus + " " * (8 * KIB + 1 - len(focus)))
        _closed_with(ws, 1009)
    with srv.client() as api:
        cluster = launch_service(api, "frames", replicas=2)
    replica = cluster["replica_states"][0]["name"]
    exec_url = srv.ws_url(
        f"/gpu-clusters/{cluster['id']}/replicas/{replica}/exec?command=wc&command=-c&stdin=1"
    )
    # A whole MiB of stdin in one frame goes through.
    with ws_connect(exec_url, srv.key, subprotocols=[V5]) as ws:
        ws.send(bytes([STDIN]) + b"x" * MIB)
        ws.send(bytes([CLOSE, STDIN]))
        out, _, status = read_exec(ws)
        assert out.strip() == str(MIB).encode() and status == {"metadata": {}, "status": "Success"}
    with ws_connect(exec_url, srv.key, subprotocols=[V5]) as ws:
        ws.send(bytes([STDIN]) + b"x" * (MIB + 1))
        _closed_with(ws, 1009)
    # Kept sessions take the same.
    with srv.client() as api:
        s = api.post(
            f"/gpu-clusters/frames/replicas/{replica}/sessions",
            json={"command": ["cat"], "tty": False},
        )
        assert s.status_code == 201, s.text
    attach = srv.ws_url(f"/gpu-clusters/{cluster['id']}/sessions/{s.json()['id']}/attach")
    with ws_connect(attach, srv.key, subprotocols=[V5]) as ws:
        ws.send(bytes([STDIN]) + b"y" * MIB)
        ws.ping().wait(10)
        ws.send(bytes([STDIN]) + b"y" * (MIB + 1))
        _closed_with(ws, 1009)


def test_websockets_per_account_are_capped(ecolink_server_factory: Any) -> None:
    srv = ecolink_server_factory(extra_args=["--max-websockets-per-account", "5"])
    other = srv.new_account("other", "10")
    url = srv.ws_url("/watch")
    held = [ws_connect(url, srv.key) for _ in range(5)]
    try:
        for ws in held:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        with pytest.raises(InvalidStatus) as exc:
            ws_connect(url, srv.key)
        resp = exc.value.response
        assert resp.status_code == 429
        err = json.loads(resp.body or b"{}")["error"]
        assert err["code"] == "too_many_websockets" and "5 WebSockets" in err["message"], err
        # Another account is not affected; HTTP is not either.
        with ws_connect(url, other) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        with srv.client() as api:
            assert api.get("/account").status_code == 200
        # Closing one frees its place.
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            try:
                held.append(ws_connect(url, srv.key))
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "the closed socket's place was not freed"
                time.sleep(0.1)
    finally:
        for ws in held:
            ws.close()


def test_forty_oversized_frames_leave_memory_and_health_alone(ecolink_server: Any) -> None:
    srv = ecolink_server
    pid = srv.proc.pid
    with httpx.Client(base_url=srv.url, timeout=10) as probe:
        for _ in range(20):  # warm up: the first requests allocate what they keep
            probe.get("/healthz")
        baseline = rss_kib(pid)
        peak = baseline
        worst_health = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        clients: list[RawWS] = []
        try:
            for _ in range(40):
                ws = RawWS(srv.url, "/watch", key=srv.key)
                assert ws.status == 101, ws.head
                clients.append(ws)
            # Half send a whole 1 MiB message (more than the watch route takes, no more
            # than the server buffers); half announce 64 MiB and start sending it.
            refused_early = set()
            for i, ws in enumerate(clients):
                if i % 2:
                    ws.send_frame(0x2, b"z" * MIB)
                else:
                    ws.sock.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, 64 * MIB) + b"mask")
                    try:
                        ws.sock.sendall(b"z" * (4 * MIB))  # the rest never comes
                    except OSError:
                        refused_early.add(i)  # closed on the frame's header alone
                started = time.monotonic()
                assert probe.get("/healthz").status_code == 200
                worst_health = max(worst_health, time.monotonic() - started)
            for i, ws in enumerate(clients):
                got = ws.read_some(2.0, limit=1 << 16)
                if i in refused_early and not got:
                    continue
                # Each was closed: a close frame with 1009 (too big), nothing else kept.
                assert b"\x88\x02" + struct.pack("!H", 1009) in got or (
                    struct.pack("!H", 1009) in got and b"\x88" in got
                ), (i, got[-60:])
            for _ in range(10):
                started = time.monotonic()
                assert probe.get("/healthz").status_code == 200
                worst_health = max(worst_health, time.monotonic() - started)
        finally:
            stop.set()
            sampler.join(5)
            for ws in clients:
                ws.abort()
    grown_mb = (peak - baseline) / 1024
    print(
        f"RSS baseline {baseline / 1024:.1f} MB, peak {peak / 1024:.1f} MB "
        f"(+{grown_mb:.1f} MB); worst /healthz {worst_health * 1000:.0f} ms"
    )
    assert grown_mb < 100, (baseline, peak)
    assert worst_health < 1.0, worst_health


def test_service_websockets_count_and_are_bounded_through_the_front(
    ecolink_server_factory: Any,
) -> None:
    # One front process: the service sockets it tunnels and the API's own share the cap.
    srv = ecolink_server_factory(extra_args=["--max-websockets-per-account", "3", "--workers", "1"])
    with srv.client() as api:
        cluster = launch_service(api, "capped")
    url = srv.ws_url(f"/gpu-clusters/{cluster['id']}/service/ws")
    held = [
        ws_connect(url, srv.key),
        ws_connect(url, srv.key),
        ws_connect(srv.ws_url("/watch"), srv.key),
    ]
    try:
        held[0].send("hi")
        assert held[0].recv(timeout=10) == "hi"
        for target in (url, srv.ws_url("/watch")):
            with pytest.raises(InvalidStatus) as exc:
                ws_connect(target, srv.key)
            resp = exc.value.response
            assert resp.status_code == 429, (target, resp.status_code)
            assert json.loads(resp.body or b"{}")["error"]["code"] == "too_many_websockets"
        # A service message over the route's limit closes that socket with 1009 ...
        held[1].send(b"x" * (MIB + 1))
        _closed_with(held[1], 1009)
        # ... and frees its place.
        deadline = time.monotonic() + 10
        while True:
            try:
                held[1] = ws_connect(url, srv.key)
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "the closed socket's place was not freed"
                time.sleep(0.1)
        held[1].send(b"y" * MIB)  # exactly the limit passes
        assert held[1].recv(timeout=10) == b"y" * MIB
    finally:
        for ws in held:
            ws.close()


def test_the_websocket_cap_holds_across_front_processes(ecolink_server_factory: Any) -> None:
    # Two front processes; the kernel spreads new connections over both. The cap is
    # the account's across the whole server: both fronts' service sockets and the
    # API's own count together.
    srv = ecolink_server_factory(extra_args=["--max-websockets-per-account", "4", "--workers", "2"])
    with srv.client() as api:
        cluster = launch_service(api, "spread")
    url = srv.ws_url(f"/gpu-clusters/{cluster['id']}/service/ws")
    watch = srv.ws_url("/watch")
    held = [ws_connect(url, srv.key) for _ in range(3)] + [ws_connect(watch, srv.key)]
    try:
        for ws in held[:3]:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"

        def all_refused(n: int) -> None:
            # n new connections, most of them service sockets: with two fronts, nearly
            # surely some reach each; every one is refused.
            for i in range(n):
                target = watch if i % 4 == 0 else url
                with pytest.raises(InvalidStatus) as exc:
                    ws_connect(target, srv.key).close()
                resp = exc.value.response
                assert resp.status_code == 429, (target, resp.status_code)
                assert json.loads(resp.body or b"{}")["error"]["code"] == "too_many_websockets"

        all_refused(12)
        # Closing service sockets frees their places server-wide, whichever front
        # held them; the cap holds again once they are taken.
        for ws in held[:3]:
            ws.close()
        deadline = time.monotonic() + 10
        while len(held) < 7:
            try:
                held.append(ws_connect(url, srv.key))
            except InvalidStatus:
                assert time.monotonic() < deadline, "closed sockets' places were not freed"
                time.sleep(0.1)
        for ws in held[4:]:
            ws.send("again")
            assert ws.recv(timeout=10) == "again"
        all_refused(8)
    finally:
        for ws in held:
            ws.close()
