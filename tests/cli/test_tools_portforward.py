"""`ecotui port-forward` and the backend's portforward WebSocket, against a real
backend with the local runtime: byte-exact both ways, concurrent connections,
half-close, only the replica's own ports, clear lines and exits on bad input,
a forward that keeps serving across a replica restart, a backend restart and a
network blip, and one forward carrying far more connections than the account's
WebSocket cap, which still holds for everything else."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection

from support.reliability import ws_connect
from support.tools_helpers import account_env, ecotui, end_clusters, launch_ready, subprocess_env

# An echo server on $PORT (on FIXED for replica 0 when FIXED is set).
ECHO = r"""exec python3 -c '
import os, socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d:
                break
            self.request.sendall(d)
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
fixed = os.environ.get("FIXED") if os.environ["ECO_REPLICA_INDEX"] == "0" else None
S(("127.0.0.1", int(fixed or os.environ["PORT"])), H).serve_forever()
'"""


@pytest.fixture
def env(shared_ecolink_server, monkeypatch, tmp_path):
    e = account_env(shared_ecolink_server, monkeypatch, tmp_path, "pf")
    yield e
    end_clusters(shared_ecolink_server, e["ECO_API_KEY"])


def replica_ports(env, name: str) -> dict[str, int]:
    p = ecotui(env, "run", name, "--json", "--", "printenv", "PORT")
    assert p.returncode == 0, p.stderr
    return {o["name"]: int(o["stdout"]) for o in json.loads(p.stdout)}


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


class PortForward:
    def __init__(self, env, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecotui", "port-forward", *argv],
            env=subprocess_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.err_lines: list[str] = []
        threading.Thread(target=self._drain_err, daemon=True).start()

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err_lines.append(line.decode())

    def local_port(self) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.fullmatch(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)\n", line)
        assert m, (line, self.err_lines, self.proc.poll())
        return int(m.group(1))

    def wait_err(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.err_lines:
                if needle in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in {self.err_lines}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def echo_roundtrip(port: int, payload: bytes) -> bytes:
    """Send everything, half-close, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        t = threading.Thread(target=s.sendall, args=(payload,))
        t.start()
        chunks = []
        got = 0
        while got < len(payload):
            d = s.recv(1 << 20)
            if not d:
                break
            chunks.append(d)
            got += len(d)
        t.join()
        s.shutdown(socket.SHUT_WR)
        while d := s.recv(1 << 20):
            chunks.append(d)
        return b"".join(chunks)


def echo_when_back(port: int, payload: bytes, fwd: PortForward, timeout: float) -> None:
    """Until a forwarded connection echoes `payload` again (those before may fail)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if echo_roundtrip(port, payload) == payload:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, fwd.err_lines
        time.sleep(0.2)


def echo_or_nothing(port: int, payload: bytes) -> bytes:
    """What a forwarded connection echoes; b"" when it is closed or refused at once."""
    try:
        return echo_roundtrip(port, payload)
    except OSError:
        return b""


def test_forward_is_byte_exact_concurrent_and_only_the_replicas_ports(shared_ecolink_server, env):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "pf", 2, command=ECHO)
    ports = replica_ports(env, "pf")
    for p in ports.values():
        wait_listening(p)
    fwd = PortForward(env, "pf", "pf-0", f":{ports['pf-0']}")
    try:
        local = fwd.local_port()
        blob = os.urandom(8 << 20)
        assert hashlib.sha256(echo_roundtrip(local, blob)).digest() == hashlib.sha256(blob).digest()
        payloads = [os.urandom(200_000 + i) for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: echo_roundtrip(local, b), payloads))
        assert answers == payloads
    finally:
        fwd.stop()

    # another replica's port, and the backend's own port: refused, nothing listens
    for port in (ports["pf-1"], shared_ecolink_server.port):
        p = ecotui(env, "port-forward", "pf", "pf-0", f":{port}", timeout=30)
        assert p.returncode == 1, p.stderr
        assert f"nothing in pf-0 listens on port {port}".encode() in p.stderr
        assert b"Forwarding" not in p.stdout


