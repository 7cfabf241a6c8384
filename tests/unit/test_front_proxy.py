"""The front in-process against small scripted upstreams: a pooled connection the
replica closed is retried once (idempotent requests only), a replica that refuses
connections is skipped, and the traffic counters follow."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ecolink.front.proxy import Front, FrontConfig
from ecolink.front.server import close_front, serve_front
from ecolink.front.table import ClusterInfo

KEY = "eco_test-key"


class FakeTable:
    snap = None  # the credential snapshot: this one never changes

    def account_for_key(self, key: str) -> str | None:
        return "acct" if key == KEY else None

    def account_for_session(self, token: str) -> str | None:
        return None

    def cluster(self, account: str, ref: str) -> ClusterInfo | None:
        if ref in ("c1", "web"):
            return ClusterInfo("c1", "acct", "web", "running", 8080, 0)
        return None


class Upstream:
    """Answers the first request of each connection; on the second it closes
    without a word (a keep-alive connection it timed out at the same moment)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n += 1
            if n > 1:
                writer.close()
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            self.requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()


async def _request(port: int, method: str = "GET", body: bytes = b"") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} /gpu-clusters/web/service/x HTTP/1.1\r\nHost: h\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    data = await reader.read()
    writer.close()
    return int(data.split()[1])


def _listen() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


@contextlib.asynccontextmanager
async def scripted_front(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[Front, int]]:
    """A front in this process whose cluster c1 has one replica, answered by `handle`;
    the front and that port."""
    up = await asyncio.start_server(handle, "127.0.0.1", 0)
    f = Front(FakeTable(), "/nonexistent.sock", FrontConfig())  # type: ignore[arg-type]
    f.set_targets("c1", [("web-0", "127.0.0.1", up.sockets[0].getsockname()[1], "local")])
    server = await serve_front(f, _listen(), None)
    try:
        yield f, server.sockets[0].getsockname()[1]
    finally:
        close_front(f, server)
        up.close()


def answering(
    answer: bytes,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A replica that answers every request of a connection with `answer`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            writer.write(answer)
            await writer.drain()

    return handle


@pytest.fixture
async def front() -> Any:
    up = Upstream()
    up_server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    up_port = up_server.sockets[0].getsockname()[1]
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]  # bound, never listening: connections are refused
    f = Front(FakeTable(), "/nonexistent.sock", FrontConfig())  # type: ignore[arg-type]
    server = await serve_front(f, _listen(), None)
    port = server.sockets[0].getsockname()[1]
    yield f, port, up, up_port, dead_port
    close_front(f, server)
    up_server.close()
    dead.close()


async def test_stale_pooled_connection_retried_once_for_idempotent(front: Any) -> None:
    f, port, up, up_port, _ = front
    f.set_targets("c1", [("web-0", "127.0.0.1", up_port, "local")])
    assert await _request(port) == 200
    assert await _request(port) == 200  # the pooled connection dies: a fresh one answers
    assert up.connections == 2 and up.requests == 2
    # Not for a POST: it may have run; 503 says so.
    assert await _request(port, "POST", b"abc") == 503
    r = f.pools["c1"].replicas[0]
    assert r.requests == 2 and r.statuses[1] == 2 and r.in_flight == 0


async def test_refusing_replica_is_skipped_and_backs_off(front: Any) -> None:
    f, port, up, up_port, dead_port = front
    f.set_targets(
        "c1", [("web-0", "127.0.0.1", dead_port, "local"), ("web-1", "127.0.0.1", up_port, "local")]
    )
    for _ in range(3):
        assert await _request(port) == 200
    dead, live = f.pools["c1"].replicas
    assert dead.errors == 1 and not dead.healthy(asyncio.get_running_loop().time() * 0)
    assert live.requests == 3
    # No replica at all: 503; unknown cluster: 404; wrong key: 401.
    f.set_targets("c1", [])
    assert await _request(port) == 503


