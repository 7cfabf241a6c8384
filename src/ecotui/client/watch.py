"""The /watch WebSocket client: live frames for the dashboard, across reconnects.

`WatchClient.frames()` yields every frame of api.md's watch feed parsed as its
`ecocore.wire` model (the `WatchFrame` union), and between them `WatchConnection`
frames saying how the connection stands (connecting, connected, reconnecting with the next retry time and the
attempt number, closed). It reconnects with exponential back-off and jitter,
re-sends the last focus on every new connection, and never raises to its
consumer for a network failure. No textual here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ecocore.clock import Clock, SystemClock
from ecocore.wire import WatchConnection, WatchFrame, parse_frame
from ecotui.client.auth import bearer_headers

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    """What the dashboard reads frames from: the watch client, or a replay of a feed."""

    def frames(self) -> AsyncIterator[WatchFrame]: ...

    async def focus(self, cluster_ids: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


ConnectionState = Literal["connecting", "connected", "reconnecting", "closed"]


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    factor: float,
    maximum: float,
    jitter: float,
    rng: random.Random,
) -> float:
    """Seconds to wait before reconnect attempt `attempt` (1-based)."""
    base = min(maximum, initial * factor ** max(0, attempt - 1))
    return base * (1.0 + jitter * rng.random())


def connection_frame(
    state: ConnectionState,
    *,
    attempt: int = 0,
    next_retry_at: datetime | None = None,
    error: str | None = None,
) -> WatchConnection:
    """The frame saying how the connection stands."""
    return WatchConnection(
        type="connection",
        state=state,
        attempt=attempt,
        next_retry_at=next_retry_at.isoformat() if next_retry_at else None,
        error=error,
    )


class WatchClient:
    """One live /watch subscription that survives network failures."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        clock: Clock | None = None,
        backoff_initial: float = 0.5,
        backoff_factor: float = 2.0,
        backoff_max: float = 30.0,
        jitter: float = 0.2,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        if base.startswith("https://"):
            self.url = "wss://" + base[len("https://") :] + "/watch"
        elif base.startswith("http://"):
            self.url = "ws://" + base[len("http://") :] + "/watch"
        else:
            self.url = base + "/watch"
        self._headers = bearer_headers(api_key)
        self.clock: Clock = clock or SystemClock()
        self.backoff_initial = backoff_initial
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self._rng = rng or random.Random()
        self._ws: ClientConnection | None = None
        self._focus: list[str] | None = None
        self._closed = False
        self._wake = asyncio.Event()
        self.attempt = 0
        self.connections = 0  # successful connections so far

    # -- control -------------------------------------------------------------
    async def focus(self, cluster_ids: Iterable[str]) -> None:
        """Ask for per-second replicas of these clusters (kept across reconnects)."""
        self._focus = list(cluster_ids)
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.send(json.dumps({"type": "focus", "clusters": self._focus}))

    def reconnect_now(self) -> None:
        """Cut the back-off short (the user asked to retry)."""
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    # -- the feed --------------------------------------------------------------
    async def frames(self) -> AsyncIterator[WatchFrame]:
        """Frames for ever (until `close()`), with connection frames in between."""
        self.attempt = 0
        while not self._closed:
            yield connection_frame(
                "connecting" if self.connections == 0 else "reconnecting", attempt=self.attempt
            )
            error: str | None = None
            try:
                async with connect(
                    self.url,
                    additional_headers=self._headers,
                    open_timeout=self.open_timeout,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_interval,
                    max_size=None,
                    max_queue=None,
                ) as ws:
                    self._ws = ws
                    self.connections += 1
                    self.attempt = 0
                    if self._focus is not None:
                        await ws.send(json.dumps({"type": "focus", "clusters": self._focus}))
                    yield connection_frame("connected")
                    async for message in ws:
                        try:
                            frame = parse_frame(message)
                        except ValidationError as exc:
                            # One bad frame is not worth the connection (nor is a
                            # frame type this dashboard does not know yet).
                            log.warning("watch: a frame that is none of api.md's: %s", exc)
                            continue
                        yield frame
                    error = "the backend closed the connection"
            except InvalidStatus as exc:
                status = exc.response.status_code
                error = (
                    "the API key was refused (401)"
                    if status == 401
                    else f"the backend answered HTTP {status}"
                )
            except InvalidURI as exc:
                error = f"bad backend URL: {exc}"
            except ConnectionClosed as exc:
                error = f"connection lost ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                error = (
                    f"cannot reach the backend: {exc}" if str(exc) else "cannot reach the backend"
                )
            finally:
                self._ws = None
            if self._closed:
                break
            self.attempt += 1
            delay = backoff_delay(
                self.attempt,
                initial=self.backoff_initial,
                factor=self.backoff_factor,
                maximum=self.backoff_max,
                jitter=self.jitter,
                rng=self._rng,
            )
            retry_at = self.clock.now() + timedelta(seconds=delay)
            self._wake.clear()  # before yielding: the consumer may call reconnect_now() at once
            yield connection_frame(
                "reconnecting", attempt=self.attempt, next_retry_at=retry_at, error=error
            )
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
        yield connection_frame("closed")