def test_websocket_route_refusals(shared_ecolink_server, env):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "ws", 2, command=ECHO)
    ports = replica_ports(env, "ws")
    wait_listening(ports["ws-0"])

    async def status_of(path: str, key: str | None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            async with connect(shared_ecolink_server.ws_url(path), additional_headers=headers):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def main() -> list[int]:
        base = "/gpu-clusters/ws/replicas/ws-0/portforward"
        key = env["ECO_API_KEY"]
        other = shared_ecolink_server.new_account("pf-other", "10")
        return [
            await status_of(f"{base}?port={ports['ws-0']}", key),
            await status_of(f"{base}?port={ports['ws-0']}", None),
            await status_of(f"{base}?port={ports['ws-0']}", other),
            await status_of("/gpu-clusters/ws/replicas/ws-7/portforward?port=1", key),
            await status_of(f"{base}?port=0", key),
            await status_of(f"{base}?port=x", key),
            await status_of(f"{base}?port={ports['ws-1']}", key),
        ]

    assert asyncio.run(main()) == [101, 401, 404, 404, 422, 422, 409]
    with shared_ecolink_server.client(env["ECO_API_KEY"]) as api:
        r = api.get(f"/gpu-clusters/ws/replicas/ws-0/portforward?port={ports['ws-0']}")
        assert r.status_code == 426 and r.json()["error"]["code"] == "invalid_request"
        doc = api.get("/openapi.json").json()
        assert "/gpu-clusters/{id}/replicas/{replica}/portforward" in doc["paths"]


def test_bad_input(shared_ecolink_server, env):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "bad", 2, command=ECHO)
    ports = replica_ports(env, "bad")
    wait_listening(ports["bad-0"])
    p = ecotui(env, "port-forward", "nope", "80")
    assert p.returncode == 1 and b"nope" in p.stderr
    p = ecotui(env, "port-forward", "bad", "bad-9", "80")
    assert p.returncode == 1 and b"bad-9" in p.stderr
    p = ecotui(env, "port-forward", "bad", "bad-0", "70000")
    assert p.returncode == 2 and b"out of range" in p.stderr
    p = ecotui(env, "port-forward", "bad", "bad-0")
    assert p.returncode == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        used = busy.getsockname()[1]
        p = ecotui(env, "port-forward", "bad", f"{used}:{ports['bad-0']}")
        assert p.returncode == 1 and b"in use" in p.stderr, p.stderr


def test_keeps_serving_across_replica_and_backend_restarts(ecolink_server, monkeypatch, tmp_path):
    env = account_env(ecolink_server, monkeypatch, tmp_path, "pfr")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        fixed = s.getsockname()[1]
    launch_ready(ecolink_server, env["ECO_API_KEY"], "rs", 2, command=f"FIXED={fixed} " + ECHO)
    wait_listening(fixed)
    fwd = PortForward(env, "rs", f":{fixed}")  # no replica: the first ready one
    try:
        local = fwd.local_port()
        assert echo_roundtrip(local, b"one") == b"one"
        with ecolink_server.client(env["ECO_API_KEY"]) as api:
            assert api.post("/gpu-clusters/rs/replicas/rs-0/restart").status_code == 200
        time.sleep(0.3)
        wait_listening(fixed)
        # Connections during the restart may fail, each with a line.
        echo_when_back(local, b"two", fwd, 20)
        ecolink_server.kill()
        # Closed at once (a reset, when it is closed before it was read).
        assert echo_or_nothing(local, b"down") == b""
        fwd.wait_err("cannot reach the backend")
        assert fwd.proc.poll() is None
        ecolink_server.restart()
        echo_when_back(local, b"three", fwd, 30)
        assert fwd.proc.poll() is None
    finally:
        fwd.stop()
    end_clusters(ecolink_server, env["ECO_API_KEY"])