async def test_pod_dialer_tries_the_address_and_remembers() -> None:
    from ecolink.runtime.kubernetes import PodDialer

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    dialer = PodDialer(enabled=True, ttl_no=60)
    assert await dialer.reachable("127.0.0.1", port)
    assert not await dialer.reachable("127.0.0.1", dead)
    closed.listen(1)  # it answers now, but the "no" is remembered until it expires
    assert not await dialer.reachable("127.0.0.1", dead)
    assert not await PodDialer(enabled=False).reachable("127.0.0.1", port)
    server.close()
    closed.close()


async def test_head_answer_ends_at_its_head_and_the_connection_serves_on() -> None:
    conns = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()

    async with scripted_front(handle) as (f, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for method in ("HEAD", "GET", "HEAD", "GET"):
            writer.write(
                f"{method} /gpu-clusters/web/service/x HTTP/1.1\r\nHost: h\r\n"
                f"Authorization: Bearer {KEY}\r\n\r\n".encode()
            )
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.count(b"HTTP/1.1 200 OK") == 4
        assert data.count(b"hello") == 2 and data.endswith(b"hello")
        assert conns == 1  # one pooled connection carried all four
        writer.close()


@pytest.mark.parametrize(
    ("target", "replica_sees"),
    [
        ("/gpu-clusters/web/service/x?y=1", b"/x?y=1"),
        ("/gpu-clusters/c1/service/", b"/"),
        ("/gpu-clusters/c1/service/?q=/service/", b"/?q=/service/"),
        ("/gpu-clusters/c1/service/a/service/b", b"/a/service/b"),
        # the API's paths, not a service URL: the API (not running here) answers 503
        ("/gpu-clusters/c1/service", None),
        ("/gpu-clusters/c1/service?x=/service/y", None),
        ("/gpu-clusters/c1/services/x", None),
        ("/gpu-clusters/c1/other/service/x", None),
        ("/gpu-clusters/c?1/service/x", None),
    ],
)
async def test_which_paths_are_a_service_url_and_what_the_replica_gets(
    target: str, replica_sees: bytes | None
) -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b" ")[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async with scripted_front(handle) as (f, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {KEY}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    if replica_sees is None:
        assert data.startswith(b"HTTP/1.1 503") and b"the API cannot be reached" in data
        assert seen == []
    else:
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")
        assert seen == [replica_sees]


@pytest.mark.parametrize(
    ("version", "connection", "keeps_open", "says"),
    [
        ("1.1", None, True, None),
        ("1.1", "close", False, b"connection: close"),
        ("1.0", None, False, b"connection: close"),
        ("1.0", "keep-alive", True, b"connection: keep-alive"),
    ],
)
async def test_http_version_and_connection_decide_keep_alive(
    version: str, connection: str | None, keeps_open: bool, says: bytes | None
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with scripted_front(answering(ok)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        extra = f"Connection: {connection}\r\n" if connection else ""
        writer.write(
            f"GET /gpu-clusters/c1/service/x HTTP/{version}\r\nHost: h\r\n"
            f"Authorization: Bearer {KEY}\r\n{extra}\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        body = await asyncio.wait_for(reader.readexactly(2), 10)
        assert body == b"ok"
        if says is None:
            assert b"connection:" not in head.lower()
        else:
            assert says in head.lower()
        rest = await asyncio.wait_for(reader.read(), 0.5) if not keeps_open else None
        if keeps_open:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)  # still open, nothing more
        else:
            assert rest == b""  # closed after the answer
        writer.close()


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_an_answer_without_length_is_chunked_for_1_1_only(version: str) -> None:
    # Without a Connection header the front reads the version off keep-alive: an
    # HTTP/1.0 client must get the body raw, then the close that ends it.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    async with scripted_front(answering(chunked)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /gpu-clusters/c1/service/x HTTP/{version}\r\nHost: h\r\n"
            f"Authorization: Bearer {KEY}\r\n\r\n".encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).lower()
        if version == "1.1":
            assert b"transfer-encoding: chunked" in head
            assert await asyncio.wait_for(reader.readexactly(12), 10) == b"2\r\nok\r\n0\r\n\r\n"
        else:
            assert b"transfer-encoding" not in head and b"connection: close" in head
            assert await asyncio.wait_for(reader.read(), 10) == b"ok"
        writer.close()
