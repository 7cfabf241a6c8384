"""Helpers for the end-to-end tests: launching clusters, waiting, and a small
Kubernetes channel-protocol client over `websockets`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"


def launch(
    api: httpx.Client,
    name: str,
    *,
    replicas: int = 2,
    command: str | None = None,
    port: int | None = None,
    gpu_count: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "region": "us-east",
        "gpu_type": "H100-80GB",
        "gpu_count": gpu_count,
        "replicas": replicas,
        "image": "example/app:1",
        "estimated_duration_hours": 1,
    }
    if command is not None:
        body["startup_command"] = command
    if port is not None:
        body["expose"] = {"port": port}
    body.update(extra)
    r = api.post("/gpu-clusters", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(
    api: httpx.Client,
    cid: str,
    cond: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
    what: str = "",
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = api.get(f"/gpu-clusters/{cid}")
        if r.status_code == 200:
            last = r.json()
            if cond(last):
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(last)[:2000]}")


def all_ready(n: int) -> Callable[[dict[str, Any]], bool]:
    def check(c: dict[str, Any]) -> bool:
        states = c["replica_states"]
        return c["status"] == "running" and len(states) == n and all(s["ready"] for s in states)

    return check


class Channel:
    """A connected exec/attach WebSocket speaking the channel framing."""

    def __init__(self, ws: Any, protocol: str | None) -> None:
        self.ws = ws
        self.protocol = protocol
        self.out = bytearray()
        self.err = bytearray()
        self.status: dict[str, Any] | None = None
        self.closed = False

    async def send_stdin(self, data: bytes) -> None:
        await self.ws.send(b"\x00" + data)

    async def resize(self, width: int, height: int) -> None:
        await self.ws.send(b"\x04" + json.dumps({"Width": width, "Height": height}).encode())

    async def close_stdin(self) -> None:
        await self.ws.send(b"\xff\x00")

    async def recv_one(self, timeout: float = 10.0) -> bool:
        """One frame into out/err/status; False once the server closed."""
        try:
            msg = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed:
            self.closed = True
            return False
        if isinstance(msg, str):
            msg = msg.encode()
        ch, payload = msg[0], msg[1:]
        if ch == 1:
            self.out += payload
        elif ch == 2:
            self.err += payload
        elif ch == 3:
            self.status = json.loads(payload)
        return True

    async def until_out(self, needle: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            left = deadline - time.monotonic()
            try:
                more = left > 0 and await self.recv_one(left)
            except TimeoutError:
                more = False
            if not more:
                raise AssertionError(f"{needle!r} not seen; got {bytes(self.out[-2000:])!r}")

    async def run_to_end(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.recv_one(max(0.01, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise AssertionError("the stream did not end")


def exit_code(status: dict[str, Any] | None) -> int | None:
    if status is None:
        return None
    if status.get("status") == "Success":
        return 0
    for cause in status.get("details", {}).get("causes", []):
        if cause.get("reason") == "ExitCode":
            return int(cause["message"])
    return None


async def connect(url: str, key: str, protocols: tuple[str, ...] = (V5, V4)) -> Channel:
    ws = await websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {key}"},
        subprotocols=list(protocols) or None,
        max_size=None,
        open_timeout=10,
        proxy=None,
    )
    return Channel(ws, ws.subprotocol)


def exec_url(
    server: Any, cid: str, replica: str, command: list[str] | None = None, **flags: Any
) -> str:
    q: list[tuple[str, str]] = [("command", c) for c in command or []]
    q += [(k, str(v)) for k, v in flags.items()]
    return server.ws_url(f"/gpu-clusters/{cid}/replicas/{replica}/exec?{urlencode(q)}")


def marked_processes(state_dir: Any, cluster_id: str | None = None) -> list[int]:
    """Live processes carrying the marker of `state_dir`'s local runtime (optionally
    of one cluster): what would be orphans once a cluster is gone."""
    from ecocore.clock import SystemClock
    from ecolink.runtime.local import LocalRuntime
    from ecolink.runtime.local.proc import find_marked
    from ecolink.telemetry import SyntheticSource

    rid = LocalRuntime(state_dir, SystemClock(), telemetry_source=SyntheticSource()).rid
    prefix = f"{rid}.{cluster_id}." if cluster_id else f"{rid}."
    return [p.pid for p in find_marked(lambda m: m.startswith(prefix))]


def wait_until(cond: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.05)
