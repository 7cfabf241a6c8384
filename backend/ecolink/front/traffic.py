"""Per-replica traffic as the dashboard and Prometheus see it.

The fronts count, per replica, requests, status classes, failures, requests in
flight and a latency histogram (`balancer.Replica`). `TrafficView` samples the sum
over every front process once a second and keeps a short window, from which it
gives rates (requests and 5xx per second) and latency percentiles.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from typing import Any

from ecolink.front.balancer import BUCKETS

WINDOW_S = 10.0
SAMPLE_S = 1.0

Counters = dict[str, dict[str, dict[str, Any]]]


def percentile(hist: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q (seconds); None if empty."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank and n:
            return BUCKETS[i] if i < len(BUCKETS) else BUCKETS[-1] * 2
    return BUCKETS[-1] * 2


def _delta(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    if old is None:
        return new
    out: dict[str, Any] = {}
    for k, v in new.items():
        o = old.get(k)
        if isinstance(v, list) and isinstance(o, list) and len(o) == len(v):
            out[k] = [max(0, a - b) for a, b in zip(v, o, strict=True)]
        elif isinstance(v, (int, float)) and isinstance(o, (int, float)):
            out[k] = max(0, v - o) if k != "in_flight" else v
        else:
            out[k] = v
    return out


class TrafficView:
    def __init__(self, source: Callable[[], Counters]) -> None:
        self.source = source
        self.samples: collections.deque[tuple[float, Counters]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_S)

    def sample(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, self.source()))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW_S:
            self.samples.popleft()

    def totals(self) -> Counters:
        return self.samples[-1][1] if self.samples else {}

    def replica(self, cluster_id: str, name: str) -> dict[str, Any] | None:
        if not self.samples:
            return None
        t1, last = self.samples[-1]
        t0, first = self.samples[0]
        cur = last.get(cluster_id, {}).get(name)
        if cur is None:
            return None
        span = max(t1 - t0, SAMPLE_S)
        d = _delta(cur, first.get(cluster_id, {}).get(name) if len(self.samples) > 1 else None)
        if len(self.samples) == 1:
            d = {**cur, "requests": 0, "statuses": [0] * 5, "hist": [0] * len(cur["hist"])}
        p50, p99 = percentile(d["hist"], 0.5), percentile(d["hist"], 0.99)
        return {
            "path": cur.get("path"),
            "requests_per_s": round(d["requests"] / span, 2),
            "errors_5xx_per_s": round((d["statuses"][4] + d.get("errors", 0)) / span, 2),
            "statuses": {f"{i + 1}xx": n for i, n in enumerate(d["statuses"])},
            "in_flight": cur.get("in_flight", 0),
            "latency_p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
            "latency_p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        }

    def cluster(self, cluster_id: str) -> dict[str, Any] | None:
        if not self.samples or cluster_id not in self.samples[-1][1]:
            return None
        rs = [self.replica(cluster_id, n) for n in self.samples[-1][1][cluster_id]]
        parts = [r for r in rs if r is not None]
        paths = sorted({str(r["path"]) for r in parts if r.get("path")})
        return {
            "requests_per_s": round(sum(r["requests_per_s"] for r in parts), 2),
            "errors_5xx_per_s": round(sum(r["errors_5xx_per_s"] for r in parts), 2),
            "in_flight": sum(r["in_flight"] for r in parts),
            "path": ",".join(paths) or None,
        }
