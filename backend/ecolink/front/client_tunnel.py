"""A client connection's tunnel: an upgrade the upstream answered 101 turns the two
connections into a byte tunnel (a WebSocket's client messages size-checked on the
way), counted against the account's WebSocket cap until it ends."""

from __future__ import annotations

from urllib.parse import unquote

from ecolink.api import edge_rules
from ecolink.front import cookies
from ecolink.front.client_base import ClientBase
from ecolink.front.frames import FrameGuard
from ecolink.front.upstream import Upstream

_LINGER_S = 2.0


class Tunnelling(ClientBase):
    """The 101 answer, the tunnel it opens, and how the tunnel ends (a message over
    the limit closes it with 1009; either way the client gets the close frame)."""

    def upstream_upgraded(
        self,
        up: Upstream,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        rest: bytes,
    ) -> None:
        ex = self.active
        if ex is None or ex.up is not up or self.transport is None or not ex.upgrade:
            up.close()
            return
        out = [b"HTTP/1.1 101 %s\r\n" % (reason or b"Switching Protocols"), ex.csp]
        for name, value in headers:
            n = name.lower()
            if (
                ex.kind == "service"
                and n == b"set-cookie"
                and not cookies.set_cookie_allowed(value.decode("latin-1"), ex.prefixes)
            ):
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
            self.ws_reserved = ""  # the tunnel holds the reservation now
            counts = self.front.websockets_open
            counts[ex.account] = counts.get(ex.account, 0) + 1
        # What a WebSocket client may send on this route, checked frame by frame as it
        # passes (another protocol a replica upgrades to passes as it is).
        if any(
            n.lower() == b"upgrade" and v.strip().lower() == b"websocket" for n, v in ex.headers
        ):
            path = (
                "/gpu-clusters/-/service/"
                if ex.kind == "service"
                else unquote(ex.url.partition(b"?")[0].decode("latin-1"))
            )
            self.frames = FrameGuard(edge_rules.frame_limit(path))
        if rest:
            self._write(rest)
        if ex.tunnel_rest:
            if self.frames is not None and not self.frames.feed(ex.tunnel_rest):
                self._too_big(self.frames.limit)
                return
            up.send(ex.tunnel_rest)

    def _release_websocket(self) -> None:
        acct, self.ws_account = self.ws_account, ""
        reserved, self.ws_reserved = self.ws_reserved, ""
        release = self.front.release_websocket
        if acct:
            counts = self.front.websockets_open
            left = counts.get(acct, 1) - 1
            if left > 0:
                counts[acct] = left
            else:
                counts.pop(acct, None)
            if release is not None:
                release(acct)
        if reserved and release is not None:
            release(reserved)  # an upgrade that never became a tunnel

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
