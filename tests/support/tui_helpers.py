"""Helpers for the dashboard's Pilot tests: building apps, reading the screen, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import httpx
from textual.pilot import Pilot

from ecotui.app import EcoApp
from ecotui.client.rest import EcoClient
from ecotui.client.watch import WatchClient
from ecotui.testing import FIXED_START, GeneratedFleet, ReplayFrameSource, fleet_transport


class FakeClock:
    """Wall time that moves only when a test says so."""

    def __init__(self, start=FIXED_START) -> None:
        self._now = start

    def now(self):
        return self._now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._now = self._now + timedelta(seconds=seconds)


@dataclass
class Connection:
    url: str
    key: str


@dataclass
class Fixed:
    """An app on a generated fleet: the feed is pushed by the test."""

    app: EcoApp
    fleet: GeneratedFleet
    source: ReplayFrameSource
    clock: FakeClock
    requests: list[str] = field(default_factory=list)


def fixed_app(
    clusters: int = 12, *, replicas: int = 8, gpus: int = 8, refresh_hz: float = 20.0, **app_kw: Any
) -> Fixed:
    fleet = GeneratedFleet(clusters, replicas, gpus)
    clock = FakeClock()
    source = ReplayFrameSource(
        [fleet.snapshot_frame()],
        on_focus=lambda ids: [fleet.replicas_frame(i, 0.0) for i in ids if i in fleet.clusters],
    )
    requests: list[str] = []
    inner = fleet_transport(fleet)

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        return inner.handle_request(request)

    client = EcoClient("http://fixed.invalid", "eco_fixed", transport=httpx.MockTransport(record))
    app = EcoApp(
        None,
        client=client,
        frame_source=source,
        clock=clock,
        tz=UTC,
        refresh_hz=refresh_hz,
        **app_kw,
    )
    return Fixed(app, fleet, source, clock, requests)


def live_app(url: str, key: str, *, refresh_hz: float = 20.0, **app_kw: Any) -> EcoApp:
    """An app on a real backend, with a quick reconnect for tests."""
    client = EcoClient(url, key)
    watch = WatchClient(url, key, backoff_initial=0.2, backoff_max=1.0, jitter=0.0)
    return EcoApp(
        Connection(url, key), client=client, frame_source=watch, refresh_hz=refresh_hz, **app_kw
    )


def screen_text(app: EcoApp) -> str:
    """What the terminal shows now, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_for(
    pilot: Pilot, cond: Callable[[], bool], *, timeout: float = 10.0, what: str = ""
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await pilot.pause(0.05)
        if cond():
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out waiting for {what or cond}; screen:\n" + screen_text(pilot.app)
            )  # type: ignore[arg-type]


async def wait_for_text(pilot: Pilot, text: str, *, timeout: float = 10.0) -> None:
    await wait_for(
        pilot,
        lambda: text in screen_text(pilot.app),
        timeout=timeout,  # type: ignore[arg-type]
        what=repr(text),
    )


def row_text(app: EcoApp, name: str) -> str:
    """The clusters table's line for the cluster called `name` (as drawn), or ""."""
    from ecotui.widgets.fleet_table import FleetTable

    tables = app.screen.query(FleetTable)
    if not tables:
        return ""
    region = tables.first().region
    lines = screen_text(app).splitlines()[region.y + 1 : region.bottom]
    for line in lines:
        # the cursor row marks the name with › (focused) or · (not focused)
        if any(f"{mark}{name} " in line for mark in (" ", "›", "·")):
            return line
    return ""


def replica_line(app: EcoApp, name: str) -> str:
    """The replica table's line for the replica called `name` (as drawn)."""
    return next(ln for ln in screen_text(app).splitlines() if f" {name} " in ln)


def replica_columns(app: EcoApp, name: str, labels: tuple[str, ...]) -> dict[str, str]:
    """The cells of a replica's row under the given headings, as drawn (a cell runs from
    its heading to the next one; headings are two or more spaces apart)."""
    lines = screen_text(app).splitlines()
    header = next(ln for ln in lines if " replica " in ln and " phase " in ln)
    row = replica_line(app, name)
    heads = [
        i for i in range(2, len(header)) if header[i] not in " ┃│" and header[i - 2 : i] == "  "
    ] + [len(header) - 1]
    out = {}
    for label in labels:
        x = header.index(f"  {label} ") + 2
        out[label] = row[x : min(h for h in heads if h > x)].strip()
    return out


def launch_body(
    name: str,
    *,
    replicas: int = 2,
    command: str | None = "sleep infinity",
    hours: Any = 1,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "region": "us-east",
        "gpu_type": "H100-80GB",
        "gpu_count": 1,
        "replicas": replicas,
        "image": "example/app:1",
        "estimated_duration_hours": hours,
    }
    if command is not None:
        body["startup_command"] = command
    body.update(extra)
    return body


__all__ = [
    "UTC",
    "Connection",
    "FakeClock",
    "Fixed",
    "fixed_app",
    "launch_body",
    "live_app",
    "replica_columns",
    "replica_line",
    "row_text",
    "screen_text",
    "wait_for",
    "wait_for_text",
]