def recv_exactly(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        d = s.recv(n - len(got))
        if not d:
            break
        got += d
    return got


def refused_with(url: str, key: str) -> dict[str, str]:
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(url, key).close()
    resp = exc.value.response
    assert resp.status_code == 429, resp.status_code
    return json.loads(resp.body or b"{}")["error"]


def test_one_forward_carries_many_more_connections_than_the_websocket_cap(
    ecolink_server_factory, monkeypatch, tmp_path
):
    # The general cap stays at its default (64); port-forward connections have their own.
    srv = ecolink_server_factory(extra_args=["--max-portforwards-per-account", "160"])
    env = account_env(srv, monkeypatch, tmp_path, "many")
    key = env["ECO_API_KEY"]
    launch_ready(srv, key, "many", 2, command=ECHO)
    port = replica_ports(env, "many")["many-0"]
    wait_listening(port)
    fwd = PortForward(env, "many", "many-0", f":{port}")
    held: list[socket.socket] = []
    sockets: list[ClientConnection] = []
    try:
        local = fwd.local_port()
        for _ in range(150):
            held.append(socket.create_connection(("127.0.0.1", local), timeout=30))
        for i, s in enumerate(held):
            s.sendall(b"conn %03d\n" % i)
        for i, s in enumerate(held):
            assert recv_exactly(s, 9) == b"conn %03d\n" % i, (i, fwd.err_lines)
        # All 150 forwarded connections are open at once; each still answers.
        for i, s in enumerate(held):
            s.sendall(b"again %03d\n" % i)
            assert recv_exactly(s, 10) == b"again %03d\n" % i, (i, fwd.err_lines)
        assert fwd.err_lines == []

        # The account's other WebSockets are capped as before: 64, the 65th refused.
        watch = srv.ws_url("/watch")
        for _ in range(64):
            sockets.append(ws_connect(watch, key))
            assert json.loads(sockets[-1].recv(timeout=10))["type"] == "snapshot"
        err = refused_with(watch, key)
        assert err["code"] == "too_many_websockets" and "64 WebSockets" in err["message"], err
        exec_url = srv.ws_url("/gpu-clusters/many/replicas/many-0/exec?command=true")
        assert refused_with(exec_url, key)["code"] == "too_many_websockets"

        # Port-forward connections have a cap of their own (here 160): 10 more, then 429.
        pf_url = srv.ws_url(f"/gpu-clusters/many/replicas/many-0/portforward?port={port}")
        for _ in range(10):
            sockets.append(ws_connect(pf_url, key))
        err = refused_with(pf_url, key)
        assert err["code"] == "too_many_portforwards", err
        assert "160 port-forward connections" in err["message"], err
        assert fwd.proc.poll() is None

        # Closing forwarded connections frees their places.
        for s in held:
            s.close()
        held.clear()
        echo_when_back(local, b"after", fwd, 20)
    finally:
        for s in held:
            s.close()
        for ws in sockets:
            ws.close()
        fwd.stop()
    end_clusters(srv, key)


class Relay:
    """A TCP relay in front of the backend that a test can cut (every connection
    through it reset, new ones refused) and restore on the same port: a network blip
    between the CLI and the backend."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            # a reset, as a broken path gives: no close frame, no FIN
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()


def test_keeps_serving_across_a_network_blip(shared_ecolink_server, env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch_ready(
        shared_ecolink_server, env["ECO_API_KEY"], "blip", 2, command=f"FIXED={port} " + ECHO
    )
    wait_listening(port)
    relay = Relay(shared_ecolink_server.port)
    env = dict(env, ECO_API_URL=f"http://127.0.0.1:{relay.port}")
    fwd = PortForward(env, "blip", f":{port}")  # no replica: looked up through the relay
    try:
        local = fwd.local_port()
        assert echo_roundtrip(local, b"before") == b"before"
        held = socket.create_connection(("127.0.0.1", local), timeout=30)
        held.sendall(b"open")
        assert recv_exactly(held, 4) == b"open"

        relay.cut()
        # The connection that was open when the path broke ends, with a line ...
        try:
            rest = held.recv(100)
        except OSError:
            rest = b""
        assert rest == b""
        held.close()
        line = fwd.wait_err("connection lost")
        assert f"127.0.0.1:{local} -> blip-0:{port}" in line and "broke" in line, line
        # ... and each connection during the blip is closed at once, with a line.
        for _ in range(3):
            assert echo_or_nothing(local, b"during") == b""
        line = fwd.wait_err("cannot reach the backend")
        assert f"127.0.0.1:{relay.port}" in line, line
        assert fwd.proc.poll() is None

        relay.restore()
        echo_when_back(local, b"after", fwd, 20)
        payloads = [os.urandom(100_000 + i) for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda b: echo_roundtrip(local, b), payloads)) == payloads
        assert fwd.proc.poll() is None
    finally:
        fwd.stop()
        relay.cut()
