"""The instance's Prometheus metrics: one registry per app.

`ObserveMiddleware` counts HTTP requests by method, route template and status,
times them, keeps the count of open WebSockets by route and gives each request
its id (`logs`). `instrument_store` times every public call of the store (the
store object is changed in place, so every holder of it is timed). Gauges read
at scrape time: watch clients, exec sessions, runtime availability, leadership.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecolink.observe.logs import REQUEST_ID_HEADER, request_id_from, request_id_var

if TYPE_CHECKING:
    from ecolink.api.context import AppContext

UNMATCHED = "<unmatched>"
_EXEC_ROUTE_PARTS = ("/exec", "/sessions/{sid}/attach")
STORE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    """The series of one API instance (the service URL's traffic per replica is
    added by the `/metrics` route, for the caller's account)."""

    def __init__(self) -> None:
        # No `_created` series: they double the exposition and no dashboard reads them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ecolink_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ecolink_http_request_duration_seconds",
            "Time from a request to the end of its answer",
            ["method", "route"],
            registry=r,
        )
        self.websockets = Gauge(
            "ecolink_websockets_open", "WebSockets open, by route", ["route"], registry=r
        )
        self.store = Histogram(
            "ecolink_store_call_duration_seconds",
            "Time of a store call (tx: a whole write transaction)",
            ["call"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.exec_websockets = 0
        # The labelled children, looked up once each (labels() takes a lock).
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counted.get((method, route, status))
        if counter is None:
            counter = self._counted[(method, route, status)] = self.requests.labels(
                method, route, str(status)
            )
        timer = self._timed.get((method, route))
        if timer is None:
            timer = self._timed[(method, route)] = self.latency.labels(method, route)
        counter.inc()
        timer.observe(seconds)

    def watch(self, ctx: AppContext) -> None:
        """Add the gauges read from the context at scrape time."""
        self.registry.register(_ContextCollector(ctx, self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ContextCollector:
    def __init__(self, ctx: AppContext, metrics: Metrics) -> None:
        self.ctx = ctx
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        ctx = self.ctx
        hub = getattr(ctx, "hub", None)
        watch = GaugeMetricFamily("ecolink_watch_clients", "Clients of /watch connected")
        watch.add_metric([], sum(len(s) for s in hub.clients.values()) if hub else 0)
        execs = GaugeMetricFamily(
            "ecolink_exec_sessions",
            "Shells open: direct exec WebSockets, and kept sessions still running",
            labels=["kind"],
        )
        execs.add_metric(["direct"], self.metrics.exec_websockets)
        execs.add_metric(["kept"], _live_kept_sessions(ctx))
        available = GaugeMetricFamily(
            "ecolink_runtime_available", "1 while the runtime can be reached"
        )
        available.add_metric([], 1 if ctx.runtime.available() else 0)
        leader = GaugeMetricFamily(
            "ecolink_leader", "1 while this instance does the periodic work (the leader)"
        )
        leader.add_metric([], 1 if ctx.service.leadership.leading else 0)
        proxied = CounterMetricFamily(
            "ecolink_proxy_requests",
            "Requests on service URLs (every cluster), by status class",
            labels=["class"],
        )
        classes = [0] * 5
        totals = ctx.traffic.totals() if ctx.traffic is not None else {}
        for replicas in totals.values():
            for c in replicas.values():
                for i, n in enumerate(c.get("statuses", ())):
                    classes[i] += n
        for i, n in enumerate(classes):
            proxied.add_metric([f"{i + 1}xx"], n)
        clusters = GaugeMetricFamily(
            "ecolink_proxy_clusters", "Clusters whose service URL had traffic"
        )
        clusters.add_metric([], len(totals))
        yield from (watch, execs, available, leader, proxied, clusters)


def _live_kept_sessions(ctx: AppContext) -> int:
    sessions = getattr(ctx.sessions, "_sessions", None) or {}
    return sum(1 for s in sessions.values() if getattr(s, "ended_reason", 1) is None)


# --------------------------------------------------------------------------- requests


def route_template(scope: Scope, routes: list[BaseRoute]) -> str:
    """The path template of the route that serves (or would serve) the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in _leaves(routes):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED))
    return UNMATCHED


def _leaves(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes themselves, also inside included routers (the app includes its
    routers without a prefix, so their paths are the app's)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaves(inner.routes)
        else:
            yield route


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


def _with_id(send: Send, opening: str, rid: str) -> Send:
    """`send`, adding the request id to the headers of the message that opens the
    answer (`http.response.start`, `websocket.accept`)."""
    header = (REQUEST_ID_HEADER.encode(), rid.encode())

    async def sending(message: Message) -> None:
        if message["type"] == opening:
            message = {**message, "headers": [*message.get("headers", ()), header]}
        await send(message)

    return sending


class ObserveMiddleware:
    """Outermost of the app's own middleware: request ids, request counts and
    latencies, open WebSockets."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, routes: Callable[[], list[BaseRoute]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id_from(_header(scope, REQUEST_ID_HEADER.encode()))
        token = request_id_var.set(rid)
        try:
            if kind == "http":
                await self._http(scope, receive, send, rid)
            else:
                await self._websocket(scope, receive, _with_id(send, "websocket.accept", rid))
        finally:
            request_id_var.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        status = 500
        send_with_id = _with_id(send, "http.response.start", rid)

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send_with_id(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.request_done(
                scope.get("method", ""),
                route_template(scope, self.routes()),
                status,
                time.perf_counter() - start,
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = route_template(scope, self.routes())
        is_exec = route.endswith(_EXEC_ROUTE_PARTS)
        gauge = self.metrics.websockets.labels(route)
        gauge.inc()
        if is_exec:
            self.metrics.exec_websockets += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gauge.dec()
            if is_exec:
                self.metrics.exec_websockets -= 1


# --------------------------------------------------------------------------- the store

_TIMED_MARK = "_ecolink_timed"


def instrument_store(store: object, histogram: Histogram) -> None:
    """Time every public method of `store` (a write transaction as a whole), in place."""
    if getattr(store, _TIMED_MARK, False):
        return
    for name, _ in inspect.getmembers(type(store), inspect.isfunction):
        if name.startswith("_") or name == "close":
            continue
        bound = getattr(store, name)
        child = histogram.labels(name)
        timed = _timed_transaction(bound, child) if name == "tx" else _timed_call(bound, child)
        setattr(store, name, timed)
    setattr(store, _TIMED_MARK, True)


def _timed_call(fn: Callable[..., Any], child: Any) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            child.observe(time.perf_counter() - start)

    return timed


def _timed_transaction(fn: Callable[..., Any], child: Any) -> Callable[..., Any]:
    @functools.wraps(fn)
    @contextlib.contextmanager
    def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            with fn(*args, **kwargs) as value:
                yield value
        finally:
            child.observe(time.perf_counter() - start)

    return timed
