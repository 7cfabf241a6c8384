"""Fleet state: the clusters, their parsed views, the account, events, replicas and
the connection, as the watch feed and the REST answers leave them.

`FleetState` only folds data in and says what it did; alerts, GPU history and the
list's order react to that in `DashboardModel`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ecocore.status import BUDGETED, TERMINAL
from ecocore.wire import AccountOut, ClusterOut, EventOut, WatchConnection
from ecotui.model.values import (
    STALE_AFTER,
    ClusterView,
    ConnectionInfo,
    parse_micros,
    summary_util,
)
from ecotui.wording import fmt_duration, parse_time_or_none

# Statuses whose burn counts towards the low-credit alert.
BURNING = BUDGETED
_EPOCH = datetime.min.replace(tzinfo=UTC)


class FleetState:
    def __init__(self, *, events_len: int = 500) -> None:
        self.events_len = events_len
        self.clusters: dict[str, dict[str, Any]] = {}
        self.views: dict[str, ClusterView] = {}
        self.account: AccountOut | None = None
        self.account_micros: dict[str, int] = {}
        self.events: dict[str, deque[dict[str, Any]]] = {}
        self.replicas: dict[str, list[dict[str, Any]]] = {}
        self.replicas_at: dict[str, datetime] = {}
        self.cluster_at: dict[str, datetime] = {}
        self.stale_ids: set[str] = set()  # clusters whose runtime states are the last known
        self.connection = ConnectionInfo()
        self.snapshots = 0
        self.running_burn = 0
        # telemetry source per cluster and how many clusters report each (kept incrementally)
        self._telemetry_of: dict[str, str] = {}
        self._telemetry_count: dict[str, int] = {}

    # -- folding -----------------------------------------------------------
    def put_cluster(
        self, cluster: ClusterOut, now: datetime
    ) -> tuple[dict[str, Any] | None, ClusterView | None] | None:
        """Store a cluster: its frozen view, and its record as the API's JSON object for
        the screens (smaller than the model). None when nothing changed, else the
        previous record and view."""
        cid = cluster.id
        c = cluster.model_dump(exclude_unset=True)
        old = self.clusters.get(cid)
        if old == c:
            return None
        self.clusters[cid] = c
        self.cluster_at[cid] = now
        if cluster.stale:
            self.stale_ids.add(cid)
        else:
            self.stale_ids.discard(cid)
        old_view = self.views.get(cid)
        view = self.views[cid] = ClusterView.of(cluster)
        # The running burn total is kept incrementally for the low-credit alert.
        if old_view is not None and old_view.status in BURNING:
            self.running_burn -= old_view.burn
        if view.status in BURNING:
            self.running_burn += view.burn
        self.note_telemetry(cid, c["gpu_summary"])
        return old, old_view

    def drop_replicas(self, cid: str) -> bool:
        if cid in self.replicas:
            del self.replicas[cid]
            return True
        return False

    def remove(self, cid: str) -> dict[str, Any] | None:
        old = self.clusters.pop(cid, None)
        view = self.views.pop(cid, None)
        self.stale_ids.discard(cid)
        self.note_telemetry(cid, None)
        if old is not None and view is not None and old.get("status") in BURNING:
            self.running_burn -= view.burn
        for d in (self.events, self.replicas, self.replicas_at, self.cluster_at):
            d.pop(cid, None)
        return old

    def put_account(self, account: AccountOut) -> bool:
        if account == self.account:
            return False
        self.account = account
        self.account_micros = {
            "balance": parse_micros(account.balance),
            "held": parse_micros(account.held),
            "available": parse_micros(account.available),
        }
        return True

    def add_events(self, cid: str, events: Iterable[EventOut]) -> bool:
        """Merge events (duplicates dropped, time order kept); True when any was new."""
        dq = self.events.get(cid)
        if dq is None:
            dq = self.events[cid] = deque(maxlen=self.events_len)
        seen = {(e.get("at"), e.get("kind"), e.get("message"), e.get("replica")) for e in dq}
        added = False
        for event in events:
            k = (event.at, event.kind, event.message, event.replica)
            if k in seen:
                continue
            seen.add(k)
            dq.append(event.model_dump(exclude_unset=True))
            added = True
        if added and len(dq) > 1 and str(dq[-2].get("at", "")) > str(dq[-1].get("at", "")):
            # keep time order when REST history arrives after live events
            ordered = sorted(dq, key=lambda e: str(e.get("at", "")))
            dq.clear()
            dq.extend(ordered)
        return added

    def last_event_message(self, cid: str, kinds: tuple[str, ...]) -> str | None:
        for ev in reversed(self.events.get(cid, ())):
            if ev.get("kind") in kinds and ev.get("message"):
                return str(ev["message"])
        return None

    def put_replicas(self, cid: str, reps: list[dict[str, Any]], now: datetime) -> None:
        self.replicas[cid] = reps
        self.replicas_at[cid] = now

    def set_connection(self, frame: WatchConnection, now: datetime) -> None:
        conn = self.connection
        state = frame.state
        if state != conn.state:
            conn.since = now
        conn.state = state
        conn.attempt = frame.attempt
        conn.next_retry_at = parse_time_or_none(frame.next_retry_at)
        conn.error = frame.error
        if state == "connected":
            conn.ever_connected = True
            conn.last_frame_at = now

    def note_frame(self, now: datetime) -> bool:
        """A data frame arrived; True when the data had been stale until now."""
        last = self.connection.last_frame_at
        self.connection.last_frame_at = now
        return last is not None and now - last > STALE_AFTER

    def note_telemetry(self, cid: str, summary: Mapping[str, Any] | None) -> None:
        src = (summary or {}).get("telemetry")
        old = self._telemetry_of.get(cid)
        if src == old:
            return
        if old is not None:
            self._telemetry_count[old] -= 1
            if not self._telemetry_count[old]:
                del self._telemetry_count[old]
            del self._telemetry_of[cid]
        if src:
            self._telemetry_of[cid] = src
            self._telemetry_count[src] = self._telemetry_count.get(src, 0) + 1

    # -- reading -----------------------------------------------------------
    def telemetry_sources(self, ids: Iterable[str] | None = None) -> list[str]:
        """Telemetry sources reported (by these clusters, or by all: kept counted)."""
        if ids is None:
            return sorted(self._telemetry_count)
        seen: set[str] = set()
        for cid in ids:
            c = self.clusters.get(cid)
            src = ((c or {}).get("gpu_summary") or {}).get("telemetry")
            if src:
                seen.add(src)
        return sorted(seen)

    def summary_util(self, cid: str) -> float | None:
        return summary_util((self.clusters.get(cid) or {}).get("gpu_summary"))

    def replica_rows(self, cid: str) -> list[dict[str, Any]]:
        """A cluster's replicas for display: states from whichever frame is newer (the
        cluster's or the per-second replicas frame), GPUs from the replicas frame."""
        c = self.clusters.get(cid) or {}
        states = c.get("replica_states") or []
        reps = self.replicas.get(cid)
        if reps is None:
            return list(states)
        if self.cluster_at.get(cid, _EPOCH) > self.replicas_at.get(cid, _EPOCH):
            gpus = {r.get("name"): r for r in reps}
            return [{**gpus.get(s.get("name"), {}), **s} for s in states]
        return list(reps)

    def terminated_costs(self) -> list[tuple[dict[str, Any], int]]:
        """Ended clusters still listed, with what each cost."""
        return [
            (c, self.views[cid].spent)
            for cid, c in self.clusters.items()
            if c.get("status") in TERMINAL
        ]

    def find(self, ref: str) -> dict[str, Any] | None:
        if ref in self.clusters:
            return self.clusters[ref]
        for c in self.clusters.values():
            if c.get("name") == ref and c.get("status") != "terminated":
                return c
        return None

    def is_stale(self, now: datetime) -> bool:
        """Data shown may be out of date: disconnected, or no frame for a while."""
        conn = self.connection
        if conn.state != "connected":
            return self.snapshots > 0
        return conn.last_frame_at is not None and now - conn.last_frame_at > STALE_AFTER

    def connection_label(self, now: datetime) -> tuple[str, str]:
        """(text, level) for the connection indicator; level: ok | warning | error."""
        conn = self.connection
        if conn.state == "connected":
            if self.is_stale(now):
                age = (now - conn.last_frame_at).total_seconds() if conn.last_frame_at else 0
                return f"◌ stale: no data for {fmt_duration(age)}", "warning"
            return "● connected", "ok"
        if conn.state == "reconnecting":
            wait = ""
            if conn.next_retry_at is not None:
                secs = max(0.0, (conn.next_retry_at - now).total_seconds())
                wait = f" in {fmt_duration(secs + 0.999)}" if secs > 0 else " now"
            stale = " · data stale" if self.snapshots else ""
            if conn.error and "401" in conn.error:
                return f"✖ API key refused (401) · retry{wait}{stale}", "error"
            return f"↻ reconnecting{wait} (attempt {conn.attempt}){stale}", "error"
        if conn.state == "closed":
            return "✖ disconnected", "error"
        return "… connecting", "warning"
