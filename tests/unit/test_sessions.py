"""Kept sessions without a backend: replay, several clients, back-pressure (a slow
client is dropped, nobody else loses output, memory stays bounded) and records that
survive a restart (the JSON-file fallback)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ecocore.clock import FakeClock
from ecolink.runtime.base import STDERR, STDOUT, ExecRequest, ExecResult, ExecStream
from ecolink.sessions import ClientTooSlow, SessionManager

pytestmark = pytest.mark.timeout(30)


class FakeStream(ExecStream):
    """Produces the frames it is fed; `read()` blocks until there is one."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self.reads = 0
        self.written = b""
        self.code: int | None = None
        self.killed = False
        self.size = (0, 0)

    async def read(self):
        item = await self.q.get()
        self.reads += 1
        return item

    async def write(self, data):
        self.written += data

    async def close_stdin(self):
        pass

    async def resize(self, width, height):
        self.size = (width, height)

    async def result(self):
        return ExecResult(self.code)

    async def kill(self):
        self.killed = True
        if self.code is None:
            self.code = 137
        self.q.put_nowait(None)


class FakeRuntime:
    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.requests: list[ExecRequest] = []

    async def exec(self, cluster_id, replica, request):
        self.requests.append(request)
        s = FakeStream()
        self.streams.append(s)
        return s


@pytest.fixture
def manager(tmp_path: Path):
    rt = FakeRuntime()
    return SessionManager(
        rt, FakeClock(), state_dir=tmp_path, keep_bytes=256 * 1024, slow_grace_s=0.3
    ), rt


async def drain(session, client, into: bytearray, limit: int | None = None) -> None:
    async for _ch, data in session.frames(client):
        into += data
        if limit is not None and len(into) >= limit:
            return


async def test_replay_keeps_the_newest_output(manager):
    sm, rt = manager
    s = await sm.create("c1", "r-0", "cat", tty=False)
    assert rt.requests[0].command == ("sh", "-c", "cat") and rt.requests[0].stdin
    stream = rt.streams[0]
    blob = bytes(i % 251 for i in range(1_000_000))
    for i in range(0, len(blob), 1000):
        stream.q.put_nowait((STDOUT, blob[i : i + 1000]))
    stream.q.put_nowait((STDERR, b"warning\n"))
    stream.code = 0
    stream.q.put_nowait(None)
    await asyncio.wait_for(s.done.wait(), 5)
    c = s.attach()
    frames = [f async for f in s.frames(c)]
    out = b"".join(d for ch, d in frames if ch == STDOUT)
    assert [d for ch, d in frames if ch == STDERR] == [b"warning\n"]
    # The kept tail: at least keep_bytes minus one chunk, exactly the end of the output.
    assert 256 * 1024 - 65536 - 64 <= len(out) + 8 <= 256 * 1024
    assert blob.endswith(out)
    assert s.as_json()["exited"] and s.as_json()["exit_code"] == 0


async def test_clients_see_the_same_live_output(manager):
    sm, rt = manager
    s = await sm.create("c1", "r-0", None)
    stream = rt.streams[0]
    a_buf, b_buf = bytearray(), bytearray()
    a, b = s.attach(), s.attach()
    ta = asyncio.create_task(drain(s, a, a_buf))
    tb = asyncio.create_task(drain(s, b, b_buf))
    for i in range(200):
        stream.q.put_nowait((STDOUT, f"line {i}\n".encode()))
        if i % 50 == 0:
            await asyncio.sleep(0)
    await s.write(b"input")
    await s.resize(100, 40)
    stream.code = 3
    stream.q.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(ta, tb), 5)
    want = "".join(f"line {i}\n" for i in range(200)).encode()
    assert bytes(a_buf) == want and bytes(b_buf) == want
    assert stream.written == b"input" and stream.size == (100, 40)
    assert s.result is not None and s.result.exit_code == 3
    assert s.as_json()["attached"] == 2
    s.detach(a)
    assert s.as_json()["attached"] == 1


async def test_slow_client_dropped_while_others_lose_nothing(manager):
    sm, rt = manager
    s = await sm.create("c1", "r-0", "yes", tty=False)
    stream = rt.streams[0]
    slow, fast = s.attach(), s.attach()
    fast_buf = bytearray()
    chunk = b"x" * 8192
    total = 200  # 1.6 MB, far more than kept
    for _ in range(total):
        stream.q.put_nowait((STDOUT, chunk))
    t_fast = asyncio.create_task(drain(s, fast, fast_buf, limit=total * len(chunk)))
    # The slow client reads nothing: once the history is full the session stops
    # reading the process (back-pressure) until the grace period runs out.
    await asyncio.sleep(0.1)
    held = stream.reads
    assert held < total and s.kept <= 256 * 1024
    await asyncio.sleep(0.1)
    assert stream.reads == held
    await asyncio.wait_for(t_fast, 5)
    assert len(fast_buf) == total * len(chunk)  # everything, in order
    assert slow.dropped
    with pytest.raises(ClientTooSlow):
        async for _ in s.frames(slow):
            pass
    assert s.kept <= 256 * 1024 + 65536


async def test_records_survive_a_restart(tmp_path: Path):
    rt = FakeRuntime()
    sm = SessionManager(rt, FakeClock(), state_dir=tmp_path)
    s1 = await sm.create("c1", "r-0", ["bash"])
    s2 = await sm.create("c1", "r-1", None)
    s3 = await sm.create("c2", "r-0", None)
    ended = await sm.end("c1", s2.id)
    assert ended.ended_reason == "deleted"
    # A new backend on the same state dir: what was open ended with the old one.
    sm2 = SessionManager(FakeRuntime(), FakeClock(), state_dir=tmp_path)
    rows = {r["id"]: r for r in sm2.list("c1")}
    assert set(rows) == {s1.id, s2.id}
    assert rows[s1.id]["exited"] and rows[s1.id]["ended_reason"] == "backend_restart"
    assert rows[s2.id]["ended_reason"] == "deleted"
    assert rows[s1.id]["command"] == ["bash"] and rows[s1.id]["attached"] == 0
    assert [r["id"] for r in sm2.list("c2")] == [s3.id]
    await sm.end_all("backend_restart")
    assert all(s.killed for s in rt.streams)
