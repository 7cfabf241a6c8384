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
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import httptools

from ecolink.api import edge_rules
from ecolink.front import cookies
from ecolink.front.balancer import Pool, Replica
from ecolink.front.upstream import ConnPool, Upstream, UpstreamUnreachable

if TYPE_CHECKING:
    from ecolink.front.table import ClusterInfo, Table

log = logging.getLogger("ecolink.front")

# Request headers that end at this hop (or that the front sets itself).
_REQ_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
    b"expect",
})
_SERVICE_DROP = _REQ_DROP | {b"authorization", b"forwarded", b"x-real-ip"}
_RESP_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_NO_BODY_OK = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
_BODY_BUFFER_MAX = 1 << 20
_LINGER_S = 2.0
# How long a request to a running cluster waits for its first ready targets from the feed.
FEED_WAIT_S = 2.0
_PREFIX = b"/gpu-clusters/"
_SERVICE_SEG = b"service"

# Every answer on a service URL (the replica's, and the front's own refusals) starts
# with the sandbox of `edge_rules`: on the API's origin never `allow-same-origin`.
_CSP_LINE = b"content-security-policy: %s\r\n" % edge_rules.service_csp(False).encode()
_CSP_ORIGIN_LINE = b"content-security-policy: %s\r\n" % edge_rules.service_csp(True).encode()

_UNAUTHENTICATED = {"code": "unauthenticated", "message": "missing, wrong or revoked credentials"}


@dataclass
class FrontConfig:
    head_timeout: float = 10.0
    idle_timeout: float = 20.0
    max_head_bytes: int = 64 * 1024
    max_connections: int = 4096
    max_per_address: int = 1024
    connect_timeout: float = 5.0
    upstream_idle_timeout: float = 30.0
    upstream_max_per_replica: int = 256
    scheme: str = "http"
    policy: str = "least-outstanding"
    # The API's public URL (a cookie-opened WebSocket may come from it) and the
    # separate service origin's host suffix (`gc-ID.SUFFIX` is a cluster's root).
    public_url: str = ""
    service_domain: str | None = None
    max_websockets_per_account: int = edge_rules.MAX_WEBSOCKETS_PER_ACCOUNT


