"""A cluster's replicas: phase, readiness, restarts, node, reason, GPU readings and the
service URL's traffic to each (requests and 5xx per second, in flight, p99 latency).

A DataTable with keyed rows (the replica name) updated by diff, as live
dashboards do: stale rows removed, only changed cells updated, new rows added,
sorted only when rows were added; the caller wraps it in `batch_update()`.
Columns that do not fit the width are dropped by priority (`PRIORITY`), so
there is never a horizontal scrollbar. Cells are plain text (never markup),
with control characters made visible.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.widgets import DataTable

from ecotui.gpu_health import label as health_label
from ecotui.gpu_health import replica_health
from ecotui.keymap import MOVEMENT
from ecotui.text import visible
from ecotui.traffic import replica_cells as traffic_cells
from ecotui.wording import sparkline

PHASE_SYMBOL = {"Running": "●", "Pending": "◌", "Succeeded": "✓", "Failed": "✖", "Unknown": "?"}

# The reason comes early (what an on-call engineer looks for), capped so GPU columns stay in view.
COLUMNS = [
    ("replica", "replica"),
    ("phase", "phase"),
    ("ready", "ready"),
    ("health", "health"),
    ("restarts", "restarts"),
    ("reason", "reason"),
    ("node", "node"),
    ("gpus", "GPU util"),
    ("util", "util"),
    ("rps", "req/s"),
    ("5xx", "5xx"),
    ("inflight", "in flight"),
    ("p99", "p99"),
    ("mem", "mem GiB"),
    ("temp", "temp"),
    ("power", "power"),
]
REASON_WIDTH = 30
# Which columns stay when the table is narrow: first listed, last dropped.
# Traffic sits beside the GPU utilisation (busy GPUs with no requests, or the reverse, is
# what the pair is for); the node before memory, which the GPU panel shows per GPU.
PRIORITY = [
    "replica",
    "ready",
    "phase",
    "health",
    "restarts",
    "reason",
    "util",
    "rps",
    "5xx",
    "gpus",
    "node",
    "p99",
    "mem",
    "inflight",
    "temp",
    "power",
]


def replica_cells(r: dict[str, Any]) -> dict[str, str]:
    """The text of each cell of one replica row (status in words and symbols)."""
    gpus = r.get("gpus") or []
    phase = r.get("phase") or "Unknown"
    cells = {
        "replica": visible(r.get("name", "")),
        "phase": f"{PHASE_SYMBOL.get(phase, '?')} {phase}",
        "ready": "✓ yes" if r.get("ready") else "✗ no",
        "restarts": str(r.get("restarts") or 0),
        "node": visible(r.get("node") or "—"),
        "reason": _cap(visible(r.get("reason") or ""), REASON_WIDTH),
    }
    cells.update(traffic_cells(r))
    cells["health"] = health_label(replica_health(r).level) if gpus else "—"
    if gpus:
        utils = [float(g.get("utilization") or 0) for g in gpus]
        cells["gpus"] = sparkline(utils, len(utils))
        cells["util"] = f"{sum(utils) / len(utils):.0f}%"
        used = sum(float(g.get("memory_used_mib") or 0) for g in gpus) / 1024
        total = sum(float(g.get("memory_total_mib") or 0) for g in gpus) / 1024
        cells["mem"] = f"{used:.0f}/{total:.0f}"
        cells["temp"] = f"{max(float(g.get('temperature_c') or 0) for g in gpus):.0f}°C"
        cells["power"] = f"{sum(float(g.get('power_w') or 0) for g in gpus):.0f}W"
    else:
        for k in ("gpus", "util", "mem", "temp", "power"):
            cells[k] = "—"
    return cells


class ReplicasTable(DataTable[Any]):
    BINDINGS: ClassVar[list[BindingType]] = [*MOVEMENT]

    DEFAULT_CSS = """
    ReplicasTable {
        height: auto;
        max-height: 12;
        border: round $primary 50%;
        border-title-color: $foreground;
    }
    ReplicasTable:focus { border: heavy $primary; }  /* focus reads without colour */
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.border_title = "Replicas"
        self._cells: dict[str, dict[str, str]] = {}
        self._rows: list[dict[str, Any]] = []
        self.cell_updates = 0
        self.width_budget: int | None = None
        self.shown: list[tuple[str, str]] = list(COLUMNS)

    def on_mount(self) -> None:
        for key, label in self.shown:
            self.add_column(label, key=key)

    def fit_width(self, width: int) -> None:
        """Show the columns that fit in `width` cells, by priority."""
        self.width_budget = width
        self._refit()

    def _columns_for(self, width: int) -> list[tuple[str, str]]:
        need: dict[str, int] = {}
        for key, label in COLUMNS:
            longest = max([len(label), *(len(c[key]) for c in self._cells.values())])
            need[key] = longest + 2  # cell padding
        chosen: set[str] = set()
        used = 0
        for key in PRIORITY:
            if used + need[key] <= width or not chosen:
                chosen.add(key)
                used += need[key]
        return [(k, label) for k, label in COLUMNS if k in chosen]

    def _refit(self) -> None:
        if self.width_budget is None or not self.is_mounted:
            return
        shown = self._columns_for(self.width_budget)
        if shown == self.shown:
            return
        self.shown = shown
        cursor = self.cursor_row
        self.clear(columns=True)
        for key, label in shown:
            self.add_column(label, key=key)
        rows, self._cells = self._rows, {}
        self.sync(rows)
        if self.row_count:
            self.move_cursor(row=min(cursor, self.row_count - 1))

    def sync(self, replicas: list[dict[str, Any]]) -> None:
        """Bring the rows in line with `replicas` by diff."""
        self._rows = replicas
        shown = self.shown
        wanted = {str(r.get("name", "")): r for r in replicas}
        for key in [k for k in self._cells if k not in wanted]:
            self.remove_row(key)
            del self._cells[key]
        added = False
        for name, r in wanted.items():
            cells = replica_cells(r)
            old = self._cells.get(name)
            if old is None:
                self.add_row(*[Text(cells[k]) for k, _ in shown], key=name)
                added = True
            else:
                for k, _ in shown:
                    if old[k] != cells[k]:
                        self.update_cell(name, k, Text(cells[k]), update_width=True)
                        self.cell_updates += 1
            self._cells[name] = cells
        if self.width_budget is not None and self._columns_for(self.width_budget) != shown:
            self.call_later(self._refit)  # a cell grew (or rows came): drop or add columns
        if added:
            order = {visible(r.get("name", "")): int(r.get("index", 0)) for r in replicas}
            self.sort("replica", key=lambda cell: (order.get(str(cell), 0), str(cell)))

    @property
    def selected_replica(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return None if key.value is None else str(key.value)

    def action_cursor_top(self) -> None:
        self.move_cursor(row=0)

    def action_cursor_bottom(self) -> None:
        self.move_cursor(row=max(0, self.row_count - 1))


def _cap(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
