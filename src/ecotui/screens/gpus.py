"""The fleet GPU view: every GPU across every cluster, worst health first.

Rows come from `GET /gpus` (read every few seconds in a worker); the table draws only
the rows on screen. Sort by health, utilisation, memory, temperature or the cost of
idle time (`o`/`O`), filter as you type (`/`), open a GPU's detail (`enter`), and
restart the replica that holds the GPU under the cursor (`R`, with a confirmation).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Input, Label

from ecocore.wire_health import FleetGpusOut
from ecotui.gpu_health import HEALTH_LEVEL, health_rank, label, summarize
from ecotui.keymap import GPUS_VIEW
from ecotui.model import Changes
from ecotui.screens.base import DashboardScreen
from ecotui.screens.gpu_detail import GpuDetailScreen
from ecotui.widgets.controls import EcoInput
from ecotui.widgets.fleet_table import Cell, Column, FleetTable

# At 80 columns: health, replica, GPU, the reason, utilisation, idle cost and memory.
COLUMNS = [
    Column("health", "health", 10, 0),
    Column("where", "replica", 16, 0, min_width=14),
    Column("gpu", "GPU", 3, 0, align="right", min_width=3),
    Column("reason", "reason", 0, 1, min_width=22),
    Column("util", "util", 5, 1, align="right", min_width=5),
    Column("idle", "idle $/h", 8, 2, align="right", min_width=8),
    Column("mem", "mem GiB", 9, 3, align="right", min_width=9),
    Column("temp", "temp", 5, 3, align="right", min_width=5),
    Column("cluster", "cluster", 16, 4),
    Column("name", "type", 18, 5),
]

SORTS = ("health", "util", "mem", "temp", "idle")
SORT_LABEL = {
    "health": "health",
    "util": "utilisation",
    "mem": "memory",
    "temp": "temperature",
    "idle": "idle cost",
}
RELOAD_S = 3.0


def _money(text: Any) -> Decimal:
    try:
        return Decimal(str(text or "0"))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def row_key(g: dict[str, Any]) -> str:
    return f"{g.get('cluster_id')}/{g.get('replica')}/{g.get('index')}"


def sort_value(g: dict[str, Any], column: str) -> Any:
    """Bigger first for every column: worst health, busiest, fullest, hottest, dearest."""
    if column == "health":
        return health_rank((g.get("health") or {}).get("verdict"))
    if column == "util":
        return float(g.get("utilization") or 0)
    if column == "mem":
        return int(g.get("memory_used_mib") or 0)
    if column == "temp":
        return float(g.get("temperature_c") or 0)
    if column == "idle":
        return _money(g.get("idle_cost_per_hour"))
    return 0


def matches(g: dict[str, Any], text: str) -> bool:
    h = g.get("health") or {}
    hay = " ".join(
        str(x)
        for x in (
            g.get("cluster"),
            g.get("replica"),
            g.get("name"),
            g.get("uuid"),
            g.get("region"),
            h.get("verdict"),
            h.get("reason"),
        )
    ).lower()
    return all(word in hay for word in text.lower().split())


class GpusScreen(DashboardScreen):
    """Every GPU of every cluster, one row each."""

    where = "GPUs"
    BINDINGS: ClassVar[list[BindingType]] = [*GPUS_VIEW]

    DEFAULT_CSS = """
    GpusScreen #caption { height: 1; padding: 0 1; color: $foreground 70%; width: 1fr; }
    GpusScreen #filter { height: 1; border: none; padding: 0 1; display: none; background: $boost; }
    GpusScreen #filter.-shown { display: block; }
    """

    def __init__(self, *, autoload: bool = True) -> None:
        super().__init__()
        self.gpus: dict[str, dict[str, Any]] = {}
        self.fleet_health: dict[str, Any] = {}
        self.sort_column = "health"
        self.sort_reverse = False
        self.filter_text = ""
        self.error: str | None = None
        self.loaded = False
        self._autoload = autoload
        self._order: list[str] = []
        self.version: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Label("loading GPUs …", id="caption")
        yield EcoInput(
            placeholder="filter GPUs: cluster, replica, type, health, reason "
            "(enter keeps, esc clears)",
            id="filter",
        )
        yield FleetTable(COLUMNS, self._cells, id="gpus")

    @property
    def table(self) -> FleetTable:
        return self.query_one(FleetTable)

    def on_mount(self) -> None:
        super().on_mount()
        self.table.empty_text = "no GPUs yet"
        self.table.focus()
        if self._autoload:
            self.load()
            self.set_interval(RELOAD_S, self.load, name="gpus-reload")

    # -- data ----------------------------------------------------------------------
    @work(group="gpus", exclusive=True)
    async def load(self) -> None:
        try:
            # After the first answer, only what changed since the version held.
            data = await self.eco.client.fleet_gpus(brief=True, since=self.version)
        except Exception as exc:  # unreachable backend: keep the last rows, say so
            self.error = str(exc) or type(exc).__name__
            self._caption()
            return
        self.error = None
        self.apply_answer(data)

    def apply_answer(self, data: FleetGpusOut | dict[str, Any]) -> None:
        """A `GET /gpus` answer (or its JSON object), whole or since the version held."""
        answer = data if isinstance(data, FleetGpusOut) else FleetGpusOut.model_validate(data)
        health = answer.health.model_dump(exclude_unset=True)
        # Rows are held as the answer's objects: a row `since` a version carries only
        # the fields that changed, merged into the row held.
        rows = [g.model_dump(exclude_unset=True) for g in answer.gpus]
        if answer.since is None:
            self.version = answer.version
            self.set_gpus(rows, health)
            return
        if answer.since != self.version:
            self.version = None  # not what this view holds: read the whole list next
            return
        old = self.gpus
        new = dict(old)
        changed: set[str] = set()
        for d in rows:
            k = row_key(d)
            prev = new.get(k)
            new[k] = d if prev is None else {**prev, **d}
            changed.add(k)
        for gone in answer.removed or ():
            new.pop("/".join(map(str, gone)), None)
        self.version = answer.version
        self._replace(old, new, changed, health)

    def set_gpus(self, rows: list[dict[str, Any]], health: dict[str, Any] | None = None) -> None:
        """Replace the rows (the loader and tests call this)."""
        new = {row_key(g): g for g in rows}
        old = self.gpus
        self._replace(old, new, {k for k, g in new.items() if old.get(k) != g}, health)

    def _replace(
        self,
        old: dict[str, dict[str, Any]],
        new: dict[str, dict[str, Any]],
        changed: set[str],
        health: dict[str, Any] | None,
    ) -> None:
        # Re-sort only when the rows or a sort value changed: a reload that only moves
        # readings of a health-sorted list repaints the changed rows on screen, no more.
        col = self.sort_column
        reorder = new.keys() != old.keys() or any(
            sort_value(old[k], col) != sort_value(new[k], col) for k in changed if k in old
        )
        if self.filter_text:
            reorder = reorder or any(
                matches(old[k], self.filter_text) != matches(new[k], self.filter_text)
                for k in changed
                if k in old
            )
        self.gpus = new
        self.fleet_health = health or {}
        self.loaded = True
        if not self.ready:
            return
        if reorder:
            self._sync_rows()
        self.table.update_rows(changed & new.keys())
        self._caption()

    def _sync_rows(self) -> None:
        keys = [
            k for k, g in self.gpus.items() if not self.filter_text or matches(g, self.filter_text)
        ]
        col = self.sort_column
        keys.sort(key=lambda k: row_key_tuple(k))
        keys.sort(key=lambda k: sort_value(self.gpus[k], col), reverse=not self.sort_reverse)
        self._order = keys
        self.table.set_rows(list(keys))
        self.table.set_sort_indicator(col, self.sort_reverse)

    def _caption(self) -> None:
        counts = summarize(self.gpus.values())
        total = len(self.gpus)
        shown = len(self._order)
        parts = [
            f"{total} GPU{'s' if total != 1 else ''}"
            if shown == total or not self.filter_text
            else f"{shown} of {total} GPUs match “{self.filter_text}”"
        ]
        parts.append(
            f"✖ {counts['failing']} failing · ▲ {counts['degraded']} degraded · "
            f"? {counts['unknown']} unknown"
        )
        parts.append(f"sort: {SORT_LABEL[self.sort_column]} {'▼' if self.sort_reverse else '▲'}")
        if not self.loaded:
            parts = ["loading GPUs …"]
        if self.error:
            parts.append(f"backend unreachable, showing the last answer: {self.error}")
        text = " · ".join(parts)
        with contextlib.suppress(Exception):
            self.query_one("#caption", Label).update(text)

    # -- cells ---------------------------------------------------------------------
    def _cells(self, key: str, widths: dict[str, int]) -> dict[str, Cell]:
        g = self.gpus.get(key)
        if g is None:
            return {"where": (key, "dim")}
        h = g.get("health") or {}
        verdict = h.get("verdict") or "unknown"
        level = HEALTH_LEVEL.get(verdict, "dim")
        used = (g.get("memory_used_mib") or 0) / 1024
        total = (g.get("memory_total_mib") or 0) / 1024
        idle = _money(g.get("idle_cost_per_hour"))
        name = str(g.get("name") or "").removeprefix("NVIDIA ")
        return {
            "health": (label(verdict), level),
            "where": (str(g.get("replica")), level if verdict == "failing" else ""),
            "cluster": (str(g.get("cluster")), "dim"),
            "gpu": (str(g.get("index")), ""),
            "util": (f"{float(g.get('utilization') or 0):.0f}%", ""),
            "mem": (f"{used:.0f}/{total:.0f}", ""),
            "temp": (f"{float(g.get('temperature_c') or 0):.0f}°C", ""),
            "idle": (f"${idle:.2f}" if idle else "—", "warning" if idle else "dim"),
            "name": (name, "dim"),
            "reason": (
                h.get("reason") or "",
                level if verdict in ("degraded", "failing") else "dim",
            ),
        }

    # -- repaint -------------------------------------------------------------------
    def refresh_view(self, changes: Changes, now: datetime, second: bool) -> None:
        super().refresh_view(changes, now, second)

    def full_refresh(self, now: datetime) -> None:
        super().full_refresh(now)
        self._sync_rows()
        self.table.invalidate_all()
        self._caption()

    # -- the GPU under the cursor -----------------------------------------------------
    def current_gpu(self) -> dict[str, Any] | None:
        key = self.table.cursor_key
        return None if key is None else self.gpus.get(key)

    def current_cluster(self) -> dict[str, Any] | None:
        g = self.current_gpu()
        if g is None:
            return None
        c = self.eco.model.clusters.get(str(g.get("cluster_id")))
        return c if c is not None else {"id": g.get("cluster_id"), "name": g.get("cluster")}

    def selected_replica(self) -> str | None:
        g = self.current_gpu()
        return None if g is None else str(g.get("replica"))

    def current_replica(self) -> str | None:
        return self.selected_replica()

    # -- actions -------------------------------------------------------------------
    def action_open_gpu(self) -> None:
        g = self.current_gpu()
        if g is not None:
            self.app.push_screen(
                GpuDetailScreen(
                    str(g.get("cluster_id")),
                    str(g.get("replica")),
                    int(g.get("index") or 0),
                    initial=g,
                )
            )

    @on(FleetTable.Selected, "#gpus")
    def _selected(self, event: FleetTable.Selected) -> None:
        self.action_open_gpu()

    @on(FleetTable.HeaderClicked, "#gpus")
    def _header(self, event: FleetTable.HeaderClicked) -> None:
        if event.column not in SORTS:
            return
        if self.sort_column == event.column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = event.column, False
        self._resort()

    def action_next_sort(self) -> None:
        self.sort_column = SORTS[(SORTS.index(self.sort_column) + 1) % len(SORTS)]
        self.sort_reverse = False
        self._resort()

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._resort()

    def _resort(self) -> None:
        self._sync_rows()
        self._caption()

    def action_reload(self) -> None:
        self.load()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._resort()

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
            self.filter_text = ""
            self._resort()
            self.table.focus()
            return True
        return False


def row_key_tuple(key: str) -> tuple[str, str, int]:
    cid, _, rest = key.partition("/")
    replica, _, idx = rest.rpartition("/")
    return (cid, replica, int(idx) if idx.isdigit() else 0)
