"""Connections to replicas (and to the API's unix socket): one HTTP/1.1 exchange at
a time each, kept alive in a bounded pool per address."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import TYPE_CHECKING, Any

import httptools

from ecolink.front.exchange import RESP_DROP

if TYPE_CHECKING:
    # What an upstream connection reports to: the client exchange that holds it
    # (upstream_head, _body, _done, _upgraded, _lost, _pause, _resume, batch_start,
    # batch_end; `headers` of upstream_head is empty but for a 101, see on_header).
    # A class, not a Protocol: compiled by mypyc, a call to it is a native call, not
    # a method looked up by name (five of them per request).
    from ecolink.front.client_upstream import UpstreamExchange as Handler


Key = tuple[str, int] | str  # (host, port), or the path of a unix socket


class Upstream(asyncio.Protocol):
    def __init__(self, pool: ConnPool, key: Key) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.handler: Handler | None = None
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.keep_alive = True
        self.head_only = False  # the request was HEAD: the answer has no body
        self.tunnel = False
        self.idle_since = 0.0
        self._reason = b""
        # Every header of the answer as it came, kept for a 101 only (the tunnel's
        # answer is made from them); decided at the answer's first header.
        self._headers: list[tuple[bytes, bytes]] = []
        self._first_header = True
        self._keep_headers = False
        # The answer's head as it arrived: the lines the client gets (hop-by-hop ones
        # left out), its Content-Length, whether it was chunked, and where among the
        # lines each Set-Cookie sits (a service URL checks their scope).
        self.lines: list[bytes] = []
        self.length: bytes | None = None
        self.chunked = False
        self.set_cookies: list[tuple[int, bytes]] = []
        self._skip = False
        self._head_done = False
        self.pooled = False

    # -- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        h, self.handler = self.handler, None
        if h is not None:
            h.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.upstream_pause()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.upstream_resume()

    def data_received(self, data: bytes) -> None:
        h = self.handler
        if self.tunnel:
            if h is not None:
                h.upstream_body(data)
            return
        if h is None:
            # Bytes from an idle connection: it cannot be reused safely.
            self.close()
            return
        self.got_bytes = True
        h.batch_start()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.tunnel = True
            if self.handler is not None:
                self.handler.upstream_upgraded(
                    self, 101, self._reason, self._headers, data[offset:]
                )
        except (httptools.HttpParserError, ValueError):
            if not self._head_done:
                self.keep_alive = False
                self.close()
        finally:
            if self._head_done:
                self._head_done = False
                self._skip = False
                self.parser = httptools.HttpResponseParser(self)
                if self.handler is not None:
                    self.handler.upstream_done(self)
            h.batch_end()

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self._headers:  # (an empty one is kept: nothing holds on to it)
            self._headers = []
        self._first_header = True
        self._keep_headers = False
        self._reason = b""
        self.lines = []
        self.length = None
        self.chunked = False
        if self.set_cookies:
            self.set_cookies = []

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._first_header:
            self._first_header = False
            self._keep_headers = self.parser.get_status_code() == 101
        if self._keep_headers:
            self._headers.append((name, value))
        n = name.lower()
        if n in RESP_DROP:
            if n == b"transfer-encoding":
                self.chunked = True
            return
        if n == b"content-length":
            self.length = value
        elif n == b"set-cookie":
            self.set_cookies.append((len(self.lines), value))
        self.lines.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self._skip = True  # 100 Continue and friends: the front already answered
            return
        if status == 101:
            self._skip = True  # the upgrade exception follows the message's end
            return
        self._skip = False
        self.keep_alive = self.parser.should_keep_alive()
        if self.handler is not None:
            self.handler.upstream_head(self, status, self._reason, self._headers)
        if self.head_only:
            # llhttp does not know the request was HEAD: the answer ends here. What
            # the parser makes of the rest is ignored; a fresh one takes over after.
            self._skip = True
            self._head_done = True

    def on_body(self, data: bytes) -> None:
        if self.handler is not None and not self._skip:
            self.handler.upstream_body(data)

    def on_message_complete(self) -> None:
        if self._skip:
            self._skip = False
            return
        if self.handler is not None:
            self.handler.upstream_done(self)

    # -- use
    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()


class UpstreamUnreachable(Exception):
    pass


class ConnPool:
    """Idle keep-alive connections per address, and a bound on open ones."""

    def __init__(
        self,
        *,
        max_per_key: int = 256,
        connect_timeout: float = 5.0,
        idle_timeout: float = 30.0,
        max_idle_per_key: int = 256,
    ) -> None:
        self.max_per_key = max_per_key
        self.max_idle_per_key = max_idle_per_key
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.idle: dict[Key, list[Upstream]] = {}
        self.open: dict[Key, int] = collections.Counter()
        self.waiters: dict[Key, collections.deque[asyncio.Future[None]]] = {}
        self._members: set[Upstream] = set()

    def take_idle(self, key: Key) -> Upstream | None:
        idle = self.idle.get(key)
        while idle:
            up = idle.pop()
            up.pooled = False
            if not up.closed:
                up.reused = True
                up.got_bytes = False
                return up
        return None

    async def acquire(self, key: Key) -> Upstream:
        """A connection to `key`: an idle one, else a new one within the bound
        (waiting for one to come free when the bound is reached)."""
        while True:
            up = self.take_idle(key)
            if up is not None:
                return up
            if self.open[key] < self.max_per_key:
                return await self.connect(key)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.setdefault(key, collections.deque()).append(fut)
            try:
                await asyncio.wait_for(fut, self.connect_timeout)
            except TimeoutError:
                raise UpstreamUnreachable(f"no free connection to {key} in time") from None

    async def connect(self, key: Key) -> Upstream:
        loop = asyncio.get_running_loop()
        self.open[key] += 1
        up = Upstream(self, key)
        try:
            if isinstance(key, str):
                coro: Any = loop.create_unix_connection(lambda: up, key)
            else:
                coro = loop.create_connection(lambda: up, key[0], key[1])
            await asyncio.wait_for(coro, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.open[key] -= 1
            self._wake(key)
            raise UpstreamUnreachable(f"cannot connect to {key}: {exc or 'timed out'}") from None
        except BaseException:
            self.open[key] -= 1
            self._wake(key)
            raise
        self._members.add(up)
        return up

    def release(self, up: Upstream, now: float = 0.0) -> None:
        """The exchange is over; keep the connection if it can serve another
        (`now`: the caller's monotonic time, if it has it)."""
        up.handler = None
        up.head_only = False
        if up.pooled:
            return  # released once already
        if up.closed or not up.keep_alive or up.tunnel:
            up.close()
            return
        idle = self.idle.setdefault(up.key, [])
        if len(idle) >= self.max_idle_per_key:
            up.close()
            return
        up.idle_since = now or time.monotonic()
        up.pooled = True
        idle.append(up)
        if self.waiters:
            self._wake(up.key)

    def forget(self, up: Upstream) -> None:
        """Called once the connection is closed."""
        if up in self._members:
            self._members.discard(up)
            self.open[up.key] -= 1
            idle = self.idle.get(up.key)
            if idle and up in idle:
                idle.remove(up)
            self._wake(up.key)

    def _wake(self, key: Key) -> None:
        q = self.waiters.get(key)
        while q:
            fut = q.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def sweep(self) -> None:
        """Close connections idle longer than the idle timeout."""
        limit = time.monotonic() - self.idle_timeout
        for idle in list(self.idle.values()):
            for up in [u for u in idle if u.idle_since < limit]:
                up.close()

    def close_all(self) -> None:
        for up in list(self._members):
            up.abort()
