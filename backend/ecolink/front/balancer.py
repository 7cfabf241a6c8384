"""Replicas behind a service URL: choice (least outstanding requests, or
round-robin), passive health, and per-replica traffic counters."""

from __future__ import annotations

import bisect
import operator
from dataclasses import dataclass, field
from time import monotonic as _monotonic

# Latency histogram bounds in seconds (the last bucket is open-ended).
BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
)
_IN_FLIGHT = operator.attrgetter("in_flight")
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0


@dataclass(eq=False)
class Replica:
    """One replica's address and what the front has seen of it (compared by identity)."""

    cluster_id: str
    name: str
    host: str
    port: int
    path: str = "port-forward"  # how it is reached: "local", "pod-ip", "port-forward"
    in_flight: int = 0
    down_until: float = 0.0
    backoff: float = 0.0
    requests: int = 0
    statuses: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])  # 1xx..5xx
    errors: int = 0  # exchanges the front answered 503 for (unreachable, reset)
    hist: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0

    def __post_init__(self) -> None:
        # The Host line of a request forwarded to it (its address, as bytes once),
        # and the key of its upstream connections.
        self.host_port = b"%s:%d" % (self.host.encode(), self.port)
        self.key: tuple[str, int] = (self.host, self.port)

    def healthy(self, now: float) -> bool:
        return self.down_until <= now

    def failed(self, now: float) -> None:
        """Refused or reset: skip it for a back-off that grows while it keeps failing."""
        self.backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self.backoff * 2))
        self.down_until = now + self.backoff
        self.errors += 1

    def answered(self, status: int, seconds: float) -> None:
        self.backoff = 0.0
        self.down_until = 0.0
        self.requests += 1
        cls = status // 100
        if 1 <= cls <= 5:
            self.statuses[cls - 1] += 1
        self.hist[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def counters(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "statuses": list(self.statuses),
            "errors": self.errors,
            "in_flight": self.in_flight,
            "hist": list(self.hist),
            "latency_sum": self.latency_sum,
            "path": self.path,
        }


class Pool:
    """The replicas of one cluster, in index order, and how to choose among them."""

    def __init__(self, cluster_id: str, policy: str = "least-outstanding") -> None:
        self.cluster_id = cluster_id
        self.policy = policy
        self.replicas: list[Replica] = []
        self.error: str | None = None  # why there are no targets, as the feed says
        self._next = 0

    def update(self, targets: list[tuple[str, str, int, str]]) -> None:
        """Replace the replica list, keeping the counters of those that stay."""
        old = {(r.name, r.host, r.port): r for r in self.replicas}
        new = []
        for name, host, port, path in targets:
            r = old.get((name, host, port)) or Replica(self.cluster_id, name, host, port, path)
            r.path = path
            new.append(r)
        self.replicas = new

    def pick(self, now: float | None = None) -> Replica:
        """`order()[0]`, and the same turn taken, without ordering the rest: the
        replica a request goes to first (the pool is not empty)."""
        rs = self.replicas
        n = len(rs)
        if now is None:
            now = _monotonic()
        start = i = self._next % n
        least = self.policy == "least-outstanding"
        best = None
        best_i = start  # all in back-off: the first from the rotation point
        low = 0
        for _ in range(n):
            r = rs[i]
            if r.down_until <= now and (best is None or r.in_flight < low):
                best, best_i, low = r, i, r.in_flight
                if not least or low == 0:
                    break  # nothing after it can do better
            i += 1
            if i == n:
                i = 0
        self._next = best_i + 1
        return best if best is not None else rs[start]

    def order(self, now: float | None = None) -> list[Replica]:
        """The replicas to try, best first: healthy ones by the policy, then the ones
        in back-off (a request is better tried than refused)."""
        rs = self.replicas
        n = len(rs)
        if n == 0:
            return []
        if now is None:
            now = _monotonic()
        start = self._next % n
        rot = rs[start:] + rs[:start] if start else rs[:]  # from the rotation point
        healthy = [r for r in rot if r.down_until <= now]
        sick = [r for r in rot if r.down_until > now] if len(healthy) < n else []
        if not healthy:
            self._next = rs.index(sick[0]) + 1
            return sick
        # Least outstanding: the first of the least busy from the rotation point.
        best = min(healthy, key=_IN_FLIGHT) if self.policy == "least-outstanding" else healthy[0]
        self._next = rs.index(best) + 1
        if best is not healthy[0]:
            healthy.remove(best)
            healthy.insert(0, best)
        if sick:
            healthy += sick
        return healthy
