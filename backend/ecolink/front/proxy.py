"""The client side of the front: one `ClientProtocol` per accepted connection.

httptools parses the client's requests (pipelined ones queue behind the one being
answered). A service-URL request is authenticated from the table, given a replica
by its cluster's pool and forwarded on a pooled keep-alive connection; any other
request goes to the API's unix socket. Bodies stream both ways with flow control
(a side that cannot keep up pauses the other). An upgrade answered 101 turns the
two connections into a plain byte tunnel (WebSocket).
"""

from __future__ import annotations

import asyncio
from time import monotonic as _monotonic

import httptools

from ecolink.front.client_head import RequestParsing
from ecolink.front.exchange import HeadTooLarge
from ecolink.front.frames import FrameGuard
from ecolink.front.shared import ErrorLog, Front, FrontConfig

__all__ = ["ClientProtocol", "ErrorLog", "FrameGuard", "Front", "FrontConfig"]


class ClientProtocol(RequestParsing):
    """One accepted client connection. Its layers, each building on the one below:
    `ClientBase` (state, writes, deadlines, flow control, error answers, closing),
    `Tunnelling` (the 101 answer and the byte tunnel), `UpstreamExchange` (to the
    API or a replica and back), `ServiceRouting` (where a request goes; a service
    URL's checks and head), `RequestParsing` (httptools' callbacks, head limits);
    here, asyncio's callbacks."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = peer[0] if isinstance(peer, tuple) else "unix"
        # What every forwarded request of this connection says of its client.
        self.addr_b = self.addr.encode()
        self.scheme_b = self.cfg.scheme.encode()
        self.xff_line = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (
            self.addr_b,
            self.scheme_b,
        )
        front = self.front
        if (
            len(front.clients) >= self.cfg.max_connections
            or front.per_address[self.addr] >= self.cfg.max_per_address
        ):
            front.refused += 1
            front.errors(f"connection refused: over the connection cap ({self.addr})")
            self.closed = True
            t = self.transport
            assert t is not None
            t.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
            t.close()
            return
        front.clients.add(self)
        front.per_address[self.addr] += 1
        self._set_timer(self.cfg.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None and self in self.front.clients:
            self.front.clients.discard(self)
            n = self.front.per_address[self.addr] - 1
            if n <= 0:
                del self.front.per_address[self.addr]
            else:
                self.front.per_address[self.addr] = n
        self.closed = True
        self._cancel_timer()
        ex = self.active
        self.active = None
        if ex is not None:
            if ex.replica is not None:
                ex.replica.in_flight -= 1
                ex.replica = None
            if ex.up is not None:
                up, ex.up = ex.up, None
                up.handler = None
                up.abort()
        if self.tunnel is not None:
            self.tunnel.handler = None
            self.tunnel.close()
            self.tunnel = None
        self._release_websocket()
        self.queue.clear()

    def eof_received(self) -> bool:
        """The client will send nothing more: answer what it asked, then close."""
        self.eof = True
        if self.tunnel is not None or self.upgraded or self.in_head:
            return False
        if self.active is None and not self.queue:
            self._close()
        return True

    def data_received(self, data: bytes) -> None:
        if self.closed or self.lingering:
            return
        if self.tunnel is not None:
            frames = self.frames
            if frames is not None and not frames.feed(data):
                self._too_big(frames.limit)
                return
            self.tunnel.send(data)
            return
        if self.upgraded:
            # Bytes after an upgrade head wait until the replica says 101.
            if self.queue:
                self.queue[-1].tunnel_rest += data
            elif self.active is not None:
                self.active.tunnel_rest += data
            return
        self.rx_at = _monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.upgraded = True
            target = self.queue[-1] if self.queue else self.active
            if target is not None and target.upgrade:
                target.tunnel_rest = data[offset:]
            else:
                self._bad_request("an upgrade this server does not take")
        except HeadTooLarge:
            self._refuse(400, "the request head is too large")
        except httptools.HttpParserError as exc:
            self._bad_request(str(exc) or "malformed request")
        except ValueError as exc:
            self._bad_request(str(exc) or "malformed request")
