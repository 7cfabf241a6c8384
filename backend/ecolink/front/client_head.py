"""A client connection's request parsing: httptools' callbacks, the head's size and
time limits, the framing of the body, and the queue of pipelined requests."""

from __future__ import annotations

from time import monotonic as _monotonic

from ecolink.front.client_service import ServiceRouting
from ecolink.front.exchange import NOTED, Exchange, HeadTooLarge

_BODY_BUFFER_MAX = 1 << 20
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


def _note(ex: Exchange, n: bytes, value: bytes) -> None:
    """A header of `NOTED` (lower-cased name `n`): what the exchange needs of it."""
    if n == b"host":
        ex.hosts += 1
        if ex.hosts > 1:
            # RFC 9112 3.2: a request with more than one Host line is refused, so
            # that no two hops can read a different host from it.
            raise ValueError("more than one Host header")
        ex.host = value
    elif n == b"cookie":
        if ex.cookies is None:
            ex.cookies = []
        ex.cookies.append(value.decode("latin-1"))
    elif n == b"origin":
        ex.origin = value
        ex.plain.append(b"origin: %s\r\n" % value)
        ex.plain_names.append(n)
    elif n == b"connection":
        named = ex.named
        if named is None:
            named = ex.named = set()
        named.update(t.strip().lower() for t in value.split(b","))
    elif n == b"upgrade":
        if not ex.upgrade_value:
            ex.upgrade_value = value
    elif n == b"transfer-encoding":
        if value.strip().lower() != b"chunked":
            raise ValueError("only the chunked transfer coding is accepted")
        ex.chunked = True
    elif n == b"content-length":
        ex.length = int(value)
    elif n == b"expect":
        if value.strip().lower() == b"100-continue":
            ex.expect = True


class RequestParsing(ServiceRouting):
    """The parser's callbacks: a head over `max_head_bytes` or late past
    `head_timeout` is refused; finished heads queue, answered one at a time."""

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self.parsing = Exchange()
        self.head_bytes = 0
        self.in_head = True
        if not self.deadline or self.active is None:
            self.deadline = self.rx_at + self.cfg.head_timeout

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
        # One look at each header as it arrives: the ones a service URL drops,
        # replaces or checks are noted; every other is kept as its forwarded line.
        n = name.lower()
        if n == b"authorization":
            ex.auth = value
        elif n in NOTED:
            _note(ex, n, value)
        elif n.startswith(b"x-forwarded-"):
            if n == b"x-forwarded-for":
                if ex.xff is None:
                    ex.xff = []
                ex.xff.append(value)
        else:
            ex.plain.append(b"%s: %s\r\n" % (name, value))
            ex.plain_names.append(n)

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        self.in_head = False
        if self.active is None:
            self.deadline = 0.0
        p = self.parser
        m = ex.method_b = p.get_method()
        ex.method = _METHODS.get(m) or m.decode("latin-1")
        ka = ex.keep_alive = p.should_keep_alive()
        # llhttp takes versions 0.9, 1.0, 1.1 and 2.0 only; without a Connection
        # header only 1.1 keeps the connection alive, so that says it (the version's
        # string costs more than the rest of this callback).
        ex.http11 = ka if ex.named is None else p.get_http_version() == "1.1"
        ex.upgrade = p.should_upgrade()
        if ex.method == "CONNECT":
            raise ValueError("CONNECT is not served here")
        if self.active is None and not self.queue and not self.closed:
            # Nothing ahead of it (the usual case): answered at once.
            self.active = ex
            ex.started = self.rx_at
            self._route(ex)
            return
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
    def _next(self, now: float = 0.0) -> None:
        """Start answering the next queued request, if any (`now`: the caller's
        monotonic time, if it has it)."""
        if self.closed or self.active is not None:
            return
        if not self.queue:
            if self.eof:
                self._close()
            elif not self.in_head:
                self.deadline = (now or _monotonic()) + self.cfg.idle_timeout
            return
        ex = self.queue.popleft()
        self.active = ex
        self.deadline = 0.0
        ex.started = _monotonic()
        self._route(ex)
