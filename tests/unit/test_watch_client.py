"""The /watch client against a WebSocket peer on loopback: auth, frames parsed as their
wire models (bad ones skipped), focus, back-off."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Response

from ecocore.wire import (
    WatchClusterRemoved,
    WatchConnection,
    WatchFrame,
    WatchSnapshot,
    WatchSummaries,
    parse_frame,
)
from ecotui.client.watch import WatchClient, backoff_delay, connection_frame

ACCOUNT = {
    "id": "a",
    "name": "demo",
    "balance": "1.000000",
    "held": "0.000000",
    "available": "1.000000",
}


class Peer:
    """A small /watch peer: checks the key, sends a snapshot, records focus frames."""

    def __init__(self) -> None:
        self.headers: list[str | None] = []
        self.focus: list[list[str]] = []
        self.connections: list[ServerConnection] = []
        self.refuse = False

    def check(self, conn: ServerConnection, request) -> Response | None:
        self.headers.append(request.headers.get("Authorization"))
        if self.refuse or request.headers.get("Authorization") != "Bearer eco_good":
            return conn.respond(401, "unauthenticated\n")
        return None

    async def handler(self, conn: ServerConnection) -> None:
        self.connections.append(conn)
        await conn.send(json.dumps({"type": "snapshot", "clusters": [], "account": ACCOUNT}))
        await conn.send("not json at all")
        await conn.send(json.dumps({"type": "account", "account": {"id": "a"}}))  # no account
        await conn.send(json.dumps({"type": "cluster_removed", "id": "x"}))
        async for msg in conn:
            frame = json.loads(msg)
            if frame.get("type") == "focus":
                self.focus.append(frame["clusters"])


@pytest.fixture
async def peer():
    p = Peer()
    async with serve(p.handler, "127.0.0.1", 0, process_request=p.check) as server:
        port = server.sockets[0].getsockname()[1]
        p.url = f"http://127.0.0.1:{port}"
        yield p


async def take(gen, n: int, timeout: float = 5.0) -> list[WatchFrame]:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(gen))
    return out


async def test_frames_with_auth_and_connection_state(peer):
    client = WatchClient(peer.url, "eco_good")
    gen = client.frames()
    frames = await take(gen, 4)
    # The message that is not JSON and the account frame without an account are skipped.
    assert [type(f) for f in frames] == [
        WatchConnection,
        WatchConnection,
        WatchSnapshot,
        WatchClusterRemoved,
    ]
    connecting, connected, snapshot, removed = frames
    assert isinstance(connecting, WatchConnection) and connecting.state == "connecting"
    assert isinstance(connected, WatchConnection) and connected.state == "connected"
    assert isinstance(snapshot, WatchSnapshot) and snapshot.account.available == "1.000000"
    assert isinstance(removed, WatchClusterRemoved) and removed.id == "x"
    assert peer.headers == ["Bearer eco_good"]
    await client.close()
    await gen.aclose()


async def test_focus_is_sent_and_resent_after_a_reconnect(peer):
    client = WatchClient(peer.url, "eco_good", backoff_initial=0.05, jitter=0.0)
    gen = client.frames()
    await take(gen, 4)
    await client.focus(["c1", "c2"])
    await asyncio.sleep(0.1)
    assert peer.focus == [["c1", "c2"]]
    await peer.connections[0].close()
    frames = await take(gen, 5)
    conns = [f for f in frames if isinstance(f, WatchConnection)]
    assert [f.state for f in conns][:3] == ["reconnecting", "reconnecting", "connected"]
    retry = next(f for f in conns if f.next_retry_at)
    assert retry.attempt == 1 and "connection" in (retry.error or "")
    await asyncio.sleep(0.1)
    assert peer.focus == [["c1", "c2"], ["c1", "c2"]]
    await client.close()
    await gen.aclose()


async def test_refused_key_is_reported_and_retried_with_growing_back_off(peer):
    client = WatchClient(
        peer.url, "eco_bad", backoff_initial=0.01, backoff_factor=2.0, backoff_max=0.04, jitter=0.0
    )
    gen = client.frames()
    frames = await take(gen, 8)
    assert all(isinstance(f, WatchConnection) for f in frames)
    waits = [f for f in frames if isinstance(f, WatchConnection) and f.next_retry_at]
    assert waits and all("401" in (f.error or "") for f in waits)
    assert [f.attempt for f in waits] == list(range(1, len(waits) + 1))
    assert len(peer.headers) >= 3
    await client.close()
    await gen.aclose()


async def test_unreachable_backend_reports_reconnecting_with_next_retry_time():
    client = WatchClient("http://127.0.0.1:9", "eco_x", backoff_initial=5.0, jitter=0.0)
    gen = client.frames()
    _, waiting = await take(gen, 2)
    assert isinstance(waiting, WatchConnection)
    assert waiting.state == "reconnecting" and waiting.next_retry_at
    assert "cannot reach the backend" in (waiting.error or "")
    # reconnect_now() cuts the wait short.
    client.reconnect_now()
    (again,) = await take(gen, 1, timeout=1.0)
    assert isinstance(again, WatchConnection)
    assert again.state == "connecting" and again.attempt == 1  # never connected yet
    await client.close()
    await gen.aclose()


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter():
    rng = random.Random(1)
    plain = [
        backoff_delay(a, initial=0.5, factor=2, maximum=8, jitter=0, rng=rng) for a in range(1, 8)
    ]
    assert plain == [0.5, 1, 2, 4, 8, 8, 8]
    jittered = [
        backoff_delay(3, initial=0.5, factor=2, maximum=8, jitter=0.2, rng=rng) for _ in range(50)
    ]
    assert all(2.0 <= d <= 2.4 for d in jittered) and len(set(jittered)) > 1


def test_urls_follow_the_scheme():
    assert WatchClient("http://127.0.0.1:1/", "k").url == "ws://127.0.0.1:1/watch"
    assert WatchClient("https://eco.example/", "k").url == "wss://eco.example/watch"


def test_connection_frames_are_the_wire_models_frames():
    when = datetime(2026, 3, 2, 14, 0, 5, tzinfo=UTC)
    made = connection_frame(
        "reconnecting", attempt=2, next_retry_at=when, error="connection lost (1006)"
    )
    frame = parse_frame(made.model_dump_json())
    assert frame == made
    assert isinstance(frame, WatchConnection)
    assert (frame.state, frame.attempt, frame.error) == (
        "reconnecting",
        2,
        "connection lost (1006)",
    )
    assert frame.next_retry_at == "2026-03-02T14:00:05+00:00"


def test_frames_are_told_apart_by_type_and_bad_ones_refused():
    summaries = parse_frame(
        json.dumps(
            {
                "type": "summaries",
                "clusters": {
                    "c1": {"gpus": 8, "mean_utilization": 3.5, "idle_gpus": 2, "telemetry": "nvml"}
                },
                "traffic": {"c1": None},
            }
        )
    )
    assert isinstance(summaries, WatchSummaries)
    assert summaries.clusters["c1"].idle_gpus == 2 and summaries.traffic == {"c1": None}
    with pytest.raises(ValidationError):
        parse_frame(json.dumps({"type": "no-such-frame"}))
    with pytest.raises(ValidationError):
        parse_frame(json.dumps({"type": "connection", "state": "sleeping"}))
