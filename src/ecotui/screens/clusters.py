"""The home view: one row per cluster, live.

Columns: name, status, region, GPU type x count, replicas ready/desired, mean
GPU utilisation with a sparkline, the service URL's requests and 5xx answers per
second, burn rate, spent and a live countdown to expiry. Sort by any column
(`o`/`O`, or click a heading), filter as you type (`/`), group by region or
status (`m`). Only rows on screen are drawn and only
their changed cells are repainted; the watch focus follows the rows on screen.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Input, Label

from ecotui.gpu_health import HEALTH_LEVEL, cluster_health
from ecotui.host import OpenCluster
from ecotui.keymap import CLUSTERS_VIEW, ON_CLUSTER
from ecotui.model import STATUS_SYMBOL, Changes
from ecotui.screens.base import DashboardScreen
from ecotui.text import visible
from ecotui.traffic import fmt_per_s, traffic_of
from ecotui.widgets.controls import EcoInput
from ecotui.widgets.fleet_table import Cell, Column, FleetTable
from ecotui.wording import fmt_duration, fmt_rate, fmt_usd, sparkline

COLUMNS = [
    Column("alert", "", 1, 0),
    Column("name", "cluster", 0, 0, min_width=12),
    Column("status", "status", 13, 1),
    Column("region", "region", 10, 5),
    Column("gpu", "GPUs", 13, 4),
    Column("replicas", "ready", 5, 2, align="right"),
    Column("util", "GPU util", 14, 3),
    Column("health", "health", 8, 1),
    Column("reqs", "req/s", 5, 3, align="right", min_width=5),
    Column("5xx", "5xx/s", 5, 3, align="right", min_width=5),
    Column("burn", "burn/h", 10, 2, align="right"),
    Column("spent", "spent", 11, 6, align="right"),
    Column("expires", "expires in", 10, 1, align="right"),
]
COLUMN_LABEL = {c.key: (c.label or "alerts") for c in COLUMNS}
COLUMN_LABEL["gpu"] = "GPUs"

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
EMPTY_TEXT = "No clusters yet: press n to launch the first one"

STATUS_LEVEL = {
    "running": "ok",
    "pending": "warning",
    "stopping": "warning",
    "stopped": "dim",
    "terminating": "dim",
    "terminated": "dim",
    "failed": "error",
}


def health_cell(c: dict[str, Any]) -> Cell:
    """The GPU health of a cluster in a word and a symbol (unknown until telemetry says)."""
    if c.get("status") not in ("running", "pending", "stopping"):
        return ("—", "dim")
    if not (c.get("gpu_summary") or {}).get("gpus"):
        return ("—", "dim")  # no GPU reports yet (pending, not scheduled)
    verdict, _, failing, degraded = cluster_health(c)
    n = failing if verdict == "failing" else degraded if verdict == "degraded" else 0
    count = "" if n <= 1 else f" {n}" if n <= 9 else "+"
    text = {"ok": "✓ ok", "degraded": "▲ degr", "failing": "✖ fail", "unknown": "? unkn"}.get(
        verdict, "? unkn"
    ) + count
    return (text, HEALTH_LEVEL.get(verdict, "dim"))


class ClustersScreen(DashboardScreen):
    """Every cluster of the account, one row each."""

    where = "clusters"
    BINDINGS: ClassVar[list[BindingType]] = [*CLUSTERS_VIEW, *ON_CLUSTER]

    DEFAULT_CSS = """
    ClustersScreen #caption { height: 1; padding: 0 1; color: $foreground 70%; width: 1fr; }
    ClustersScreen #filter { height: 1; border: none; padding: 0 1; display: none;
                             background: $boost; }
    ClustersScreen #filter.-shown { display: block; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._now: datetime | None = None
        self._spin = 0

    def compose_body(self) -> ComposeResult:
        yield Label("", id="caption")
        yield EcoInput(
            placeholder="filter clusters: name, region, status, GPU type (enter keeps, esc clears)",
            id="filter",
        )
        yield FleetTable(COLUMNS, self._cells, id="fleet")

    @property
    def table(self) -> FleetTable:
        return self.query_one(FleetTable)

    # -- cells -----------------------------------------------------------------
    def _cells(self, cid: str, widths: dict[str, int]) -> dict[str, Cell]:
        m = self.eco.model
        c = m.clusters.get(cid)
        nums = m.nums.get(cid)
        if c is None or nums is None:
            return {"name": (visible(cid), "dim")}
        now = self._now or self.eco.clock.now()
        status = c.get("status", "")
        alerts = m.cluster_alerts(cid)
        level = "error" if any(a.level == "error" for a in alerts) else "warning" if alerts else ""
        marker = "✖" if level == "error" else "▲" if level == "warning" else ""
        if not marker and c.get("stale"):
            marker = "~"
        stale = bool(c.get("stale"))
        status_text = f"{STATUS_SYMBOL.get(status, '?')} {status}"
        if stale:
            status_text = f"~{status}"  # the caption says how many are stale, in words
        mu = m.mean_util(cid)
        uw = widths.get("util", 14)
        if mu is None:
            util = "—"
        else:
            spark = sparkline(m.util_spark.get(cid, ()), max(0, uw - 5))
            util = f"{mu:>3.0f}% {spark}"
        if status in ("terminated", "failed"):
            expires, exp_level = "—", "dim"
        elif nums.expires_at is None:
            expires, exp_level = "—", ""
        else:
            left = (nums.expires_at - now).total_seconds()
            expires = fmt_duration(left) if left > 0 else "expired"
            exp_level = nums.expiry_level(now)
        ready = int(c.get("ready_replicas") or 0)
        desired = int(c.get("replicas") or 0)
        rep_level = "" if ready >= desired or status != "running" else "warning"
        dim = "dim" if status in ("terminated", "stopped") else ""
        traffic = traffic_of(c)
        reqs = fmt_per_s(traffic.get("requests_per_s")) if traffic else "—"
        errs = fmt_per_s(traffic.get("errors_5xx_per_s")) if traffic else "—"
        errs_level = "error" if errs not in ("—", "0") else dim or ("dim" if errs == "—" else "")
        return {
            "alert": (marker, level),
            "name": (visible(c.get("name", cid)), level or dim),
            "status": (status_text, "warning" if stale else STATUS_LEVEL.get(status, "")),
            "region": (visible(c.get("region", "")), dim),
            "gpu": (f"{visible(c.get('gpu_type', ''))}×{c.get('gpu_count', 0)}", dim),
            "replicas": (f"{ready}/{desired}", rep_level or dim),
            "util": (util, "warning" if any(a.kind == "idle" for a in alerts) else dim),
            "health": health_cell(c),
            "reqs": (reqs, dim or ("dim" if reqs == "—" else "")),
            "5xx": (errs, errs_level),
            "burn": (fmt_rate(nums.burn) if nums.burn else "—", dim),
            "spent": (fmt_usd(nums.spent), dim),
            "expires": (expires, exp_level or dim),
        }

    # -- repaint -----------------------------------------------------------------
    def refresh_view(self, changes: Changes, now: datetime, second: bool) -> None:
        super().refresh_view(changes, now, second)
        self._now = now
        table = self.table
        if changes.order or changes.snapshot:
            self._sync_rows()
        touched = changes.clusters | changes.removed
        if second:
            touched = touched | set(table.visible_keys())
        if touched:
            table.update_rows(touched)
        if changes.order or changes.snapshot or changes.removed or changes.clusters:
            self._caption()
        if second or changes.connection or changes.snapshot:
            self._empty_state()

    def full_refresh(self, now: datetime) -> None:
        super().full_refresh(now)
        self._now = now
        self._sync_rows()
        self.table.invalidate_all()
        self._caption()
        self._empty_state()

    def _empty_state(self) -> None:
        """What an empty table says: what the dashboard waits for (with a spinner)
        until the backend's first snapshot, then how to launch the first cluster."""
        m = self.eco.model
        table = self.table
        if m.snapshots == 0:
            frame = SPINNER[int(self.eco.clock.now().timestamp() * 4 + self._spin) % len(SPINNER)]
            self._spin += 1
            text, _level = m.connection_label()
            url = getattr(self.eco.client, "base_url", "")
            if m.connection.state in ("connecting", "connected"):
                text = f"{frame} waiting for the backend's first snapshot ({url})"
            else:
                text = f"{frame} waiting for the backend ({url}): {text}"
        elif not m.clusters:
            text = EMPTY_TEXT
        else:
            return
        if table.empty_text != text:
            table.empty_text = text
            table.refresh()

    def _spin_tick(self) -> None:
        if self.eco.model.snapshots == 0 and self.is_attached:
            self._empty_state()

    def _sync_rows(self) -> None:
        m = self.eco.model
        self.table.set_rows(m.rows())
        self.table.set_sort_indicator(m.sort_column, m.sort_reverse)

    def _caption(self) -> None:
        m = self.eco.model
        total = len(m.clusters)
        shown = len(m.ordered_ids())
        parts = [
            f"{total} cluster{'s' if total != 1 else ''}"
            if shown == total
            else f"{shown} of {total} clusters match “{m.filter_text}”"
        ]
        parts.append(
            f"sort: {COLUMN_LABEL.get(m.sort_column, m.sort_column)} "
            f"{'▼' if m.sort_reverse else '▲'}"
        )
        parts.append(f"group: {m.group_by or 'none'}")
        if m.stale_ids:
            n = len(m.stale_ids)
            parts.append(f"~ {n} cluster{'s' if n != 1 else ''} stale (runtime unreachable)")
        sources = m.telemetry_sources()
        parts.append(f"telemetry: {', '.join(sources) if sources else 'none yet'}")
        burn = m.running_burn
        if burn:
            parts.append(f"burning {fmt_rate(burn)}")
        text = " · ".join(parts)
        label = self.query_one("#caption", Label)
        if getattr(label, "_eco_text", None) != text:
            label._eco_text = text  # type: ignore[attr-defined]
            label.update(text)

    def wanted_focus(self) -> list[str]:
        return self.table.visible_keys()

    # -- actions -----------------------------------------------------------------
    def current_cluster(self) -> dict[str, Any] | None:
        key = self.table.cursor_key
        return None if key is None else self.eco.model.clusters.get(key)

    def action_open(self) -> None:
        key = self.table.cursor_key
        if key is not None:
            self.post_message(OpenCluster(key))

    @on(FleetTable.Selected, "#fleet")
    def _selected(self, event: FleetTable.Selected) -> None:
        self.post_message(OpenCluster(event.key))

    @on(FleetTable.HeaderClicked, "#fleet")
    def _header(self, event: FleetTable.HeaderClicked) -> None:
        m = self.eco.model
        if event.column == "alert":
            return
        if m.sort_column == event.column:
            m.reverse_sort()
        else:
            m.set_sort(event.column, reverse=False)
        self.eco.repaint_now()

    def action_next_sort(self) -> None:
        col = self.eco.model.next_sort()
        if col == "alert":
            col = self.eco.model.next_sort()
        self.eco.repaint_now()

    def action_reverse_sort(self) -> None:
        self.eco.model.reverse_sort()
        self.eco.repaint_now()

    def action_group(self) -> None:
        self.eco.model.next_grouping()
        self.eco.repaint_now()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.eco.model.set_filter(event.value.strip())
        self.eco.repaint_now()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        box = self.query_one("#filter", Input)
        if not box.value:
            box.remove_class("-shown")
        self.table.focus()

    def handle_back(self) -> bool:
        box = self.query_one("#filter", Input)
        if box.has_focus or box.value:
            box.value = ""
            box.remove_class("-shown")
            self.eco.model.set_filter("")
            self.table.focus()
            self.eco.repaint_now()
            return True
        return False

    def on_mount(self) -> None:
        self.table.focus()
        self.set_interval(0.25, self._spin_tick, name="spinner")
