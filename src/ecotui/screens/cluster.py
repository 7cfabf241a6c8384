"""One cluster: replicas, per-GPU history, public URL, events and cost.

Replicas come once a second from the watch feed while this view is open (it
focuses the cluster); GPU history and events are fetched from the REST API when
the view opens and again after a reconnect, so graphs have no hole where the
connection was down. Two columns on a wide terminal. On a narrow one (80×24)
the header line carries status, time left, burn rate and spent, the replica
table drops columns by priority instead of scrolling sideways, and the panel
under it is one key away: `1` GPUs, `2` cost, `3` events. `/` filters the
replicas and the events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Container, Vertical
from textual.widgets import Input, RichLog, Static

from ecotui.client.rest import ApiRefusal, BackendUnreachable
from ecotui.keymap import CLUSTER_GPU, CLUSTER_VIEW, ON_CLUSTER
from ecotui.model import STATUS_SYMBOL, Changes
from ecotui.model.panels import cost_view, gpu_panel_view
from ecotui.screens.base import DashboardScreen
from ecotui.screens.forwards import ForwardsPanel
from ecotui.screens.gpu_detail import open_worst_gpu
from ecotui.text import money_in_cents, visible
from ecotui.traffic import cluster_summary
from ecotui.widgets.controls import EcoInput
from ecotui.widgets.cost_panel import CostPanel
from ecotui.widgets.gpu_panel import GpuPanel
from ecotui.widgets.replicas_table import ReplicasTable
from ecotui.wording import fmt_duration, fmt_local, fmt_rate, fmt_usd, parse_time_or_none

EXPIRY_STYLE = {"error": "bold red", "warning": "bold yellow", "": ""}

EVENT_SYMBOL = {
    "replica_crashed": "✖",
    "replica_failed": "✖",
    "expired": "✖",
    "terminated": "■",
    "expiry_warning": "▲",
    "replica_pending": "◌",
    "replica_ready": "✓",
    "launched": "▶",
    "scaled": "↕",
    "extended": "+",
    "stopped": "○",
    "resumed": "▶",
    "restarted": "↻",
    "endpoint_changed": "⇄",
}
EVENT_LEVEL = {
    "replica_crashed": "error",
    "replica_failed": "error",
    "expired": "error",
    "expiry_warning": "warning",
    "replica_pending": "warning",
}


class ClusterScreen(DashboardScreen):
    """Everything about one cluster."""

    BINDINGS: ClassVar[list[BindingType]] = [*CLUSTER_VIEW, *ON_CLUSTER, *CLUSTER_GPU]
    PANELS = ("gpus", "cost", "events")

    DEFAULT_CSS = """
    ClusterScreen #info { height: auto; max-height: 3; padding: 0 1; background: $boost; text-wrap: nowrap;
                          text-overflow: ellipsis; }
    ClusterScreen #filter { height: 1; border: none; padding: 0 1; display: none;
                            background: $boost; }
    ClusterScreen #filter.-shown { display: block; }
    ClusterScreen #body { layout: horizontal; height: 1fr; }
    ClusterScreen #left { width: 1fr; height: 1fr; }
    ClusterScreen #right { width: 46; height: 1fr; }
    ClusterScreen #events { height: 1fr; border: round $primary 50%; border-title-color: $foreground;
                            scrollbar-size-vertical: 1; }
    ClusterScreen #events:focus { border: heavy $primary; }
    ClusterScreen.-narrow #body { layout: vertical; overflow: hidden hidden; }
    ClusterScreen.-narrow ReplicasTable { max-height: 11; }
    ClusterScreen.-narrow #right { width: 1fr; }
    ClusterScreen.-narrow.-p-gpus #left { height: 1fr; }
    ClusterScreen.-narrow.-p-gpus #right { display: none; }
    ClusterScreen.-narrow.-p-cost #gpus { display: none; }
    ClusterScreen.-narrow.-p-cost #left { height: auto; }
    ClusterScreen.-narrow.-p-cost #right { height: 1fr; }
    ClusterScreen.-narrow.-p-cost #events { display: none; }
    ClusterScreen.-narrow.-p-events #gpus { display: none; }
    ClusterScreen.-narrow.-p-events #left { height: auto; }
    ClusterScreen.-narrow.-p-events #right { height: 1fr; }
    ClusterScreen.-narrow.-p-events #cost { display: none; }
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
        self.panel = "gpus"
        self.filter_text = ""

    @property
    def cluster(self) -> dict[str, Any] | None:
        return self.eco.model.clusters.get(self.cluster_id)

    @property
    def where(self) -> str:  # type: ignore[override]
        c = self.eco.model.clusters.get(self.cluster_id) or {}
        return f"clusters › {c.get('name', self.cluster_id)}"

    def compose_body(self) -> ComposeResult:
        yield Static("", id="info")
        yield EcoInput(
            placeholder="filter replicas and events (enter keeps, esc clears)", id="filter"
        )
        with Container(id="body"):
            with Vertical(id="left"):
                yield ReplicasTable(id="replicas")
                yield ForwardsPanel(self.cluster_id, id="forwards")
                yield GpuPanel(id="gpus")
            with Vertical(id="right"):
                yield CostPanel(id="cost")
                log = RichLog(
                    id="events",
                    max_lines=500,
                    wrap=True,
                    markup=False,
                    auto_scroll=True,
                    min_width=20,
                )
                log.border_title = "3 Events"
                yield log

    def on_mount(self) -> None:
        self.query_one(GpuPanel).title_prefix = "1 GPUs"
        self.query_one(CostPanel).border_title = "2 Cost"
        self._layout_for(self.app.size.width)
        self._show_panel(self.panel)
        self.query_one(ReplicasTable).focus()
        self.load_history()

    def on_resize(self) -> None:
        self._layout_for(self.app.size.width)

    def _layout_for(self, width: int) -> None:
        self.set_class(width < 120, "-narrow")
        table = self.query_one(ReplicasTable)
        # the table's border and scrollbar take 4 cells
        table.fit_width(max(20, (width if width < 120 else width - 46) - 4))

    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    # -- panels: one key each ----------------------------------------------------
    def _show_panel(self, panel: str) -> None:
        self.panel = panel
        for p in self.PANELS:
            self.set_class(p == panel, f"-p-{p}")

    def _panel_key(self, panel: str) -> None:
        self._show_panel(panel)
        target = {"gpus": "#gpus", "cost": "#cost", "events": "#events"}[panel]
        widget = self.query_one(target)
        if widget.focusable:
            widget.focus()
        if panel == "cost":
            self._cost(self.eco.clock.now())

    def action_panel_gpus(self) -> None:
        self._panel_key("gpus")

    def action_panel_cost(self) -> None:
        self._panel_key("cost")

    def action_panel_events(self) -> None:
        self._panel_key("events")

    # -- filter: replicas and events ---------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", EcoInput)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._set_filter(event.value.strip())

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        box = self.query_one("#filter", EcoInput)
        if not box.value:
            box.remove_class("-shown")
        self.query_one(ReplicasTable).focus()

    def _set_filter(self, text: str) -> None:
        if text == self.filter_text:
            return
        self.filter_text = text
        self._replicas()
        self._events_written = 0
        self.query_one("#events", RichLog).clear()
        self._events()

    def handle_back(self) -> bool:
        box = self.query_one("#filter", EcoInput)
        if box.has_focus or box.value:
            box.value = ""
            box.remove_class("-shown")
            self._set_filter("")
            self.query_one(ReplicasTable).focus()
            return True
        return False

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
            self._cost(now)
        if cid in changes.replicas or cluster_changed:
            self._replicas()
        if cid in changes.history or cid in changes.replicas or second:
            self._gpus(now)
        if cid in changes.events:
            self._events()
            self._replicas()
        if cid in changes.removed:
            self.notify("This cluster is no longer listed by the backend", severity="warning")

    def full_refresh(self, now: datetime) -> None:
        super().full_refresh(now)
        self.query_one("StatusBar").set_where(self.where)  # type: ignore[attr-defined]
        self._info(now)
        self._cost(now)
        self._replicas()
        self._gpus(now)
        self._events_written = 0
        self.query_one("#events", RichLog).clear()
        self._events()

    def _cost(self, now: datetime) -> None:
        self.query_one(CostPanel).view = cost_view(
            self.eco.model, self.cluster_id, now, self.eco.tz
        )

    def _gpus(self, now: datetime) -> None:
        self.query_one(GpuPanel).view = gpu_panel_view(self.eco.model, self.cluster_id, now)

    def _replicas(self) -> None:
        rows = self._with_restarts(self.eco.model.replica_rows(self.cluster_id))
        if self.filter_text:
            needle = self.filter_text.lower()
            rows = [
                r
                for r in rows
                if needle
                in " ".join(
                    str(r.get(k) or "") for k in ("name", "phase", "reason", "node")
                ).lower()
            ]
        self.query_one(ReplicasTable).sync(rows)

    def _with_restarts(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A replica restarted by hand keeps `restarts` (crashes) as it was; its reason
        cell says when it was restarted, so the table shows it at any size."""
        last: dict[str, Any] = {}
        for ev in self.eco.model.events.get(self.cluster_id, ()):
            if ev.get("kind") == "restarted" and ev.get("replica"):
                last[str(ev["replica"])] = ev.get("at")
        if not last:
            return rows
        now = self.eco.clock.now()
        out = []
        for r in rows:
            at = last.get(str(r.get("name")))
            if at and not r.get("reason"):
                when = fmt_local(parse_time_or_none(at), self.eco.tz, now=now)
                when = when[:5] if len(when) == 8 else when  # HH:MM today: the column stays narrow
                r = {**r, "reason": f"↻ restarted {when}"}
            out.append(r)
        return out

    def _events(self) -> None:
        log = self.query_one("#events", RichLog)
        events = list(self.eco.model.events.get(self.cluster_id, ()))
        if self._events_written > len(events) or (
            self._events_written
            and len(events)
            and self._written_last != _ev_key(events[self._events_written - 1])
        ):
            # history arrived and reordered the list: rewrite it
            log.clear()
            self._events_written = 0
        now = self.eco.clock.now()
        needle = self.filter_text.lower()
        for ev in events[self._events_written :]:
            at = parse_time_or_none(ev.get("at"))
            kind = str(ev.get("kind", ""))
            if (
                needle
                and needle
                not in f"{kind} {ev.get('message') or ''} {ev.get('replica') or ''}".lower()
            ):
                continue
            line = Text(no_wrap=False)
            line.append(f"{fmt_local(at, self.eco.tz, now=now)} ", "dim")
            level = EVENT_LEVEL.get(kind)
            style = "bold red" if level == "error" else "bold yellow" if level == "warning" else ""
            # The symbol and the message say what happened; the kind is the fallback.
            line.append(f"{EVENT_SYMBOL.get(kind, '·')} ", style)
            line.append(money_in_cents(visible(ev.get("message") or kind.replace("_", " "))), style)
            log.write(line)
        self._events_written = len(events)
        self._written_last = _ev_key(events[-1]) if events else None

    def _info(self, now: datetime) -> None:
        c = self.cluster
        info = self.query_one("#info", Static)
        if c is None:
            info.update(Text(f"cluster {visible(self.cluster_id)}: not in the feed (yet)", "bold"))
            return
        nums = self.eco.model.nums[self.cluster_id]
        status = c.get("status", "")
        wide = self.app.size.width >= 120
        # Line 1: what someone on call needs first, also at 80 columns.
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{visible(c.get('name'))} ", "bold")
        st = f"{STATUS_SYMBOL.get(status, '?')} {status}"
        if c.get("status_reason"):
            st += f" ({visible(c['status_reason'])})"
        t.append(
            st,
            "bold red"
            if status == "failed"
            else "bold green"
            if status == "running"
            else "bold yellow"
            if status == "pending"
            else "bold",
        )
        if c.get("stale"):
            t.append(" ~ STALE: runtime unreachable, last known states", "bold yellow")
        if nums.expires_at is not None and status not in ("terminated", "failed"):
            left = (nums.expires_at - now).total_seconds()
            t.append(" · ")
            t.append(
                f"{fmt_duration(left)} left" if left > 0 else "expired",
                EXPIRY_STYLE[nums.expiry_level(now)],
            )
        t.append(f" · burn {fmt_rate(nums.burn) if nums.burn else '—'}")
        t.append(f" · spent {fmt_usd(nums.spent)}")
        if wide:
            t.append(f" · {visible(c.get('id'))}", "dim")
        t.append("\n")
        # Line 2: how to reach it first (cut last at 80 columns: the rest is in the list).
        ep = c.get("endpoint")
        if ep:
            t.append("URL ", "bold")
            t.append(visible(ep.get("url")), "underline")
            t.append(f" → port {ep.get('port')}")
        else:
            t.append("no public URL (u opens one)", "dim")
        t.append(
            f" · {c.get('ready_replicas', 0)}/{c.get('replicas', 0)} ready · "
            f"{visible(c.get('region'))} · {visible(c.get('gpu_type'))}×{c.get('gpu_count')}"
            f"{' per replica' if wide else ''}"
        )
        if nums.expires_at is not None and status not in ("terminated", "failed"):
            t.append(f" · expires {fmt_local(nums.expires_at, self.eco.tz, now=now)}")
        if wide:
            started = parse_time_or_none(c.get("started_at") or c.get("created_at"))
            t.append(f" · started {fmt_local(started, self.eco.tz, now=now)}")
            # Line 3 (wide terminals): what runs in each replica.
            t.append(f"\nimage {visible(c.get('image', ''))}", "dim")
            if c.get("startup_command"):
                t.append(f" · command {visible(c['startup_command'])}", "dim")
        self._traffic_title(c)
        if getattr(info, "_eco_plain", None) != (t.plain, len(t.spans)):
            info._eco_plain = (t.plain, len(t.spans))  # type: ignore[attr-defined]
            info.update(t)

    def _traffic_title(self, c: dict[str, Any]) -> None:
        """The replica table's title says the service URL's traffic and how it reaches the
        replicas (directly, or through the API server's port-forward), at any width."""
        table = self.query_one(ReplicasTable)
        title = escape(f"Replicas · {cluster_summary(c)}")  # a title is markup: none here
        if table.border_title != title:
            table.border_title = title

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

    def action_gpu_detail(self) -> None:
        name = self.current_replica()
        rows = {r.get("name"): r for r in self.eco.model.replica_rows(self.cluster_id)}
        rep = rows.get(name)
        if rep is None or not open_worst_gpu(self.app, self.cluster or {}, rep):
            self.notify(f"{name or 'this replica'} reports no GPUs", severity="warning")


def _ev_key(ev: dict[str, Any]) -> tuple[Any, ...]:
    return (ev.get("at"), ev.get("kind"), ev.get("message"), ev.get("replica"))
