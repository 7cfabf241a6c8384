"""A client connection's request parsing: httptools' callbacks, the head's size and
time limits, the framing of the body, and the queue of pipelined requests."""

from __future__ import annotations

from time import monotonic as _monotonic

from ecolink.front.client_service import ServiceRouting
from ecolink.front.exchange import Exchange, HeadTooLarge

_BODY_BUFFER_MAX = 1 << 20


class RequestParsing(ServiceRouting):
    """The parser's callbacks: a head over `max_head_bytes` or late past
    `head_timeout` is refused; finished heads queue, answered one at a time."""

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self.parsing = Exchange()
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
