"""A client connection's upstream exchange: the request head sent on a pooled
keep-alive connection (to a replica or the API's unix socket), the answer streamed
back with its framing, the body streamed up, and a broken exchange retried on a
fresh connection or another replica when that is safe."""

from __future__ import annotations

import time
from time import monotonic as _monotonic

from ecolink.front import cookies
from ecolink.front.balancer import Pool, Replica
from ecolink.front.client_tunnel import Tunnelling
from ecolink.front.exchange import (
    IDEMPOTENT,
    NO_BODY_OK,
    REQ_DROP,
    Exchange,
)
from ecolink.front.upstream import Upstream, UpstreamUnreachable

_OK_LINE = b"HTTP/1.1 200 OK\r\n"  # most answers' status line, made once


class UpstreamExchange(Tunnelling):
    """Forwarding one exchange: to the API, or to a replica of a service URL
    chosen in the pool's order; then the upstream's events (`upstream.Handler`)."""

    # ------------------------------------------------------------------ the API
    def _api(self, ex: Exchange) -> None:
        ex.kind = "api"
        out = [b"%s %s HTTP/1.1\r\n" % (ex.method_b, ex.url)]
        host = b""
        named = ex.named or ()  # what the client's Connection header lists
        for name, value in ex.headers:
            n = name.lower()
            if n == b"host":
                host = value
                continue
            if (
                n in REQ_DROP
                or n in named
                or n.startswith(b"x-forwarded-")
                or n == b"forwarded"
                or n == b"x-real-ip"
            ):
                continue
            out.append(b"%s: %s\r\n" % (name, value))
        if host:
            out.append(b"host: %s\r\n" % host)
        out.append(
            b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n"
            % (self.addr.encode(), self.cfg.scheme.encode())
        )
        self._framing_headers(ex, out)
        ex.head_out = b"".join(out)
        up = self.front.api_conns.take_idle(self.front.api_socket)
        if up is not None:
            self._send(ex, up)
        else:
            self.loop.create_task(self._connect_api(ex))

    async def _connect_api(self, ex: Exchange) -> None:
        try:
            up = await self.front.api_conns.acquire(self.front.api_socket)
        except UpstreamUnreachable as exc:
            self.front.errors(f"the API application cannot be reached: {exc}")
            if self.active is ex:
                self._answer_error(
                    ex, 503, "runtime_unavailable", "the API cannot be reached; nothing was changed"
                )
            return
        if self.active is not ex or self.closed:
            self.front.api_conns.release(up)
            return
        self._send(ex, up)

    def _framing_headers(self, ex: Exchange, out: list[bytes]) -> None:
        if ex.upgrade:
            out.append(b"connection: upgrade\r\nupgrade: %s\r\n" % ex.upgrade_value)
        if ex.chunked:
            out.append(b"transfer-encoding: chunked\r\n")
        elif ex.length is not None:
            out.append(b"content-length: %d\r\n" % ex.length)
        elif ex.method not in NO_BODY_OK and not ex.upgrade:
            out.append(b"content-length: 0\r\n")
        out.append(b"\r\n")

    # ------------------------------------------------------------------ replicas
    def _dispatch_service(self, ex: Exchange, pool: Pool | None) -> None:
        if pool is None or not pool.replicas:
            msg = pool.error if pool is not None else None
            self._answer_error(
                ex, 503, "runtime_unavailable", msg or "no ready replica behind the service URL"
            )
            return
        # The best replica now; the rest of the order only if it fails.
        ex.pool = pool
        r = ex.first = pool.pick()
        self._try_replica(ex, r)

    def _replicas_left(self, ex: Exchange) -> list[Replica]:
        """The replicas still to try after the first, in the pool's order now."""
        left = ex.replicas
        if left is None:
            pool = ex.pool
            first = ex.first
            left = ex.replicas = [r for r in pool.order() if r is not first] if pool else []
        return left

    def _try_next_replica(self, ex: Exchange) -> None:
        left = self._replicas_left(ex)
        if not left:
            self._answer_error(
                ex, 503, "runtime_unavailable", "no replica behind the service URL could be reached"
            )
            return
        self._try_replica(ex, left.pop(0))

    def _try_replica(self, ex: Exchange, r: Replica) -> None:
        ex.replica = r
        ex.tries += 1
        r.in_flight += 1
        up = None if ex.upgrade else self.front.conns.take_idle(r.key)
        if up is not None:
            self._send(ex, up)
        else:
            self.loop.create_task(self._connect_replica(ex, r))

    async def _connect_replica(self, ex: Exchange, r: Replica) -> None:
        try:
            if ex.upgrade:
                up = await self.front.conns.connect(r.key)
            else:
                up = await self.front.conns.acquire(r.key)
        except UpstreamUnreachable as exc:
            r.in_flight -= 1
            r.failed(time.monotonic())
            self.front.errors(f"replica {r.name} of {r.cluster_id} unreachable: {exc}")
            if self.active is ex and not self.closed:
                ex.replica = None
                self._try_next_replica(ex)
            return
        if self.active is not ex or self.closed:
            self.front.conns.release(up)
            return
        self._send(ex, up)

    def _send(self, ex: Exchange, up: Upstream) -> None:
        ex.up = up
        up.handler = self
        up.head_only = ex.method == "HEAD"
        if ex.kind == "service":
            r = ex.replica
            assert r is not None
            head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%b" % (
                ex.method_b,
                ex.upath,
                r.host_port,
                ex.head_out,
            )
        else:
            head = ex.head_out
        if ex.expect and not ex.body_done and not ex.body and self.transport is not None:
            ex.expect = False
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not ex.body:
            up.send(head)
        else:
            up.send(b"".join([head, *ex.body]))
            ex.sent_body = True
            ex.body.clear()
            ex.body_bytes = 0
            if self.paused_reading:
                self._resume_reading()

    # ------------------------------------------------------------------ upstream events
    def upstream_head(
        self, up: Upstream, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        ex = self.active
        if ex is None or ex.up is not up or self.transport is None:
            return
        ex.status = status
        out = [
            _OK_LINE
            if status == 200 and reason == b"OK"
            else b"HTTP/1.1 %d %s\r\n" % (status, reason)
        ]
        lines = up.lines
        if ex.kind == "service":
            out.append(ex.csp)  # first: a replica's own policy adds, never loosens
            if up.set_cookies:
                # A cookie scoped wider than the cluster's own paths is dropped.
                dropped = {
                    i
                    for i, v in up.set_cookies
                    if not cookies.set_cookie_allowed(v.decode("latin-1"), ex.prefixes)
                }
                lines = [line for i, line in enumerate(lines) if i not in dropped]
        out += lines
        length = up.length
        chunked = up.chunked
        no_body = ex.method == "HEAD" or status in (204, 304)
        if no_body:
            ex.framing = "none"
            if chunked and length is None and ex.http11:
                out.append(b"Transfer-Encoding: chunked\r\n")
        elif length is not None and not chunked:
            ex.framing = "raw"
        elif ex.http11:
            ex.framing = "chunked"
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            ex.framing = "close"
            ex.keep_alive = False
        if ex.upgrade and status != 101:
            ex.keep_alive = False  # what follows the head is not HTTP any more
        if not ex.keep_alive:
            out.append(b"Connection: close\r\n")
        elif not ex.http11:
            out.append(b"Connection: keep-alive\r\n")
        out.append(b"\r\n")
        ex.answered = True
        self._write(b"".join(out))

    def upstream_body(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            return
        if self.tunnel is not None:
            self._write(data)
            return
        ex = self.active
        if ex is None or not data:
            return
        if ex.framing == "chunked":
            self._write(b"%x\r\n%b\r\n" % (len(data), data))
        elif ex.framing != "none":
            self._write(data)

    def upstream_done(self, up: Upstream) -> None:
        ex = self.active
        if ex is None or ex.up is not up:
            return
        if ex.framing == "chunked" and self.transport is not None:
            self._write(b"0\r\n\r\n")
        ex.up = None
        if not ex.body_done:
            # The replica answered before the request body ended: the connection
            # cannot carry another exchange.
            up.keep_alive = False
        pool = self.front.conns if ex.kind == "service" else self.front.api_conns
        now = _monotonic()
        pool.release(up, now)
        self._finish_replica(ex, failed=False, status=ex.status, now=now)
        if ex.framing == "close":
            self._close()
            return
        self._exchange_over(ex, now)

    def upstream_lost(self, up: Upstream, exc: BaseException | None) -> None:
        if self.tunnel is up:
            self.tunnel = None
            self._release_websocket()
            self._linger()
            return
        ex = self.active
        if ex is None or ex.up is not up:
            return
        ex.up = None
        if ex.answered:
            if ex.framing == "close":
                self._finish_replica(ex, failed=False, status=ex.status)
                self._close()
                return
            # The answer was cut short: all the client can learn is a closed connection.
            self._finish_replica(ex, failed=True, status=ex.status)
            self._abort()
            return
        stale = up.reused and not up.got_bytes
        if ex.kind == "api":
            if stale and not ex.retried and ex.method in IDEMPOTENT and not ex.sent_body:
                ex.retried = True
                self.loop.create_task(self._connect_api(ex))
                return
            self._answer_error(
                ex,
                503,
                "runtime_unavailable",
                "the API closed the connection; the request may not have run",
            )
            return
        r = ex.replica
        if r is not None:
            r.in_flight -= 1
            ex.replica = None
        if (
            stale
            and not ex.retried
            and ex.method in IDEMPOTENT
            and not ex.sent_body
            and r is not None
        ):
            # A pooled connection the replica had closed meanwhile: once more, fresh.
            ex.retried = True
            self._replicas_left(ex).insert(0, r)
            self._retry_fresh(ex)
            return
        if r is not None:
            r.failed(time.monotonic())
            self.front.errors(f"replica {r.name} of {r.cluster_id} broke the exchange")
        if not ex.sent_body and not ex.retried:
            self._try_next_replica(ex)
            return
        self._answer_error(
            ex, 503, "runtime_unavailable", "the replica behind the service URL broke the exchange"
        )

    def _retry_fresh(self, ex: Exchange) -> None:
        r = self._replicas_left(ex).pop(0)
        ex.replica = r
        r.in_flight += 1
        self.loop.create_task(self._connect_fresh(ex, r))

    async def _connect_fresh(self, ex: Exchange, r: Replica) -> None:
        try:
            up = await self.front.conns.connect(r.key)
        except UpstreamUnreachable:
            r.in_flight -= 1
            r.failed(time.monotonic())
            if self.active is ex and not self.closed:
                ex.replica = None
                self._try_next_replica(ex)
            return
        if self.active is not ex or self.closed:
            self.front.conns.release(up)
            return
        self._send(ex, up)
