"""`GET /metrics`: in Prometheus' text format, the instance's own series
(`ecolink.observe.metrics`: requests, latencies, WebSockets, store, runtime) and the
service URL's traffic per replica for the clusters of the key's account (scrape
with a bearer key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from starlette.requests import Request
from starlette.responses import Response

from ecolink.api.auth import require_account
from ecolink.api.context import get_ctx
from ecolink.front.balancer import BUCKETS

router = APIRouter()


class _Collector:
    def __init__(
        self, counters: dict[str, dict[str, dict[str, Any]]], names: dict[str, str]
    ) -> None:
        self.counters = counters
        self.names = names

    def collect(self) -> Any:
        labels = ["cluster_id", "cluster", "replica"]
        req = CounterMetricFamily(
            "ecolink_service_requests",
            "Requests answered by a replica, by status class",
            labels=[*labels, "class"],
        )
        err = CounterMetricFamily(
            "ecolink_service_failures",
            "Requests the front answered 503 for (refused, reset)",
            labels=labels,
        )
        infl = GaugeMetricFamily(
            "ecolink_service_in_flight", "Requests in flight to the replica", labels=labels
        )
        lat = HistogramMetricFamily(
            "ecolink_service_latency_seconds",
            "Time from request to the end of the answer",
            labels=labels,
        )
        for cid, replicas in sorted(self.counters.items()):
            if cid not in self.names:
                continue
            for name, c in sorted(replicas.items()):
                lv = [cid, self.names[cid], name]
                for i, n in enumerate(c["statuses"]):
                    req.add_metric([*lv, f"{i + 1}xx"], n)
                err.add_metric(lv, c.get("errors", 0))
                infl.add_metric(lv, c.get("in_flight", 0))
                cum, buckets = 0, []
                for bound, n in zip([*map(str, BUCKETS), "+Inf"], c["hist"], strict=True):
                    cum += n
                    buckets.append((bound, cum))
                lat.add_metric(lv, buckets, c.get("latency_sum", 0.0))
        yield from (req, err, infl, lat)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    acct = require_account(request)
    ctx = get_ctx(request)
    view = ctx.traffic
    counters = view.totals() if view is not None else {}
    names = {c.id: c.name for c in await ctx.streams.list_clusters(acct.id)}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(counters, names))
    instance: bytes = request.app.state.metrics.exposition()
    return Response(
        generate_latest(registry) + instance, media_type="text/plain; version=0.0.4; charset=utf-8"
    )
