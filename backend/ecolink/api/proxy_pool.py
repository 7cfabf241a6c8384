"""The service URL's own HTTP/1.1 client: keep-alive connections to replicas, kept
per app in `AppContext.proxy` (h11 over asyncio streams)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h11

CONNECT_TIMEOUT_S = 5.0


class UpstreamError(Exception):
    """The replica could not be reached or broke the exchange."""


class UpstreamConn:
    """One HTTP/1.1 connection to a replica (h11 over asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                self.h11.receive_data(data)  # b"" tells h11 the peer closed
                continue
            return event

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ProxyState:
    """Per-app proxy state: idle keep-alive connections per replica. A small
    HTTP/1.1 client of our own: request and response bodies stream through in both
    directions, nothing is held whole, and a request costs a fraction of what a
    general-purpose client costs."""

    MAX_IDLE = 64

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[UpstreamConn]] = {}

    async def connect(self, host: str, port: int, fresh: bool = False) -> tuple[UpstreamConn, bool]:
        """A connection to host:port, and whether it was reused."""
        pool = self.idle.get((host, port))
        while pool and not fresh:
            conn = pool.pop()
            if conn.usable():
                return conn, True
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=65536), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {host}:{port}: {exc}") from exc
        return UpstreamConn(reader, writer), False

    def release(self, host: str, port: int, conn: UpstreamConn) -> None:
        ok = conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE and conn.usable()
        if ok:
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                ok = False
        pool = self.idle.setdefault((host, port), [])
        if ok and len(pool) < self.MAX_IDLE:
            pool.append(conn)
        else:
            conn.close()
