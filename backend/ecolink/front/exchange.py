"""One client request as the front handles it (`Exchange`), and the header rules of
a hop: which request and answer headers end at the front."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ecolink.front.balancer import Replica
    from ecolink.front.upstream import Upstream

# Request headers that end at this hop (or that the front sets itself).
REQ_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
SERVICE_DROP = REQ_DROP | {b"authorization", b"forwarded", b"x-real-ip"}
RESP_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
NO_BODY_OK = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


class Exchange:
    """One request from the client, from its head to the end of its answer."""

    __slots__ = (
        "method",
        "url",
        "headers",
        "http11",
        "keep_alive",
        "upgrade",
        "chunked",
        "length",
        "body",
        "body_bytes",
        "body_done",
        "kind",
        "cluster_id",
        "ref",
        "replica",
        "up",
        "started",
        "status",
        "framing",
        "answered",
        "tunnel_rest",
        "head_out",
        "upath",
        "prefixes",
        "replicas",
        "tries",
        "retried",
        "sent_body",
        "local",
        "expect",
        "csp",
        "host",
        "account",
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
    """The request head grew past `max_head_bytes` (raised from the parser's callbacks)."""


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names the client listed in Connection (hop-by-hop as well)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    return named
