"""A client connection's routing: a request goes to the API, or (on a service URL,
by path on the API's origin or by host on the service origin) is authenticated from
the table, checked against the account's caps and given the forwarded head its
replica sees."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from ecolink.api import edge_rules
from ecolink.front import cookies
from ecolink.front.client_upstream import UpstreamExchange
from ecolink.front.exchange import Exchange

# How long a request to a running cluster waits for its first ready targets from the feed.
FEED_WAIT_S = 2.0
_PREFIX = b"/gpu-clusters/"
_PREFIX_LEN = len(_PREFIX)
_SERVICE_SEG = b"/service/"
_SERVICE_LEN = len(_SERVICE_SEG) - 1  # up to the slash the replica's path starts with

# Every answer on a service URL (the replica's, and the front's own refusals) starts
# with the sandbox of `edge_rules`: on the API's origin never `allow-same-origin`.
_CSP_LINE = b"content-security-policy: %s\r\n" % edge_rules.service_csp(False).encode()
_CSP_ORIGIN_LINE = b"content-security-policy: %s\r\n" % edge_rules.service_csp(True).encode()

_UNAUTHENTICATED = {"code": "unauthenticated", "message": "missing, wrong or revoked credentials"}


class ServiceRouting(UpstreamExchange):
    """Where a request goes, and the checks and head of a service-URL request."""

    def _route(self, ex: Exchange) -> None:
        if self.ws_reserved:
            self._release_websocket()  # the upgrade before this request failed
        url = ex.url
        suffix = self.cfg.service_domain
        if suffix:
            host = ex.host
            ref = edge_rules.service_host_ref(host.decode("latin-1"), suffix) if host else None
            if ref is not None:
                # The cluster's own origin: every path is the replica's, at its root.
                ex.upath = url
                ex.ref = ref
                ex.csp = _CSP_ORIGIN_LINE
                self._service(ex, b"")
                return
        if url.startswith(_PREFIX):
            # /gpu-clusters/{ref}/service/{rest}[?query] (the path part only): the
            # replica gets /{rest}[?query]; /gpu-clusters/{ref}/service alone is the API's.
            end = url.find(b"?")
            if end < 0:
                end = len(url)
            cut = url.find(b"/", _PREFIX_LEN, end)  # (no "?" can sit inside "/service/")
            if cut >= 0 and url.startswith(_SERVICE_SEG, cut):
                ex.upath = url[cut + _SERVICE_LEN :]
                seg = url[_PREFIX_LEN:cut].decode("latin-1")
                ex.ref = unquote(seg) if "%" in seg else seg
                ex.csp = _CSP_LINE
                self._service(ex, None)
                return
        self._api(ex)

    def _service(self, ex: Exchange, at_root: bytes | None) -> None:
        """A request to a service URL (`at_root` is b"" on the cluster's own service
        origin, where the replica is served at the root; None on the API's origin)."""
        ex.kind = "service"
        front = self.front
        table = front.table
        account = None
        auth = ex.auth
        origin = ex.origin
        cookie_values = ex.cookies
        if auth is not None:
            # The key of the connection's last request, while the credential tables
            # are the ones it was checked against (a revoked key is a new snapshot).
            seen = self.key_seen
            if seen is not None and seen[0] == auth and seen[1] is table.snap:
                account = seen[2]
            else:
                scheme, _, token = auth.decode("latin-1").strip().partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    snap = table.snap
                    account = table.account_for_key(token.strip())
                    if account is not None and table.snap is snap:
                        self.key_seen = (auth, snap, account)
        by_cookie = False
        if account is None and cookie_values:
            # The API's parser, and its rule: two different session tokens open nothing.
            session = cookies.session_token(cookie_values)
            if session is not None:
                account = table.account_for_session(session)
                by_cookie = account is not None
        if account is None:
            self._answer_error(
                ex,
                401,
                _UNAUTHENTICATED["code"],
                _UNAUTHENTICATED["message"],
                [(b"www-authenticate", b'Bearer realm="ecolink"')],
            )
            return
        if by_cookie and ex.upgrade and origin is not None:
            allowed = self._allowed_origins(ex.host)
            if not edge_rules.origin_allowed(origin.decode("latin-1"), allowed):
                # A page of another site cannot open a WebSocket with the user's cookie.
                self._answer_error(
                    ex,
                    403,
                    "forbidden_origin",
                    (
                        "a console session opens WebSockets from "
                        f"{allowed[0] if allowed else 'this origin'} only"
                    ),
                )
                return
        if ex.upgrade:
            cap = self.cfg.max_websockets_per_account
            if front.websockets_open.get(account, 0) >= cap:
                self._answer_error(
                    ex,
                    429,
                    "too_many_websockets",
                    (f"this account has {cap} WebSockets open, the most allowed; close one first"),
                )
                return
            ex.account = account
            if front.reserve_websocket is not None:
                # A worker front: the cap holds across the whole server, so the
                # control plane, which counts every front's WebSockets, says.
                self.loop.create_task(self._reserve_websocket(ex, account, at_root, cookie_values))
                return
        self._service_route(ex, account, at_root, cookie_values)

    async def _reserve_websocket(
        self, ex: Exchange, account: str, at_root: bytes | None, cookie_values: list[str] | None
    ) -> None:
        front = self.front
        assert front.reserve_websocket is not None and front.release_websocket is not None
        try:
            ok: bool | None = await asyncio.wait_for(front.reserve_websocket(account), FEED_WAIT_S)
        except Exception as exc:  # the control plane is busy or gone
            front.errors(f"WebSocket count not checked: {exc!r}")
            ok = None
        if self.active is not ex or self.closed:
            if ok:
                front.release_websocket(account)
            return
        if ok is None:
            self._answer_error(
                ex, 503, "runtime_unavailable", "the WebSocket could not be counted; try again"
            )
            return
        if not ok:
            cap = self.cfg.max_websockets_per_account
            self._answer_error(
                ex,
                429,
                "too_many_websockets",
                (f"this account has {cap} WebSockets open, the most allowed; close one first"),
            )
            return
        self.ws_reserved = account
        self._service_route(ex, account, at_root, cookie_values)

    def _service_route(
        self, ex: Exchange, account: str, at_root: bytes | None, cookie_values: list[str] | None
    ) -> None:
        """The rest of a service-URL request once its account may send it: the cluster,
        the head its replica sees, and the replica."""
        front = self.front
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
        # The client's own headers as the parser kept them (without the ones a
        # service URL drops or replaces), less any its Connection header names.
        named = ex.named
        if named:
            out = [line for line, n in zip(ex.plain, ex.plain_names, strict=True) if n not in named]
        else:
            out = ex.plain
        if cookie_values:
            for kept in cookies.strip_session_values(cookie_values):
                out.append(b"cookie: %s\r\n" % kept.encode("latin-1"))
        host = ex.host
        if ex.xff:
            out.append(self._forwarded_lines(ex.xff, host, prefix))
        else:
            # The same for every request of a connection to one service URL and host.
            key = (host, prefix)
            if key != self.fwd_key:
                self.fwd_key = key
                self.fwd_lines = self._forwarded_lines([], host, prefix)
            out.append(self.fwd_lines)
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

    def _forwarded_lines(self, prior_xff: list[bytes], host: bytes, prefix: str) -> bytes:
        """What the replica learns of the client and the URL it used: X-Forwarded-*,
        Forwarded and X-Real-IP, set here whatever the client sent."""
        addr = self.addr_b
        scheme_b = self.scheme_b
        if prior_xff:
            xff = b", ".join([*prior_xff, addr])
            out = [b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (xff, scheme_b)]
        else:
            out = [self.xff_line]
        if host:
            out.append(b"X-Forwarded-Host: %s\r\n" % host)
        out.append(b"X-Forwarded-Prefix: %s\r\n" % prefix.encode())
        fwd = b'for="%s";proto=%s' % (addr, scheme_b)
        if host:
            fwd += b';host="%s"' % host.replace(b'"', b"")
        out.append(b"Forwarded: %s\r\nX-Real-IP: %s\r\n" % (fwd, addr))
        return b"".join(out)

    async def _await_feed(self, ex: Exchange, cluster_id: str) -> None:
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

    async def _await_targets(self, ex: Exchange, cluster_id: str) -> None:
        assert self.front.request_targets is not None
        try:
            await asyncio.wait_for(self.front.request_targets(cluster_id), 2.0)
        except Exception as exc:  # the control plane is busy or gone: say 503 below
            self.front.errors(f"replica addresses for {cluster_id} not known: {exc!r}")
        if self.active is ex and not self.closed:
            self._dispatch_service(ex, self.front.pools.get(cluster_id))
