"""Alerts: the pure rules (`cluster_alerts`, `account_alerts`) and the scheduler that
keeps what the rules need over time (idle and restart tracking, a heap of due
times, what was already notified).

A tick does work proportional to what became due, never to the size of the fleet.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ecocore.status import BUDGETED, TERMINAL
from ecotui.gpu_health import cluster_health
from ecotui.model.values import (
    CRASH_RESTARTS,
    CRASH_WINDOW,
    EXPIRY_CRITICAL,
    EXPIRY_WARN,
    IDLE_AFTER,
    IDLE_UTILIZATION,
    Alert,
    ClusterView,
)
from ecotui.wording import fmt_duration, fmt_rate, fmt_usd

# Statuses in which a cluster's replicas run or are about to (its burn counts).
ACTIVE = BUDGETED
UNSCHEDULABLE_WORDS = (
    "unschedulable",
    "insufficient",
    "failedscheduling",
    "didn't match",
    "no nodes",
    "not enough",
)
CRASH_WORDS = ("crashloop", "back-off", "backoff")


class Activity(NamedTuple):
    """What the scheduler has seen of a cluster over time, for the rules."""

    restart_times: Mapping[str, Sequence[datetime]]
    idle_since: datetime | None
    idle_gpus: int
    failure_detail: str | None


def _replica_list(replicas: list[Mapping[str, Any]]) -> str:
    names = [str(r.get("name", "?")) for r in replicas]
    if len(names) == 1:
        return f"replica {names[0]}"
    if len(names) <= 3:
        return "replicas " + ", ".join(names)
    return f"{len(names)} replicas ({names[0]}, …)"


def health_alerts(cid: str, c: Mapping[str, Any]) -> list[Alert]:
    """The alert for a cluster with degraded or failing GPUs (one per cluster)."""
    if c.get("status") not in ACTIVE:
        return []
    verdict, reason, failing, degraded = cluster_health(c)
    name = c.get("name", cid)
    if verdict == "failing":
        return [
            Alert(
                cid,
                "gpu_health",
                "error",
                "GPU failing",
                f"{name}: {failing} GPU{'s' if failing != 1 else ''} failing: {reason}",
                stage=f"failing:{failing}:{reason}",
            )
        ]
    if verdict == "degraded":
        return [
            Alert(
                cid,
                "gpu_health",
                "warning",
                "GPU degraded",
                f"{name}: {degraded} GPU{'s' if degraded != 1 else ''} degraded: {reason}",
                stage=f"degraded:{degraded}:{reason}",
            )
        ]
    return []


def cluster_alerts(
    cid: str, c: Mapping[str, Any], view: ClusterView, seen: Activity, now: datetime
) -> tuple[Alert, ...]:
    """Every alert a cluster raises now (pure)."""
    name = c.get("name", cid)
    status = c.get("status")
    out: list[Alert] = []
    if status == "failed":
        reason = c.get("status_reason") or "error"
        detail = seen.failure_detail
        msg = f"{name} failed ({reason})" + (f": {detail}" if detail else "")
        out.append(Alert(cid, "failed", "error", "Cluster failed", msg))
    if status not in TERMINAL and status != "terminating" and view.expires_at is not None:
        left = view.expires_at - now
        if timedelta(0) < left <= EXPIRY_WARN:
            critical = left <= EXPIRY_CRITICAL
            mins = 5 if critical else 30
            out.append(
                Alert(
                    cid,
                    "expiring",
                    "error" if critical else "warning",
                    "Expiring soon",
                    f"{name} expires in under {mins} minutes; extend it (e) to keep it",
                    stage=str(mins),
                )
            )
    unsched: list[Mapping[str, Any]] = []
    crashing: list[Mapping[str, Any]] = []
    for r in c.get("replica_states") or ():
        reason = r.get("reason") or ""
        low = reason.lower()
        if r.get("phase") == "Pending" and reason and any(w in low for w in UNSCHEDULABLE_WORDS):
            unsched.append(r)
            continue
        times = seen.restart_times.get(r.get("name", ""))
        recent = sum(1 for t in times if now - t <= CRASH_WINDOW) if times else 0
        if any(w in low for w in CRASH_WORDS) or recent >= CRASH_RESTARTS:
            crashing.append(r)
    # One alert per cluster and kind, naming the replicas, not one per replica.
    if unsched:
        who = _replica_list(unsched)
        out.append(
            Alert(
                cid,
                "unschedulable",
                "error",
                "Replica unschedulable",
                f"{name}: {who} cannot be scheduled: {unsched[0].get('reason')}",
                stage=str(len(unsched)),
            )
        )
    if crashing:
        who = _replica_list(crashing)
        restarts = max(int(r.get("restarts") or 0) for r in crashing)
        reason = crashing[0].get("reason")
        out.append(
            Alert(
                cid,
                "crashloop",
                "error",
                "Replica crash-looping",
                f"{name}: {who} crash-looping ({restarts} restarts)"
                + (f": {reason}" if reason else ""),
                stage=",".join(r.get("name", "") for r in crashing),
            )
        )
    out.extend(health_alerts(cid, c))
    since = seen.idle_since
    if status == "running" and since is not None and now - since >= IDLE_AFTER:
        idle = seen.idle_gpus
        cost = idle * view.per_gpu_rate
        out.append(
            Alert(
                cid,
                "idle",
                "warning",
                "Idle GPUs",
                f"{name}: {idle} GPU{'s' if idle != 1 else ''} under "
                f"{IDLE_UTILIZATION:g}% for 10+ minutes: you pay {fmt_rate(cost)} for idle GPUs",
                stage=str(idle),
            )
        )
    return tuple(out)


def account_alerts(available: int, running_burn: int) -> tuple[Alert, ...]:
    """The low-credit alert: available credit covers less than a day of burn (pure)."""
    if running_burn <= 0 or available >= running_burn * 24:
        return ()
    hours = available / running_burn
    return (
        Alert(
            None,
            "low_credit",
            "error" if hours < 1 else "warning",
            "Low credit",
            f"available credit {fmt_usd(available)} covers {fmt_duration(hours * 3600)} "
            f"of the {fmt_rate(running_burn)} your clusters burn "
            f"(less than a day)",
        ),
    )


class AlertScheduler:
    """The alerts in force, when each cluster must be looked at again, and what was notified."""

    def __init__(self) -> None:
        self.by_cluster: dict[str, tuple[Alert, ...]] = {}
        self.account: tuple[Alert, ...] = ()
        self._notified: set[tuple[str, str, str]] = set()
        self._new: list[Alert] = []
        self._due: list[tuple[datetime, str]] = []
        self.idle_since: dict[str, datetime] = {}
        self.idle_min: dict[str, int] = {}
        # cluster id -> replica name -> restart times seen / last restart count
        self.restart_times: dict[str, dict[str, deque[datetime]]] = {}
        self.restarts_seen: dict[str, dict[str, int]] = {}

    # -- what the rules see over time --------------------------------------
    def activity(self, cid: str, failure_detail: str | None) -> Activity:
        return Activity(
            self.restart_times.get(cid, {}),
            self.idle_since.get(cid),
            self.idle_min.get(cid, 0),
            failure_detail,
        )

    def track_idle(self, cid: str, running: bool, idle: int, now: datetime) -> bool:
        """Note the idle GPU count; True when the cluster's alerts must be recomputed."""
        if not running or idle <= 0:
            if self.idle_since.pop(cid, None) is not None:
                self.idle_min.pop(cid, None)
                return True
            return False
        if cid not in self.idle_since:
            self.idle_since[cid] = now
            self.idle_min[cid] = idle
            heapq.heappush(self._due, (now + IDLE_AFTER, cid))
            return False
        before = self.idle_min[cid]
        self.idle_min[cid] = min(before, idle)
        return self.idle_min[cid] != before

    def stop_idle(self, cid: str) -> None:
        self.idle_since.pop(cid, None)

    def track_restarts(
        self, cid: str, replica_states: Iterable[Mapping[str, Any]], now: datetime
    ) -> None:
        seen = self.restarts_seen.setdefault(cid, {})
        for r in replica_states:
            name = r.get("name", "")
            n = int(r.get("restarts") or 0)
            prev = seen.get(name)
            seen[name] = n
            if prev is not None and n > prev:
                dq = self.restart_times.setdefault(cid, {}).setdefault(name, deque(maxlen=16))
                for _ in range(min(n - prev, 16)):
                    dq.append(now)
                heapq.heappush(self._due, (now + CRASH_WINDOW, cid))

    def schedule_expiry(self, cid: str, expires_at: datetime | None, now: datetime) -> None:
        if expires_at is None:
            return
        for edge in (expires_at - EXPIRY_WARN, expires_at - EXPIRY_CRITICAL, expires_at):
            if edge > now:
                heapq.heappush(self._due, (edge, cid))

    def due(self, now: datetime) -> set[str]:
        """Clusters whose time came (each once, however many edges passed)."""
        out: set[str] = set()
        while self._due and self._due[0][0] <= now:
            out.add(heapq.heappop(self._due)[1])
        return out

    def forget(self, cid: str) -> bool:
        """A cluster left the feed; True when it had alerts."""
        for d in (self.idle_since, self.idle_min, self.restart_times, self.restarts_seen):
            d.pop(cid, None)
        return self.by_cluster.pop(cid, None) is not None

    # -- alerts in force ---------------------------------------------------
    def set_cluster(self, cid: str, alerts: tuple[Alert, ...]) -> bool:
        """Store a cluster's alerts; True when they changed."""
        if self.by_cluster.get(cid, ()) == alerts:
            return False
        if alerts:
            self.by_cluster[cid] = alerts
        else:
            self.by_cluster.pop(cid, None)
        self._queue(alerts)
        return True

    def set_account(self, alerts: tuple[Alert, ...]) -> bool:
        if alerts == self.account:
            return False
        self.account = alerts
        self._queue(alerts)
        return True

    def _queue(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            if a.key not in self._notified:
                self._notified.add(a.key)
                self._new.append(a)

    def all(self) -> list[Alert]:
        """Every active alert, most severe first."""
        out = list(self.account)
        for group in self.by_cluster.values():
            out.extend(group)
        out.sort(key=lambda a: (a.level != "error", a.cluster_id or ""))
        return out

    def take_new(self) -> list[Alert]:
        out, self._new = self._new, []
        return out
