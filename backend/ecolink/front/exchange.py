"""One client request as the front handles it (`Exchange`), and the header rules of
a hop: which request and answer headers end at the front."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ecolink.front.balancer import Pool, Replica
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
# Request headers the parser notes by name rather than forwarding as they came: each
# is dropped, replaced or checked on a service URL (x-forwarded-* as well, by prefix).
NOTED = SERVICE_DROP | {b"cookie", b"origin"}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
NO_BODY_OK = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


class Exchange:
    """One request from the client, from its head to the end of its answer.

    Every field starts as the class says; only the lists a request fills are made
    per instance (a request costs a few allocations, not forty-odd stores)."""

    method = ""
    method_b = b""  # as the client sent it
    url = b""
    http11 = True
    keep_alive = True
    upgrade = False
    chunked = False
    length: int | None = None
    body_bytes = 0
    body_done = False
    kind = "api"
    cluster_id = ""
    ref = ""
    replica: Replica | None = None
    up: Upstream | None = None
    started = 0.0
    status = 0
    framing = "none"
    answered = False  # the answer's head went to the client
    tunnel_rest = b""
    head_out = b""
    upath = b""
    prefixes: tuple[str, ...] = ()
    tries = 0
    retried = False
    sent_body = False
    local: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
    expect = False
    csp = b""  # the Content-Security-Policy line of a service-URL answer
    host = b""
    account = ""
    # What the parser noted of the head as each header arrived (one pass, one
    # lower-casing per header): the credentials, the origin, the names Connection
    # lists, the Upgrade value, the number of Host lines; below, per instance, the
    # cookies, earlier proxies' X-Forwarded-For, and every other header as the
    # forwarded line a replica gets (`plain`, its lower-cased names beside it in
    # case Connection names one of them).
    auth: bytes | None = None
    origin: bytes | None = None
    # made at the first Cookie / X-Forwarded-For line (most requests have neither)
    cookies: list[str] | None = None
    xff: list[bytes] | None = None
    named: set[bytes] | None = None
    upgrade_value = b""
    hosts = 0
    # A service request's pool, the replica tried first, and (made only if that one
    # fails) the ones left to try.
    pool: Pool | None = None
    first: Replica | None = None
    replicas: list[Replica] | None = None

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.plain: list[bytes] = []
        self.plain_names: list[bytes] = []


class HeadTooLarge(Exception):
    """The request head grew past `max_head_bytes` (raised from the parser's callbacks)."""
