"""One cluster: replicas, per-GPU history, public URL, events and cost.

Replicas come once a second from the watch feed while this view is open (it
focuses the cluster); GPU history and events are fetched from the REST API when
the view opens and again after a reconnect, so graphs have no hole where the
connection was down. Two columns on a wide terminal, one scrolling column on
a narrow one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.widgets import RichLog, Static

from ecotui.client.rest import ApiRefusal, BackendUnreachable
from ecotui.model import (
    STATUS_SYMBOL,
    Changes,
    fmt_duration,
    fmt_local,
    parse_time,
)
from ecotui.screens.base import DashboardScreen
from ecotui.screens.forwards import ForwardsPanel
from ecotui.screens.keymap import ON_CLUSTER
from ecotui.widgets.cost_panel import CostPanel
from ecotui.widgets.gpu_panel import GpuPanel
from ecotui.widgets.replicas_table import ReplicasTable

EVENT_SYMBOL = {"replica_crashed": "✖", "replica_failed": "✖", "expired": "✖", "terminated": "■",
                "expiry_warning": "▲", "replica_pending": "◌", "replica_ready": "✓",
                "launched": "▶", "scaled": "↕", "extended": "+", "stopped": "○", "resumed": "▶",
                "restarted": "↻", "endpoint_changed": "⇄"}
EVENT_LEVEL = {"replica_crashed": "error", "replica_failed": "error", "expired": "error",
               "expiry_warning": "warning", "replica_pending": "warning"}


class ClusterScreen(DashboardScreen):
    """Everything about one cluster."""

    BINDINGS = ON_CLUSTER

    DEFAULT_CSS = """
    ClusterScreen #info { height: 2; padding: 0 1; background: $boost; text-wrap: nowrap;
                          text-overflow: ellipsis; }
    ClusterScreen #body { layout: horizontal; height: 1fr; }
    ClusterScreen #left { width: 1fr; height: 1fr; }
    ClusterScreen #right { width: 46; height: 1fr; }
    ClusterScreen #events { height: 1fr; border: round $primary 50%; border-title-color: $foreground;
                            scrollbar-size-vertical: 1; }
    ClusterScreen #events:focus { border: round $primary; }
    ClusterScreen.-narrow #body { layout: vertical; overflow-y: auto; }
    ClusterScreen.-narrow #left { height: auto; }
    ClusterScreen.-narrow #right { width: 1fr; height: auto; }
    ClusterScreen.-narrow GpuPanel { height: 12; }
    ClusterScreen.-narrow #events { height: 10; }
    ClusterScreen .-error { color: $error; text-style: bold; }
    ClusterScreen .-warning { color: $warning; text-style: bold; }
    """

    def __init__(self, cluster_id: str) -> None:
        super().__init__()
        self.cluster_id = cluster_id
        self.alert_cluster = cluster_id
        self._events_written = 0
        self._written_last: tuple[Any, ...] | None = None
        self._loaded = False

    @property
    def cluster(self) -> dict[str, Any] | None:
        return self.eco.model.clusters.get(self.cluster_id)

    @property
    def where(self) -> str:  # type: ignore[override]
        c = self.eco.model.clusters.get(self.cluster_id) or {}
        return f"clusters › {c.get('name', self.cluster_id)}"

    def compose_body(self) -> ComposeResult:
        yield Static("", id="info")
        with Container(id="body"):
            with Vertical(id="left"):
                yield ReplicasTable(id="replicas")
                yield ForwardsPanel(self.cluster_id, id="forwards")
                yield GpuPanel(self.eco.model, self.cluster_id, id="gpus")
            with Vertical(id="right"):
                yield CostPanel(self.eco.model, self.cluster_id, id="cost")
                log = RichLog(id="events", max_lines=500, wrap=True, markup=False, auto_scroll=True,
                              min_width=20)
                log.border_title = "Events"
                yield log

    def on_mount(self) -> None:
        self._layout_for(self.app.size.width)
        self.query_one(ReplicasTable).focus()
        self.load_history()

    def on_resize(self) -> None:
        self._layout_for(self.app.size.width)

    def _layout_for(self, width: int) -> None:
        self.set_class(width < 120, "-narrow")

    # -- data from the REST API ----------------------------------------------------
    @work(group="cluster-history", exclusive=True)
    async def load_history(self) -> None:
        """Events and GPU history for this cluster (on open, and after a reconnect)."""
        client = self.eco.client
        try:
            events = await client.events(self.cluster_id)
            self.eco.model.load_events(self.cluster_id, events)
            metrics = await client.metrics(self.cluster_id)
            self.eco.model.load_metrics(self.cluster_id, metrics)
        except (ApiRefusal, BackendUnreachable) as exc:
            self.notify(f"could not load history: {exc}", severity="warning", timeout=4)
        self._loaded = True
        self.eco.repaint_now()

    # -- repaint -------------------------------------------------------------------
    def refresh_view(self, changes: Changes, now: datetime, second: bool) -> None:
        super().refresh_view(changes, now, second)
        cid = self.cluster_id
        cluster_changed = cid in changes.clusters or changes.snapshot
        if cluster_changed or second or changes.account:
            self._info(now)
            self.query_one(CostPanel).show(now, self.eco.tz)
        if cid in changes.replicas or cluster_changed:
            self._replicas()
        if cid in changes.history or cid in changes.replicas or second:
            self.query_one(GpuPanel).refresh_data(now)
        if cid in changes.events:
            self._events()
        if cid in changes.removed:
            self.notify("This cluster is no longer listed by the backend", severity="warning")

    def full_refresh(self, now: datetime) -> None:
        super().full_refresh(now)
        self.query_one("StatusBar").set_where(self.where)  # type: ignore[attr-defined]
        self._info(now)
        self.query_one(CostPanel).show(now, self.eco.tz)
        self._replicas()
        self.query_one(GpuPanel).refresh_data(now)
        self._events_written = 0
        self.query_one("#events", RichLog).clear()
        self._events()

    def _replicas(self) -> None:
        self.query_one(ReplicasTable).sync(self.eco.model.replica_rows(self.cluster_id))

    def _events(self) -> None:
        log = self.query_one("#events", RichLog)
        events = list(self.eco.model.events.get(self.cluster_id, ()))
        if self._events_written > len(events) or (
                self._events_written and len(events) and self._written_last != _ev_key(
                    events[self._events_written - 1])):
            # history arrived and reordered the list: rewrite it
            log.clear()
            self._events_written = 0
        now = self.eco.clock.now()
        for ev in events[self._events_written:]:
            at = parse_time(ev.get("at"))
            kind = str(ev.get("kind", ""))
            line = Text(no_wrap=False)
            line.append(f"{fmt_local(at, self.eco.tz, now=now)} ", "dim")
            level = EVENT_LEVEL.get(kind)
            style = "bold red" if level == "error" else "bold yellow" if level == "warning" else ""
            # The symbol and the message say what happened; the kind is the fallback.
            line.append(f"{EVENT_SYMBOL.get(kind, '·')} ", style)
            line.append(str(ev.get("message") or kind.replace("_", " ")), style)
            log.write(line)
        self._events_written = len(events)
        self._written_last = _ev_key(events[-1]) if events else None

    def _info(self, now: datetime) -> None:
        c = self.cluster
        info = self.query_one("#info", Static)
        if c is None:
            info.update(Text(f"cluster {self.cluster_id}: not in the feed (yet)", "bold"))
            return
        nums = self.eco.model.nums[self.cluster_id]
        status = c.get("status", "")
        wide = self.app.size.width >= 120
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{c.get('name')} ", "bold")
        if wide:
            t.append(f"{c.get('id')}  ", "dim")
        st = f"{STATUS_SYMBOL.get(status, '?')} {status}"
        if c.get("status_reason"):
            st += f" ({c['status_reason']})"
        t.append(st, "bold red" if status == "failed" else "bold green" if status == "running"
                 else "bold yellow" if status == "pending" else "bold")
        if c.get("stale"):
            t.append(" ~ STALE: runtime unreachable, last known states", "bold yellow")
        t.append(f" · {c.get('region')} · {c.get('gpu_type')}×{c.get('gpu_count')}"
                 f"{' per replica' if wide else ''} · "
                 f"{c.get('ready_replicas', 0)}/{c.get('replicas', 0)} ready")
        if wide:
            t.append(f" · image {c.get('image', '')}", "dim")
        t.append("\n")
        ep = c.get("endpoint")
        if ep:
            t.append("URL ", "bold")
            t.append(str(ep.get("url")), "underline")
            t.append(f" → port {ep.get('port')}")
        else:
            t.append("no public URL (u opens one)", "dim")
        if wide:
            started = parse_time(c.get("started_at") or c.get("created_at"))
            t.append(f" · started {fmt_local(started, self.eco.tz, now=now)}")
        if nums.expires_at is not None and status not in ("terminated", "failed"):
            left = (nums.expires_at - now).total_seconds()
            t.append(f" · expires {fmt_local(nums.expires_at, self.eco.tz, now=now)} ")
            t.append(f"(in {fmt_duration(left)})" if left > 0 else "(expired)",
                     "bold red" if left <= 300 else "bold yellow" if left <= 1800 else "")
        if getattr(info, "_eco_plain", None) != (t.plain, len(t.spans)):
            info._eco_plain = (t.plain, len(t.spans))  # type: ignore[attr-defined]
            info.update(t)

    # -- focus and actions -----------------------------------------------------------
    def wanted_focus(self) -> list[str]:
        return [self.cluster_id]

    def wanted_history(self) -> list[str]:
        return [self.cluster_id]

    def current_cluster(self) -> dict[str, Any] | None:
        return self.cluster

    def selected_replica(self) -> str | None:
        table = self.query_one(ReplicasTable)
        return table.selected_replica if table.has_focus else None

    def current_replica(self) -> str | None:
        table = self.query_one(ReplicasTable)
        if table.row_count and table.selected_replica:
            return table.selected_replica
        return super().current_replica()


def _ev_key(ev: dict[str, Any]) -> tuple[Any, ...]:
    return (ev.get("at"), ev.get("kind"), ev.get("message"), ev.get("replica"))