class ErrorLog:
    """Logs an error once, then how many times it repeated (every `every_s`)."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        n = self.counts.get(what)
        if n is None:
            self.counts[what] = 0
            self.last[what] = now
            self.logger.warning("%s", what)
            return
        self.counts[what] = n + 1
        if now - self.last[what] >= self.every_s:
            self.logger.warning("%s (repeated %d times in %.0f s)", what, n + 1,
                                now - self.last[what])
            self.counts[what] = 0
            self.last[what] = now


class Front:
    """What every connection of one front process shares."""

    def __init__(self, table: Table, api_socket: str, cfg: FrontConfig,
                 request_targets: Callable[[str], Any] | None = None,
                 websockets_open: dict[str, int] | None = None) -> None:
        self.table = table
        self.api_socket = api_socket
        self.cfg = cfg
        self.pools: dict[str, Pool] = {}
        self.versions: dict[str, int] = {}
        self.policies: dict[str, str] = {}
        self.conns = ConnPool(max_per_key=cfg.upstream_max_per_replica,
                              connect_timeout=cfg.connect_timeout,
                              idle_timeout=cfg.upstream_idle_timeout)
        self.api_conns = ConnPool(max_per_key=1 << 16, connect_timeout=cfg.connect_timeout,
                                  idle_timeout=cfg.upstream_idle_timeout)
        self.clients: set[ClientProtocol] = set()
        self.per_address: collections.Counter[str] = collections.Counter()
        self.errors = ErrorLog(log)
        self.request_targets = request_targets
        # Service WebSockets open per account (in `ecolink serve`'s own process the
        # same count as the API's, so both kinds share one cap there).
        self.websockets_open: dict[str, int] = (
            websockets_open if websockets_open is not None else {})
        self.refused = 0
        # Requests waiting for a running cluster's first ready targets from the feed.
        self._target_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._routes: dict[tuple[str, str], tuple[ClusterInfo, str, tuple[str, ...]]] = {}
        self._route_snap: object = None

    # -- fed by the control plane
    def set_targets(self, cluster_id: str, targets: list[tuple[str, str, int, str]] | None,
                    error: str | None = None, policy: str | None = None) -> None:
        if targets is None:
            self.pools.pop(cluster_id, None)
            return
        pool = self.pools.get(cluster_id)
        if pool is None:
            pool = self.pools[cluster_id] = Pool(cluster_id, policy or self.cfg.policy)
        elif policy:
            pool.policy = policy
        pool.update(targets)
        pool.error = error  # type: ignore[attr-defined]
        if pool.replicas:
            for fut in self._target_waiters.pop(cluster_id, ()):
                if not fut.done():
                    fut.set_result(None)

    async def wait_for_targets(self, cluster_id: str, timeout: float) -> None:
        """Until the feed brings ready targets for the cluster, or `timeout`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._target_waiters.setdefault(cluster_id, [])
        waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._target_waiters.pop(cluster_id, None)

    def route(self, account: str, ref: str) -> tuple[ClusterInfo, str, tuple[str, ...]] | None:
        """The account's cluster called `ref` (id or name), its service prefix as the
        client wrote it, and every prefix a replica's cookie may be scoped to."""
        snap = getattr(self.table, "snap", None)
        if snap is not self._route_snap:
            self._routes.clear()
            self._route_snap = snap
        hit = self._routes.get((account, ref))
        if hit is not None:
            return hit
        info = self.table.cluster(account, ref)
        if info is None:
            return None
        prefix = "/gpu-clusters/" + quote(ref, safe="") + "/service"
        prefixes = tuple({prefix, f"/gpu-clusters/{info.id}/service",
                          "/gpu-clusters/" + quote(info.name, safe="") + "/service"})
        hit = (info, prefix, prefixes)
        if len(self._routes) < 10_000 and getattr(self.table, "snap", None) is snap:
            self._routes[(account, ref)] = hit
        return hit

    def counters(self) -> dict[str, dict[str, Any]]:
        return {cid: {r.name: r.counters() for r in pool.replicas}
                for cid, pool in self.pools.items()}

    def housekeeping(self) -> None:
        self.conns.sweep()
        self.api_conns.sweep()

    def sweep(self) -> None:
        """Time out the connections whose head or idle deadline has passed (one check
        for all, a few times a second, costs less than a timer per request)."""
        now = _monotonic()
        for client in [c for c in self.clients if c.deadline and c.deadline <= now]:
            client._timeout()


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_REASONS = {400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
            429: b"Too Many Requests",
            408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable", 307: b"Temporary Redirect"}


class _Exchange:
    """One request from the client, from its head to the end of its answer."""

    __slots__ = (
        "method", "url", "headers", "http11", "keep_alive", "upgrade", "chunked",
        "length", "body", "body_bytes", "body_done", "kind", "cluster_id", "ref",
        "replica", "up", "started", "status", "framing", "answered", "tunnel_rest",
        "head_out", "upath", "prefixes", "replicas", "tries", "retried", "sent_body",
        "local", "expect", "csp", "host", "account",
    )

    def __init__(self) -> None:
        self.method = ""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http11 = True
        self.keep_alive = True
        self.upgrade = False
        self.chunked = False
        self.length: int | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.body_bytes = 0
        self.body_done = False
        self.kind = "api"
        self.cluster_id = ""
        self.ref = ""
        self.replica: Replica | None = None
        self.up: Upstream | None = None
        self.started = 0.0
        self.status = 0
        self.framing = "none"
        self.answered = False  # the answer's head went to the client
        self.tunnel_rest = b""
        self.head_out = b""
        self.upath = b""
        self.prefixes: tuple[str, ...] = ()
        self.replicas: list[Replica] = []
        self.tries = 0
        self.retried = False
        self.sent_body = False
        self.local: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        self.expect = False
        self.csp = b""  # the Content-Security-Policy line of a service-URL answer
        self.host = b""
        self.account = ""


class HeadTooLarge(Exception):
    pass


class ClientProtocol(asyncio.Protocol):
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
        self.parsing: _Exchange | None = None
        self.queue: collections.deque[_Exchange] = collections.deque()
        self.active: _Exchange | None = None
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

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = peer[0] if isinstance(peer, tuple) else "unix"
        # What every forwarded request of this connection says of its client.
        self.addr_b = self.addr.encode()
        self.scheme_b = self.cfg.scheme.encode()
        self.xff_line = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (
            self.addr_b, self.scheme_b)
        front = self.front
        if (len(front.clients) >= self.cfg.max_connections
                or front.per_address[self.addr] >= self.cfg.max_per_address):
            front.refused += 1
            front.errors(f"connection refused: over the connection cap ({self.addr})")
            self.closed = True
            t = self.transport
            assert t is not None
            t.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n")
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

    def _idle(self) -> None:
        if not self.closed and self.active is None and not self.queue and not self.in_head:
            self._set_timer(self.cfg.idle_timeout)

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self.parsing = _Exchange()
        self.head_bytes = 0
        self.in_head = True
        if not self.deadline or self.active is None:
            self._set_timer(self.cfg.head_timeout)

    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.cfg.max_head_bytes:
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.cfg.max_head_bytes:
            raise HeadTooLarge
        ex.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        self.in_head = False
        if self.active is None:
            self._cancel_timer()
        p = self.parser
        ex.method = p.get_method().decode("latin-1")
        ex.http11 = p.get_http_version() == "1.1"
        ex.keep_alive = p.should_keep_alive()
        ex.upgrade = p.should_upgrade()
        for name, value in ex.headers:
            n = name.lower()
            if n == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    raise ValueError("only the chunked transfer coding is accepted")
                ex.chunked = True
            elif n == b"content-length":
                ex.length = int(value)
            elif n == b"expect" and value.strip().lower() == b"100-continue":
                ex.expect = True
        if ex.method == "CONNECT":
            raise ValueError("CONNECT is not served here")
        self.queue.append(ex)
        if self.active is None:
            self._next()

    def on_body(self, data: bytes) -> None:
        ex = self.parsing
        if ex is None or ex.local is not None and ex is not self.active:
            return
        if ex.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if ex is self.active and ex.up is not None and ex.local is None:
            ex.up.send(data)
            ex.sent_body = True
            return
        if ex.local is not None:
            return  # answered already: the body is read and dropped
        ex.body.append(data)
        ex.body_bytes += len(data)
        if ex.body_bytes > _BODY_BUFFER_MAX and not self.paused_reading:
            self._pause_reading()

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        if ex is None:
            return
        ex.body_done = True
        if ex.chunked and ex.local is None:
            if ex is self.active and ex.up is not None:
                ex.up.send(b"0\r\n\r\n")
            else:
                ex.body.append(b"0\r\n\r\n")
        if ex is self.active and ex.local is not None and ex.answered:
            self._exchange_over(ex)

    # ------------------------------------------------------------------ requests
    def _next(self) -> None:
        """Start answering the next queued request, if any."""
        if self.closed or self.active is not None:
            return
        if not self.queue:
            if self.eof:
                self._close()
                return
            self._idle()
            return
        ex = self.queue.popleft()
        self.active = ex
        self._cancel_timer()
        ex.started = _monotonic()
        self._route(ex)

    def _route(self, ex: _Exchange) -> None:
        url = ex.url
        suffix = self.cfg.service_domain
        if suffix:
            host = next((v for n, v in ex.headers if n.lower() == b"host"), b"")
            ref = edge_rules.service_host_ref(host.decode("latin-1"), suffix) if host else None
            if ref is not None:
                # The cluster's own origin: every path is the replica's, at its root.
                ex.upath = url
                ex.ref = ref
                ex.csp = _CSP_ORIGIN_LINE
                self._service(ex, b"")
                return
        path, _, query = url.partition(b"?")
        if path.startswith(_PREFIX):
            parts = path.split(b"/", 4)
            if len(parts) == 5 and parts[3] == _SERVICE_SEG:
                rest = b"/" + parts[4]
                ex.upath = rest + (b"?" + query if b"?" in url else b"")
                ex.ref = unquote(parts[2].decode("latin-1"))
                ex.csp = _CSP_LINE
                self._service(ex, None)
                return
        self._api(ex)

    # -- the API
    def _api(self, ex: _Exchange) -> None:
        ex.kind = "api"
        out = [b"%s %s HTTP/1.1\r\n" % (ex.method.encode(), ex.url)]
        host = b""
        named = _connection_tokens(ex.headers)
        for name, value in ex.headers:
            n = name.lower()
            if n == b"host":
                host = value
                continue
            if (n in _REQ_DROP or n in named or n.startswith(b"x-forwarded-")
                    or n == b"forwarded" or n == b"x-real-ip"):
                continue
            out.append(b"%s: %s\r\n" % (name, value))
        if host:
            out.append(b"host: %s\r\n" % host)
        out.append(b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n" % (
            self.addr.encode(), self.cfg.scheme.encode()))
        self._framing_headers(ex, out)
        ex.head_out = b"".join(out)
        up = self.front.api_conns.take_idle(self.front.api_socket)
        if up is not None:
            self._send(ex, up)
        else:
            self.loop.create_task(self._connect_api(ex))

    async def _connect_api(self, ex: _Exchange) -> None:
        try:
            up = await self.front.api_conns.acquire(self.front.api_socket)
        except UpstreamUnreachable as exc:
            self.front.errors(f"the API application cannot be reached: {exc}")
            if self.active is ex:
                self._answer_error(ex, 503, "runtime_unavailable",
                                   "the API cannot be reached; nothing was changed")
            return
        if self.active is not ex or self.closed:
            self.front.api_conns.release(up)
            return
        self._send(ex, up)

    def _framing_headers(self, ex: _Exchange, out: list[bytes]) -> None:
        if ex.upgrade:
            upgrade = next((v for n, v in ex.headers if n.lower() == b"upgrade"), b"")
            out.append(b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade)
        if ex.chunked:
            out.append(b"transfer-encoding: chunked\r\n")
        elif ex.length is not None:
            out.append(b"content-length: %d\r\n" % ex.length)
        elif ex.method not in _NO_BODY_OK and not ex.upgrade:
            out.append(b"content-length: 0\r\n")
        out.append(b"\r\n")

    # -- the service URL
    def _service(self, ex: _Exchange, at_root: bytes | None) -> None:
        """A request to a service URL (`at_root` is b"" on the cluster's own service
        origin, where the replica is served at the root; None on the API's origin)."""
        ex.kind = "service"
        front = self.front
        table = front.table
        account = None
        auth = None
        origin = None
        cookie_values = []
        for name, value in ex.headers:
            n = name.lower()
            if n == b"authorization":
                auth = value
            elif n == b"cookie":
                cookie_values.append(value.decode("latin-1"))
            elif n == b"host":
                ex.host = value
            elif n == b"origin":
                origin = value
        if auth is not None:
            scheme, _, token = auth.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                account = table.account_for_key(token.strip())
        by_cookie = False
        if account is None and cookie_values:
            # The API's parser, and its rule: two different session tokens open nothing.
            session = cookies.session_token(cookie_values)
            if session is not None:
                account = table.account_for_session(session)
                by_cookie = account is not None
        if account is None:
            self._answer_error(ex, 401, _UNAUTHENTICATED["code"], _UNAUTHENTICATED["message"],
                               [(b"www-authenticate", b'Bearer realm="ecolink"')])
            return
        if by_cookie and ex.upgrade and origin is not None:
            allowed = self._allowed_origins(ex.host)
            if not edge_rules.origin_allowed(origin.decode("latin-1"), allowed):
                # A page of another site cannot open a WebSocket with the user's cookie.
                self._answer_error(ex, 403, "forbidden_origin", (
                    "a console session opens WebSockets from "
                    f"{allowed[0] if allowed else 'this origin'} only"))
                return
        if ex.upgrade:
            cap = self.cfg.max_websockets_per_account
            if front.websockets_open.get(account, 0) >= cap:
                self._answer_error(ex, 429, "too_many_websockets", (
                    f"this account has {cap} WebSockets open, the most allowed; "
                    "close one first"))
                return
            ex.account = account
        route = front.route(account, ex.ref)
        if route is None:
            self._answer_error(ex, 404, "not_found", f"no cluster {ex.ref!r}")
            return
        info, prefix, ex.prefixes = route
        if at_root is not None:
            prefix = ""
            ex.prefixes = ("",)
        if info.status == "terminated" or info.endpoint_port is None:
            self._answer_error(ex, 404, "not_found", "the cluster has no service endpoint")
            return
        ex.cluster_id = info.id
        out = []
        named = _connection_tokens(ex.headers)
        prior_xff: list[bytes] = []
        host = b""
        for name, value in ex.headers:
            n = name.lower()
            if n == b"host":
                host = value
                continue
            if n in _SERVICE_DROP or n in named:
                continue
            if n == b"cookie":
                continue  # below, all Cookie headers at once
            if n.startswith(b"x-forwarded-"):
                if n == b"x-forwarded-for":
                    prior_xff.append(value)
                continue
            out.append(b"%s: %s\r\n" % (name, value))
        if cookie_values:
            for kept in cookies.strip_session_values(cookie_values):
                out.append(b"cookie: %s\r\n" % kept.encode("latin-1"))
        addr = self.addr_b
        scheme_b = self.scheme_b
        if prior_xff:
            xff = b", ".join([*prior_xff, addr])
            out.append(b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (xff, scheme_b))
        else:
            out.append(self.xff_line)
        if host:
            out.append(b"X-Forwarded-Host: %s\r\n" % host)
        out.append(b"X-Forwarded-Prefix: %s\r\n" % prefix.encode())
        fwd = b'for="%s";proto=%s' % (addr, scheme_b)
        if host:
            fwd += b';host="%s"' % host.replace(b'"', b"")
        out.append(b"Forwarded: %s\r\nX-Real-IP: %s\r\n" % (fwd, addr))
        self._framing_headers(ex, out)
        ex.head_out = b"".join(out)
        pool = front.pools.get(info.id)
        if pool is None or not pool.replicas:
            if front.request_targets is not None:
                self.loop.create_task(self._await_targets(ex, info.id))
                return
            if info.status == "running":
                # A front fed by the control plane may not have the addresses of
                # replicas that just got ready: wait briefly for the feed.
                self.loop.create_task(self._await_feed(ex, info.id))
                return
        self._dispatch_service(ex, pool)

    async def _await_feed(self, ex: _Exchange, cluster_id: str) -> None:
        await self.front.wait_for_targets(cluster_id, FEED_WAIT_S)
        if self.active is ex and not self.closed:
            self._dispatch_service(ex, self.front.pools.get(cluster_id))

    def _allowed_origins(self, host: bytes) -> list[str]:
        """The origins a cookie-opened WebSocket may come from (as the API's auth
        middleware has them): the one the request came to, and the public URL."""
        out = []
        if host:
            scheme = "https" if self.cfg.scheme == "https" else "http"
            out.append(f"{scheme}://{host.decode('latin-1').strip()}")
        if self.cfg.public_url:
            out.append(self.cfg.public_url)
        return out

    async def _await_targets(self, ex: _Exchange, cluster_id: str) -> None:
        assert self.front.request_targets is not None
        try:
            await asyncio.wait_for(self.front.request_targets(cluster_id), 2.0)
        except Exception as exc:  # the control plane is busy or gone: say 503 below
            self.front.errors(f"replica addresses for {cluster_id} not known: {exc!r}")
        if self.active is ex and not self.closed:
            self._dispatch_service(ex, self.front.pools.get(cluster_id))

    def _dispatch_service(self, ex: _Exchange, pool: Pool | None) -> None:
        if pool is None or not pool.replicas:
            msg = getattr(pool, "error", None) if pool is not None else None
            self._answer_error(ex, 503, "runtime_unavailable",
                               msg or "no ready replica behind the service URL")
            return
        ex.replicas = pool.order()
        self._try_next_replica(ex)

    def _try_next_replica(self, ex: _Exchange) -> None:
        if not ex.replicas:
            self._answer_error(ex, 503, "runtime_unavailable",
                               "no replica behind the service URL could be reached")
            return
        r = ex.replicas.pop(0)
        ex.replica = r
        ex.tries += 1
        r.in_flight += 1
        up = None if ex.upgrade else self.front.conns.take_idle(r.key)
        if up is not None:
            self._send(ex, up)
        else:
            self.loop.create_task(self._connect_replica(ex, r))

    async def _connect_replica(self, ex: _Exchange, r: Replica) -> None:
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

    def _send(self, ex: _Exchange, up: Upstream) -> None:
        ex.up = up
        up.handler = self
        up.head_only = ex.method == "HEAD"
        if ex.kind == "service":
            r = ex.replica
            assert r is not None
            head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%b" % (
                ex.method.encode(), ex.upath, r.host_port, ex.head_out)
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
    def upstream_head(self, up: Upstream, status: int, reason: bytes,
                      headers: list[tuple[bytes, bytes]]) -> None:
        ex = self.active
        if ex is None or ex.up is not up or self.transport is None:
            return
        ex.status = status
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        length = None
        chunked = False
        service = ex.kind == "service"
        if service:
            out.append(ex.csp)  # first: a replica's own policy adds, never loosens
        for name, value in headers:
            n = name.lower()
            if n in _RESP_DROP:
                if n == b"transfer-encoding":
                    chunked = True
                continue
            if n == b"content-length":
                length = value
            elif service and n == b"set-cookie" and not cookies.set_cookie_allowed(
                    value.decode("latin-1"), ex.prefixes):
                continue
            out.append(b"%s: %s\r\n" % (name, value))
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
        pool.release(up)
        self._finish_replica(ex, failed=False, status=ex.status)
        if ex.framing == "close":
            self._close()
            return
        self._exchange_over(ex)

    def upstream_upgraded(self, up: Upstream, status: int, reason: bytes,
                          headers: list[tuple[bytes, bytes]], rest: bytes) -> None:
        ex = self.active
        if ex is None or ex.up is not up or self.transport is None or not ex.upgrade:
            up.close()
            return
        out = [b"HTTP/1.1 101 %s\r\n" % (reason or b"Switching Protocols"), ex.csp]
        for name, value in headers:
            n = name.lower()
            if ex.kind == "service" and n == b"set-cookie" and not cookies.set_cookie_allowed(
                    value.decode("latin-1"), ex.prefixes):
                continue
            out.append(b"%s: %s\r\n" % (name, value))
        out.append(b"\r\n")
        self._write(b"".join(out))
        ex.status = 101
        self._finish_replica(ex, failed=False, status=101)
        self.tunnel = up
        self.active = None
        ex.up = None
        if ex.account:
            self.ws_account = ex.account
            counts = self.front.websockets_open
            counts[ex.account] = counts.get(ex.account, 0) + 1
        # What a WebSocket client may send on this route, checked frame by frame as it
        # passes (another protocol a replica upgrades to passes as it is).
        if any(n.lower() == b"upgrade" and v.strip().lower() == b"websocket"
               for n, v in ex.headers):
            path = "/gpu-clusters/-/service/" if ex.kind == "service" else unquote(
                ex.url.partition(b"?")[0].decode("latin-1"))
            self.frames = FrameGuard(edge_rules.frame_limit(path))
        if rest:
            self._write(rest)
        if ex.tunnel_rest:
            if self.frames is not None and not self.frames.feed(ex.tunnel_rest):
                self._too_big(self.frames.limit)
                return
            up.send(ex.tunnel_rest)

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
            if stale and not ex.retried and ex.method in _IDEMPOTENT and not ex.sent_body:
                ex.retried = True
                self.loop.create_task(self._connect_api(ex))
                return
            self._answer_error(ex, 503, "runtime_unavailable",
                               "the API closed the connection; the request may not have run")
            return
        r = ex.replica
        if r is not None:
            r.in_flight -= 1
            ex.replica = None
        if stale and not ex.retried and ex.method in _IDEMPOTENT and not ex.sent_body \
                and r is not None:
            # A pooled connection the replica had closed meanwhile: once more, fresh.
            ex.retried = True
            ex.replicas.insert(0, r)
            self._retry_fresh(ex)
            return
        if r is not None:
            r.failed(time.monotonic())
            self.front.errors(f"replica {r.name} of {r.cluster_id} broke the exchange")
        if not ex.sent_body and not ex.retried:
            self._try_next_replica(ex)
            return
        self._answer_error(ex, 503, "runtime_unavailable",
                           "the replica behind the service URL broke the exchange")

    def _retry_fresh(self, ex: _Exchange) -> None:
        r = ex.replicas.pop(0)
        ex.replica = r
        r.in_flight += 1
        self.loop.create_task(self._connect_fresh(ex, r))

    async def _connect_fresh(self, ex: _Exchange, r: Replica) -> None:
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

    def upstream_pause(self) -> None:
        self._pause_reading()

    def upstream_resume(self) -> None:
        self._resume_reading()

    # ------------------------------------------------------------------ answers
    def _finish_replica(self, ex: _Exchange, *, failed: bool, status: int) -> None:
        r = ex.replica
        if r is None:
            return
        ex.replica = None
        r.in_flight -= 1
        if failed:
            r.failed(time.monotonic())
        else:
            r.answered(status, _monotonic() - ex.started)

    def _exchange_over(self, ex: _Exchange) -> None:
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
        self._next()

    def _answer_error(self, ex: _Exchange, status: int, code: str, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.transport is None or self.closed:
            return
        if ex.answered:
            self._abort()
            return
        body = _error_body(status, code, message)
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

    def _write_simple(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                      keep_alive: bool, http11: bool, csp: bytes = b"") -> None:
        assert self.transport is not None
        out = [b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b"
               % (status, _REASONS.get(status, b"Error"), len(body), csp)]
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
        self._write_simple(status, _error_body(status, code, message), [], False, True)
        self._close()

    def _pause_reading(self) -> None:
        if not self.paused_reading and self.transport is not None and not self.closed:
            self.paused_reading = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.paused_reading and self.transport is not None and not self.closed:
            self.paused_reading = False
            self.transport.resume_reading()

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

    def _release_websocket(self) -> None:
        acct, self.ws_account = self.ws_account, ""
        if acct:
            counts = self.front.websockets_open
            left = counts.get(acct, 1) - 1
            if left > 0:
                counts[acct] = left
            else:
                counts.pop(acct, None)

    def _too_big(self, limit: int) -> None:
        """A client's WebSocket message over the route's limit: close with 1009 (as
        the API's own check does), drop the tunnel, and linger so the close arrives."""
        reason = b"message too big: at most %d bytes here" % limit
        self._write(b"\x88%c%b%b" % (len(reason) + 2, (1009).to_bytes(2, "big"), reason))
        up, self.tunnel = self.tunnel, None
        if up is not None:
            up.handler = None
            up.close()
        self._release_websocket()
        self._linger()

    def _linger(self) -> None:
        """The far end of a tunnel closed (a WebSocket's close frame, e.g. 1009 for a
        message too big, is the last thing it sent): send that on and a FIN, then read
        and drop what the client still sends for a moment before closing. Closing at
        once with its unread bytes pending would reset the connection, and the client
        would lose the close frame."""
        t = self.transport
        if t is None or self.closed:
            return
        if self.batch:
            self.batch_end()
        if not t.can_write_eof() or t.is_closing():
            self._close()
            return
        t.write_eof()
        self.lingering = True
        self._resume_reading()
        self._set_timer(_LINGER_S)

    def _abort(self) -> None:
        self._close()
        if self.transport is not None:
            self.transport.abort()


class FrameGuard:
    """Follows the frames a WebSocket client sends (headers only; payload bytes are
    counted, never copied) and says when a message grows over `limit`."""

    __slots__ = ("limit", "left", "head", "message")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = 0  # payload bytes of the current frame still to pass
        self.head = b""  # a frame header cut by a read
        self.message = 0  # bytes of the data message being fragmented so far

    def feed(self, data: bytes) -> bool:
        """False when `data` takes a message over the limit."""
        i = 0
        n = len(data)
        while i < n:
            if self.left:
                take = min(self.left, n - i)
                self.left -= take
                i += take
                continue
            head = self.head + data[i:i + 14]
            if len(head) < 2:
                self.head = head
                return True
            b0, b1 = head[0], head[1]
            size = b1 & 0x7F
            need = 2 + (4 if b1 & 0x80 else 0) + (2 if size == 126 else 8 if size == 127 else 0)
            if len(head) < need:
                self.head = head
                return True
            if size == 126:
                size = int.from_bytes(head[2:4], "big")
            elif size == 127:
                size = int.from_bytes(head[2:10], "big")
            i += need - len(self.head)
            self.head = b""
            if not b0 & 0x08:  # a data frame (continuation, text, binary)
                total = (self.message if b0 & 0x0F == 0 else 0) + size
                if total > self.limit:
                    return False
                self.message = 0 if b0 & 0x80 else total
            self.left = size
        return True


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names the client listed in Connection (hop-by-hop as well)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    return named
