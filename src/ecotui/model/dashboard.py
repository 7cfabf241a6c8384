"""`DashboardModel`: the one object the app and the screens hold, a thin façade over
the fleet state, the GPU history, the alert scheduler and the fleet view.

The app's watch worker calls `apply(frame)` for every frame, a timer calls `tick()`
and `take_changes()` at the repaint rate, and the screens read what changed. Values
are coalesced by nature (the latest value per key) and a dirty set says which rows
need repainting, so a burst of frames costs one repaint per row.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar

from ecocore.clock import Clock
from ecocore.wire import (
    AccountOut,
    ClusterOut,
    EventOut,
    MetricsOut,
    WatchAccount,
    WatchCluster,
    WatchClusterRemoved,
    WatchConnection,
    WatchEvent,
    WatchFrame,
    WatchReplicas,
    WatchSnapshot,
    WatchSummaries,
)
from ecotui.model.alerts import AlertScheduler, account_alerts, cluster_alerts
from ecotui.model.fleet import BURNING, FleetState
from ecotui.model.history import GpuHistory, GpuSamples
from ecotui.model.values import Alert, Changes, ClusterView, ConnectionInfo, GroupRow
from ecotui.model.view import FleetView

_FAILURE_KINDS = ("replica_failed", "terminated", "expired")


class DashboardModel:
    """State of one dashboard session: clusters, account, events, replicas, history, alerts."""

    def __init__(
        self,
        clock: Clock,
        *,
        history_len: int = 900,
        spark_len: int = 24,
        events_len: int = 500,
        history_clusters: int = 4,
    ) -> None:
        self.clock = clock
        self.fleet = FleetState(events_len=events_len)
        self.history = GpuHistory(
            history_len=history_len, spark_len=spark_len, history_clusters=history_clusters
        )
        self.scheduler = AlertScheduler()
        self.view = FleetView(self.fleet.clusters, self.fleet.views, self._order_changed)
        self._changes = Changes()

    # -- the parts' data, as the screens read it ----------------------------
    @property
    def clusters(self) -> dict[str, dict[str, Any]]:
        return self.fleet.clusters

    @property
    def nums(self) -> dict[str, ClusterView]:
        return self.fleet.views

    views = nums

    @property
    def account(self) -> AccountOut | None:
        return self.fleet.account

    @property
    def account_micros(self) -> dict[str, int]:
        return self.fleet.account_micros

    @property
    def events(self) -> dict[str, deque[dict[str, Any]]]:
        return self.fleet.events

    @property
    def replicas(self) -> dict[str, list[dict[str, Any]]]:
        return self.fleet.replicas

    @property
    def stale_ids(self) -> set[str]:
        return self.fleet.stale_ids

    @property
    def connection(self) -> ConnectionInfo:
        return self.fleet.connection

    @property
    def snapshots(self) -> int:
        return self.fleet.snapshots

    @property
    def running_burn(self) -> int:
        return self.fleet.running_burn

    @property
    def gpu_history(self) -> OrderedDict[str, GpuSamples]:
        return self.history.gpu_history

    @property
    def util_spark(self) -> dict[str, deque[float]]:
        return self.history.util_spark

    @property
    def live_util(self) -> dict[str, float]:
        return self.history.live_util

    @property
    def focused(self) -> frozenset[str]:
        return self.history.focused

    @property
    def sort_column(self) -> str:
        return self.view.sort_column

    @property
    def sort_reverse(self) -> bool:
        return self.view.sort_reverse

    @property
    def filter_text(self) -> str:
        return self.view.filter_text

    @property
    def group_by(self) -> str | None:
        return self.view.group_by

    # -- feed --------------------------------------------------------------
    def apply(self, frame: WatchFrame) -> None:
        """Fold one watch frame (or a connection frame of the watch client) into the model.
        A snapshot's list of clusters is used up (emptied) on the way."""
        now = self.clock.now()
        if not isinstance(frame, WatchConnection) and self.fleet.note_frame(now):
            self._changes.connection = True  # stale no more: repaint the indicator
        handler = self._handlers.get(type(frame))
        if handler is not None:
            handler(self, frame, now)

    def apply_many(self, frames: Iterable[WatchFrame]) -> None:
        for f in frames:
            self.apply(f)

    def _on_snapshot(self, frame: WatchSnapshot, now: datetime) -> None:
        incoming = {c.id for c in frame.clusters}
        for cid in list(self.fleet.clusters):
            if cid not in incoming:
                self._remove(cid)
        # Each cluster's model is let go once folded: a large fleet's snapshot is never
        # held twice over (as models and as the records kept), which bounds peak memory.
        pending = frame.clusters
        pending.reverse()
        while pending:
            self._put_cluster(pending.pop(), now)
        self._put_account(frame.account)
        self.fleet.snapshots += 1
        self._changes.snapshot = True
        self._changes.order = True
        self.view.forget_order()

    def _on_cluster(self, frame: WatchCluster, now: datetime) -> None:
        self._put_cluster(frame.cluster, now)

    def _on_removed(self, frame: WatchClusterRemoved, now: datetime) -> None:
        self._remove(frame.id)

    def _on_account(self, frame: WatchAccount, now: datetime) -> None:
        self._put_account(frame.account)

    def _on_event(self, frame: WatchEvent, now: datetime) -> None:
        cid = frame.cluster_id
        if not cid:
            return
        if self.fleet.add_events(cid, [frame.event]):
            self._changes.events.add(cid)
        # A failure's message arrives as an event: refresh the alert's words.
        if cid in self.fleet.clusters and frame.event.kind in (
            "replica_failed",
            "replica_crashed",
            "terminated",
        ):
            self._recompute_alerts(cid, now)

    def _on_summaries(self, frame: WatchSummaries, now: datetime) -> None:
        clusters = self.fleet.clusters
        for cid, summary_out in frame.clusters.items():
            c = clusters.get(cid)
            if c is None:
                continue
            summary = summary_out.model_dump(exclude_unset=True)
            old = c.get("gpu_summary")
            self.fleet.note_telemetry(cid, summary)
            if old != summary:
                clusters[cid] = {**c, "gpu_summary": summary}
                self._changes.clusters.add(cid)
                if self.view.sort_column in ("util", "health"):
                    self._order_dirty()
                if (old or {}).get("health") != summary.get("health"):
                    self._recompute_alerts(cid, now)
            self.history.push_spark(cid, summary)
            self._track_idle(cid, summary, now)
        # The service URL's traffic per cluster (null: no public URL or nothing counted yet).
        for cid, traffic_out in frame.traffic.items():
            c = clusters.get(cid)
            if c is None:
                continue
            traffic = None if traffic_out is None else traffic_out.model_dump(exclude_unset=True)
            if c.get("traffic") == traffic:
                continue
            clusters[cid] = {**c, "traffic": traffic}
            self._changes.clusters.add(cid)
            if self.view.sort_column in ("reqs", "5xx"):
                self._order_dirty()

    def _on_replicas(self, frame: WatchReplicas, now: datetime) -> None:
        cid = frame.cluster_id
        if not cid or cid not in self.fleet.clusters:
            return
        if not self.history.wants(cid):
            return  # in flight from before a focus change: not kept, memory stays bounded
        reps = [r.model_dump(exclude_unset=True) for r in frame.replicas]
        self.fleet.put_replicas(cid, reps, now)
        self._changes.replicas.add(cid)
        moved = self.history.add_replicas(cid, reps, now)
        if self.history.records(cid):
            self._changes.history.add(cid)
        if moved:
            self._changes.clusters.add(cid)

    def _on_connection(self, frame: WatchConnection, now: datetime) -> None:
        self.fleet.set_connection(frame, now)
        self._changes.connection = True

    _handlers: ClassVar[dict[type[WatchFrame], Callable[[DashboardModel, Any, datetime], None]]] = {
        WatchSnapshot: _on_snapshot,
        WatchCluster: _on_cluster,
        WatchClusterRemoved: _on_removed,
        WatchAccount: _on_account,
        WatchEvent: _on_event,
        WatchSummaries: _on_summaries,
        WatchReplicas: _on_replicas,
        WatchConnection: _on_connection,
    }

    # -- REST-sourced data (fetched by the app's workers) --------------------
    def load_events(self, cluster_id: str, events: list[EventOut]) -> None:
        """Events from GET /events (oldest first), merged with those seen live."""
        if self.fleet.add_events(cluster_id, sorted(events, key=lambda e: e.at)):
            self._changes.events.add(cluster_id)

    def load_metrics(self, cluster_id: str, metrics: MetricsOut) -> None:
        """History from GET /metrics, e.g. after a reconnect: backfills the gap."""
        self.history.load_metrics(cluster_id, metrics)
        self._changes.history.add(cluster_id)

    def load_account(self, account: AccountOut) -> None:
        self._put_account(account)

    def set_focus(self, ids: Iterable[str], history: Iterable[str] | None = None) -> bool:
        """The clusters now on screen (and, of those, the ones whose per-GPU history a
        view draws; default all). Returns True when the focus changed.

        Replicas are kept only for focused clusters and GPU history only for the
        history clusters (plus a few recent ones), so memory stays bounded however
        large the fleet and however long the session."""
        if not self.history.set_focus(ids, history):
            return False
        for cid in list(self.fleet.replicas):
            if cid not in self.history.focused:
                del self.fleet.replicas[cid]
        return True

    # -- folding, and what reacts to it --------------------------------------
    def _put_cluster(self, cluster: ClusterOut, now: datetime) -> None:
        put = self.fleet.put_cluster(cluster, now)
        if put is None:
            return
        old, old_view = put
        cid = cluster.id
        c = self.fleet.clusters[cid]
        view = self.fleet.views[cid]
        status = c.get("status")
        if status in ("stopped", "terminated", "failed") and self.fleet.drop_replicas(cid):
            # No replicas run any more: per-second replica frames stop, drop the last ones.
            self._changes.replicas.add(cid)
        self._changes.clusters.add(cid)
        if (
            old is None
            or status != old.get("status")
            or self.view.order_value(old, old_view) != self.view.order_value(c, view)
        ):
            self._order_dirty()
        summary = c.get("gpu_summary")
        if summary and (old is None or old.get("gpu_summary") != summary):
            if old is None:
                self.history.push_spark(cid, summary)
            self._track_idle(cid, summary, now)
        self.scheduler.track_restarts(cid, c.get("replica_states") or (), now)
        if status not in BURNING:
            self.scheduler.stop_idle(cid)
        self.scheduler.schedule_expiry(cid, view.expires_at, now)
        self._recompute_alerts(cid, now)
        self._recompute_account_alerts()

    def _remove(self, cid: str) -> None:
        self.fleet.remove(cid)
        self.history.forget(cid)
        if self.scheduler.forget(cid):
            self._changes.alerts = True
        self._changes.removed.add(cid)
        self._changes.clusters.discard(cid)
        self._order_dirty()
        self._recompute_account_alerts()

    def _put_account(self, account: AccountOut) -> None:
        if self.fleet.put_account(account):
            self._changes.account = True
            self._recompute_account_alerts()

    def _track_idle(self, cid: str, summary: dict[str, Any], now: datetime) -> None:
        c = self.fleet.clusters.get(cid)
        running = c is not None and c.get("status") == "running"
        if self.scheduler.track_idle(cid, running, int(summary.get("idle_gpus") or 0), now):
            self._recompute_alerts(cid, now)

    def _order_changed(self) -> None:
        self._changes.order = True

    def _order_dirty(self) -> None:
        self.view.dirty()

    # -- alerts --------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> None:
        """Re-evaluate what became due (expiry thresholds, idle timers)."""
        now = now or self.clock.now()
        for cid in self.scheduler.due(now):
            if cid in self.fleet.clusters:
                self._recompute_alerts(cid, now)

    def _recompute_alerts(self, cid: str, now: datetime) -> None:
        c = self.fleet.clusters.get(cid)
        alerts: tuple[Alert, ...] = ()
        if c is not None:
            detail = (
                self.fleet.last_event_message(cid, _FAILURE_KINDS)
                if c.get("status") == "failed"
                else None
            )
            alerts = cluster_alerts(
                cid, c, self.fleet.views[cid], self.scheduler.activity(cid, detail), now
            )
        if self.scheduler.set_cluster(cid, alerts):
            self._changes.alerts = True
            self._changes.clusters.add(cid)

    def _recompute_account_alerts(self) -> None:
        alerts: tuple[Alert, ...] = ()
        if self.fleet.account is not None:
            alerts = account_alerts(
                self.fleet.account_micros.get("available", 0), self.fleet.running_burn
            )
        if self.scheduler.set_account(alerts):
            self._changes.alerts = True

    def alerts(self) -> list[Alert]:
        """Every active alert, most severe first."""
        return self.scheduler.all()

    def cluster_alerts(self, cid: str) -> tuple[Alert, ...]:
        return self.scheduler.by_cluster.get(cid, ())

    def take_new_alerts(self) -> list[Alert]:
        """Alerts that appeared since the last call (each notified once per stage)."""
        return self.scheduler.take_new()

    # -- repaint -------------------------------------------------------------
    def take_changes(self) -> Changes:
        out, self._changes = self._changes, Changes()
        return out

    def is_stale(self, now: datetime | None = None) -> bool:
        """Data shown may be out of date: disconnected, or no frame for a while."""
        return self.fleet.is_stale(now or self.clock.now())

    def connection_label(self, now: datetime | None = None) -> tuple[str, str]:
        """(text, level) for the connection indicator; level: ok | warning | error."""
        return self.fleet.connection_label(now or self.clock.now())

    # -- the clusters list -------------------------------------------------
    def telemetry_sources(self, ids: Iterable[str] | None = None) -> list[str]:
        return self.fleet.telemetry_sources(ids)

    def mean_util(self, cid: str) -> float | None:
        live = self.history.mean_util(cid)
        return live if live is not None else self.fleet.summary_util(cid)

    def matches(self, c: dict[str, Any]) -> bool:
        return self.view.matches(c)

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        self.view.set_sort(column, reverse)

    def next_sort(self) -> str:
        return self.view.next_sort()

    def reverse_sort(self) -> bool:
        return self.view.reverse_sort()

    def set_filter(self, text: str) -> None:
        self.view.set_filter(text)

    def next_grouping(self) -> str | None:
        return self.view.next_grouping()

    def ordered_ids(self) -> list[str]:
        """Cluster ids that pass the filter, in sort order (cached until something moves)."""
        return self.view.ordered_ids()

    def rows(self) -> list[str | GroupRow]:
        return self.view.rows()

    def replica_rows(self, cid: str) -> list[dict[str, Any]]:
        return self.fleet.replica_rows(cid)

    def terminated_costs(self) -> list[tuple[dict[str, Any], int]]:
        return self.fleet.terminated_costs()

    def find(self, ref: str) -> dict[str, Any] | None:
        return self.fleet.find(ref)
