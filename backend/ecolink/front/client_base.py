"""The base of a client connection: its state, writes to the client (batched while
an upstream's bytes are parsed), deadlines, flow control both ways, closing, and
the front's own error answers."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from time import monotonic as _monotonic

import httptools

from ecolink.front.exchange import Exchange
from ecolink.front.frames import FrameGuard
from ecolink.front.shared import Front
from ecolink.front.upstream import Upstream


def error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_REASONS = {
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    429: b"Too Many Requests",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
    307: b"Temporary Redirect",
}


class ClientBase(asyncio.Protocol):
    """One accepted client connection: the state every layer of `ClientProtocol`
    shares and the calls they all use. `_next` (start the next queued request) is
    the one call it leaves to the layers above."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.cfg = front.cfg
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.addr = ""
        self.addr_b = b""
        self.scheme_b = b""
        self.xff_line = b""
        # The forwarding lines of the last service-URL request without X-Forwarded-For
        # of its own, and the (host, prefix) they were made for.
        self.fwd_key: tuple[bytes, str] | None = None
        self.fwd_lines = b""
        # The Authorization value of the last service-URL request that opened, the
        # credential snapshot it was checked against, and the account it opened.
        self.key_seen: tuple[bytes, object, str] | None = None
        self.parsing: Exchange | None = None
        self.queue: collections.deque[Exchange] = collections.deque()
        self.active: Exchange | None = None
        self.head_bytes = 0
        self.closed = False
        self.upgraded = False  # the parser stopped at an upgrade: later bytes are raw
        self.tunnel: Upstream | None = None
        # When the head or the idle wait runs out (0: no deadline); Front.sweep checks.
        self.deadline = 0.0
        self.in_head = False
        self.paused_reading = False
        self.paused_writing = False
        self.batch: list[bytes] | None = None
        self.eof = False
        self.lingering = False  # the tunnel ended: what the client still sends is dropped
        self.frames: FrameGuard | None = None  # a WebSocket tunnel's message limit
        self.ws_account = ""  # whose service WebSocket this connection holds
        # whose WebSocket the control plane reserved for the upgrade under way (a
        # worker front), until it turns into a tunnel or fails
        self.ws_reserved = ""
        # When the bytes being parsed were read (monotonic): the head's deadline and
        # the request's start are reckoned from it, one clock read per read.
        self.rx_at = 0.0

    def _next(self, now: float = 0.0) -> None:
        """Start answering the next queued request, if any."""
        raise NotImplementedError

    # ------------------------------------------------------------------ writing
    def _write(self, data: bytes) -> None:
        """Every write to the client goes here: while an upstream's bytes are being
        parsed they are gathered and sent with one system call at the end."""
        if self.batch is not None:
            self.batch.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def batch_start(self) -> None:
        if self.batch is None:
            self.batch = []

    def batch_end(self) -> None:
        batch, self.batch = self.batch, None
        if batch and self.transport is not None and not self.transport.is_closing():
            self.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))

    # ------------------------------------------------------------------ timers
    def _set_timer(self, seconds: float) -> None:
        self.deadline = _monotonic() + seconds

    def _cancel_timer(self) -> None:
        self.deadline = 0.0

    def _timeout(self) -> None:
        self.deadline = 0.0
        if self.closed:
            return
        if self.lingering:
            self._close()
        elif self.in_head:
            self.front.errors("request head not completed in time: answered 408")
            self._refuse(408, "the request head did not arrive in time")
        elif self.active is None and not self.queue:
            self._close()

    # ------------------------------------------------------------------ flow control
    def pause_writing(self) -> None:
        self._upstream_flow(pause=True)

    def resume_writing(self) -> None:
        self._upstream_flow(pause=False)

    def _upstream_flow(self, *, pause: bool) -> None:
        """The client's buffer filled (or drained): stop (or resume) reading what feeds it."""
        self.paused_writing = pause
        ex = self.active
        source = ex.up if ex is not None and ex.up is not None else self.tunnel
        if source is not None:
            if pause:
                source.pause_reading()
            else:
                source.resume_reading()

    def upstream_pause(self) -> None:
        self._pause_reading()

    def upstream_resume(self) -> None:
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.paused_reading and self.transport is not None and not self.closed:
            self.paused_reading = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.paused_reading and self.transport is not None and not self.closed:
            self.paused_reading = False
            self.transport.resume_reading()

    # ------------------------------------------------------------------ answers
    def _finish_replica(self, ex: Exchange, *, failed: bool, status: int, now: float = 0.0) -> None:
        r = ex.replica
        if r is None:
            return
        ex.replica = None
        r.in_flight -= 1
        if failed:
            r.failed(time.monotonic())
        else:
            r.answered(status, (now or _monotonic()) - ex.started)

    def _exchange_over(self, ex: Exchange, now: float = 0.0) -> None:
        if self.active is ex:
            self.active = None
        if not ex.keep_alive:
            self._close()
            return
        if not ex.body_done:
            # The answer went before the body ended (an error, or an early answer):
            # keep reading, dropping the rest of the body.
            ex.local = ex.local or (0, b"", [])
            self._resume_reading()
            return
        if self.paused_reading:
            self._resume_reading()
        self._next(now)

    def _answer_error(
        self,
        ex: Exchange,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if self.transport is None or self.closed:
            return
        if ex.answered:
            self._abort()
            return
        body = error_body(status, code, message)
        ex.local = (status, body, headers or [])
        ex.body.clear()
        if ex.upgrade:
            ex.keep_alive = False
        self._write_simple(status, body, headers or [], ex.keep_alive, ex.http11, ex.csp)
        ex.answered = True
        if ex.body_done:
            self._exchange_over(ex)
        else:
            if self.active is ex:
                self.active = None
            # The rest of the body is read and dropped; the next request follows it.
            if not ex.keep_alive:
                self._close()
            else:
                self._resume_reading()

    def _write_simple(
        self,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        http11: bool,
        csp: bytes = b"",
    ) -> None:
        assert self.transport is not None
        out = [
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b"
            % (status, _REASONS.get(status, b"Error"), len(body), csp)
        ]
        for k, v in headers:
            out.append(b"%s: %s\r\n" % (k, v))
        if not keep_alive:
            out.append(b"connection: close\r\n")
        elif not http11:
            out.append(b"connection: keep-alive\r\n")
        out.append(b"\r\n")
        out.append(body)
        self._write(b"".join(out))

    def _bad_request(self, why: str) -> None:
        self.front.errors(f"malformed request refused: {why}")
        self._refuse(400, f"malformed request: {why}")

    def _refuse(self, status: int, message: str) -> None:
        """Answer and close: after a framing error nothing more can be read safely."""
        if self.transport is None or self.closed:
            return
        if self.active is not None and self.active.answered:
            self._abort()
            return
        code = "invalid_request" if status != 408 else "request_timeout"
        self._write_simple(status, error_body(status, code, message), [], False, True)
        self._close()

    # ------------------------------------------------------------------ closing
    def _close(self) -> None:
        if self.batch:
            self.batch_end()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True
        self._cancel_timer()
        ex = self.active
        if ex is not None and ex.up is not None:
            up, ex.up = ex.up, None
            up.handler = None
            up.abort()

    def _abort(self) -> None:
        self._close()
        if self.transport is not None:
            self.transport.abort()
