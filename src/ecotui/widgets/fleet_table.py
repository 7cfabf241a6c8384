"""A keyed table on the line API, for lists too large to keep as widgets (the fleet).

Rows are keys; cell text comes from a callback and is computed only for rows on
screen. `update_rows(keys)` recomputes the visible ones among them, compares
cell by cell and refreshes only the regions of cells that changed; rows off
screen merely forget their cached cells. Reordering (sort, filter, group)
replaces the key list and repaints the viewport, never the whole table. A fixed
header stays on line 0; group headings are rows the cursor skips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ecotui.keymap import MOVEMENT
from ecotui.model import GroupRow


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int  # 0: takes what is left
    priority: int  # lower numbers stay when the terminal is narrow
    align: str = "left"
    min_width: int = 8


# A cell: its text and a level naming a component style ("" for the row's own).
Cell = tuple[str, str]
CellsFn = Callable[[str, dict[str, int]], dict[str, Cell]]


class FleetTable(ScrollView, can_focus=True):
    """Clusters (or any keyed rows) drawn line by line."""

    BINDINGS: ClassVar[list[BindingType]] = [*MOVEMENT]

    COMPONENT_CLASSES = {
        "fleet-table--header",
        "fleet-table--cursor",
        "fleet-table--group",
        "fleet-table--ok",
        "fleet-table--warning",
        "fleet-table--error",
        "fleet-table--dim",
        "fleet-table--sorted",
    }

    DEFAULT_CSS = """
    FleetTable {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        background: $surface;
        height: 1fr;
    }
    FleetTable > .fleet-table--header { text-style: bold; background: $panel; color: $foreground; }
    FleetTable > .fleet-table--sorted { text-style: bold underline; background: $panel; color: $accent; }
    FleetTable > .fleet-table--cursor { background: $primary 40%; }
    FleetTable:focus > .fleet-table--cursor { background: $primary 70%; text-style: bold; }
    FleetTable > .fleet-table--group { text-style: bold; color: $secondary; background: $boost; }
    FleetTable > .fleet-table--ok { color: $success; }
    FleetTable > .fleet-table--warning { color: $warning; text-style: bold; }
    FleetTable > .fleet-table--error { color: $error; text-style: bold; }
    FleetTable > .fleet-table--dim { color: $foreground 55%; }
    """

    @dataclass
    class Selected(Message):
        """Enter or double click on a row."""

        table: FleetTable
        key: str

        @property
        def control(self) -> FleetTable:
            return self.table

    @dataclass
    class Highlighted(Message):
        """The cursor moved to another row (None: no row)."""

        table: FleetTable
        key: str | None

        @property
        def control(self) -> FleetTable:
            return self.table

    @dataclass
    class HeaderClicked(Message):
        """A column's header was clicked (the screen sorts by it)."""

        table: FleetTable
        column: str

        @property
        def control(self) -> FleetTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[Column],
        cells: CellsFn,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self._cells_fn = cells
        self._rows: list[str | GroupRow] = []
        self._index: dict[str, int] = {}
        self._cells: dict[str, dict[str, Cell]] = {}
        self._strips: dict[str, Strip] = {}
        self._layout: list[tuple[Column, int, int]] = []
        self._layout_width = -1
        self._styles: dict[str, Style] = {}
        self.cursor = 0
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.empty_text = "no clusters"
        self.renders = 0  # lines rendered (the benchmark reads it)
        self._header_cache: tuple[tuple[object, ...], Strip] | None = None

    # -- data ------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def cursor_key(self) -> str | None:
        if 0 <= self.cursor < len(self._rows):
            row = self._rows[self.cursor]
            return row if isinstance(row, str) else None
        return None

    def set_rows(self, rows: list[str | GroupRow]) -> None:
        """Replace the order of rows (keys keep their cached cells)."""
        if rows == self._rows:
            return
        keep = self.cursor_key
        self._rows = rows
        self._index = {r if isinstance(r, str) else r.key: i for i, r in enumerate(rows)}
        self.virtual_size = Size(self.size.width, len(rows) + 1)
        if keep is not None and keep in self._index:
            self.cursor = self._index[keep]
        else:
            self.cursor = min(self.cursor, max(0, len(rows) - 1))
            self.cursor = self._nearest_selectable(self.cursor, 1)
        self.refresh()
        self._scroll_cursor_into_view()
        self.post_message(self.Highlighted(self, self.cursor_key))

    def update_rows(self, keys: set[str] | Sequence[str]) -> int:
        """Cells of these rows changed: repaint the changed cells of visible ones.

        Returns the number of cells refreshed."""
        if not keys:
            return 0
        first, last = self.visible_range()
        refreshed = 0
        for key in keys:
            i = self._index.get(key)
            old = self._cells.get(key)
            if i is None or not (first <= i < last):
                # Off screen: recompute when it scrolls into view.
                if old is not None:
                    del self._cells[key]
                    self._strips.pop(key, None)
                continue
            new = self._cells_fn(key, self._widths())
            if new == old:
                continue
            self._cells[key] = new
            self._strips.pop(key, None)
            y = i - int(self.scroll_y) + 1
            for col, x, w in self._layout:
                if old is None or old.get(col.key) != new.get(col.key):
                    self.refresh(Region(x, y, w, 1))
                    refreshed += 1
        return refreshed

    def invalidate_all(self) -> None:
        self._cells.clear()
        self._strips.clear()
        self.refresh()

    def visible_range(self) -> tuple[int, int]:
        top = int(self.scroll_y)
        height = max(0, self.size.height - 1)
        return top, min(len(self._rows), top + height)

    def visible_keys(self) -> list[str]:
        first, last = self.visible_range()
        return [r for r in self._rows[first:last] if isinstance(r, str)]

    def set_sort_indicator(self, column: str | None, reverse: bool) -> None:
        if (column, reverse) != (self.sort_column, self.sort_reverse):
            self.sort_column, self.sort_reverse = column, reverse
            self.refresh(Region(0, 0, self.size.width, 1))

    # -- layout ----------------------------------------------------------------
    def _widths(self) -> dict[str, int]:
        self._ensure_layout()
        return {c.key: w for c, _, w in self._layout}

    def _ensure_layout(self) -> None:
        width = self.scrollable_content_region.width or self.size.width
        if width == self._layout_width:
            return
        self._layout_width = width
        chosen: list[Column] = []
        used = 0
        for col in sorted(self.columns, key=lambda c: c.priority):
            need = (col.width or col.min_width) + (1 if chosen else 0)
            if used + need <= width:
                chosen.append(col)
                used += need
        order = [c for c in self.columns if c in chosen]
        spare = width - used
        layout: list[tuple[Column, int, int]] = []
        x = 0
        flex = [c for c in order if c.width == 0]
        for i, col in enumerate(order):
            w = col.width or col.min_width
            if col.width == 0 and flex:
                w += spare // len(flex) + (1 if flex.index(col) < spare % len(flex) else 0)
            layout.append((col, x, w))
            x += w + (1 if i < len(order) - 1 else 0)
        self._layout = layout
        self._cells.clear()
        self._strips.clear()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.size.width, len(self._rows) + 1)
        self._layout_width = -1
        self._ensure_layout()
        self._scroll_cursor_into_view()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()
        self._header_cache = None

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(f"fleet-table--{name}")
        return style

    # -- rendering ---------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        self._ensure_layout()
        width = self.size.width
        base = self.rich_style
        if y == 0:
            return self._header_strip(width, base)
        i = int(self.scroll_y) + y - 1
        if i >= len(self._rows):
            if i == 0 and not self._rows:
                return Strip(
                    [Segment(self.empty_text.center(width)[:width], base + self._style("dim"))],
                    width,
                )
            return Strip.blank(width, base)
        self.renders += 1
        row = self._rows[i]
        if isinstance(row, GroupRow):
            text = f" ▾ {row.label or '—'} ({row.count})"
            return Strip([Segment(text.ljust(width)[:width], base + self._style("group"))], width)
        strip = self._strips.get(row)
        if strip is None:
            strip = self._strips[row] = self._row_strip(row, width, base)
        if i == self.cursor:
            # The cursor row is marked by a glyph too (between the alert column and the
            # name), so it shows in plain text and without colour.
            cursor = self._style("cursor")
            segs = [Segment(seg.text, (seg.style or base) + cursor) for seg in strip]
            if len(segs) > 1 and segs[1].text == " ":
                segs[1] = Segment("›" if self.has_focus else "·", segs[1].style)
            strip = Strip(segs, width)
        return strip

    def _header_strip(self, width: int, base: Style) -> Strip:
        key = (width, self.sort_column, self.sort_reverse, len(self._styles))
        if self._header_cache is not None and self._header_cache[0] == key:
            return self._header_cache[1]
        strip = self._build_header(width, base)
        self._header_cache = (key, strip)
        return strip

    def _build_header(self, width: int, base: Style) -> Strip:
        segs: list[Segment] = []
        header = base + self._style("header")
        sorted_style = base + self._style("sorted")
        for n, (col, _x, w) in enumerate(self._layout):
            label = col.label
            style = header
            if col.key == self.sort_column:
                label = f"{label}{'▼' if self.sort_reverse else '▲'}"
                style = sorted_style
            segs.append(Segment(_fit(label, w, col.align), style))
            if n < len(self._layout) - 1:
                segs.append(Segment(" ", header))
        used = sum(s.cell_length for s in segs)
        if used < width:
            segs.append(Segment(" " * (width - used), header))
        return Strip(segs, width)

    def _row_strip(self, key: str, width: int, base: Style) -> Strip:
        cells = self._cells.get(key)
        if cells is None:
            cells = self._cells[key] = self._cells_fn(key, self._widths())
        segs: list[Segment] = []
        for n, (col, _x, w) in enumerate(self._layout):
            text, level = cells.get(col.key, ("", ""))
            style = base + self._style(level) if level else base
            segs.append(Segment(_fit(text, w, col.align), style))
            if n < len(self._layout) - 1:
                segs.append(Segment(" ", base))
        used = sum(s.cell_length for s in segs)
        if used < width:
            segs.append(Segment(" " * (width - used), base))
        return Strip(segs, width)

    # -- cursor ------------------------------------------------------------------
    def _nearest_selectable(self, i: int, step: int) -> int:
        n = len(self._rows)
        if n == 0:
            return 0
        j = max(0, min(n - 1, i))
        while 0 <= j < n and not isinstance(self._rows[j], str):
            j += step
        if not 0 <= j < n:
            j = max(0, min(n - 1, i))
            while 0 <= j < n and not isinstance(self._rows[j], str):
                j -= step
        return max(0, min(n - 1, j))

    def move_cursor(self, index: int, step: int = 1) -> None:
        if not self._rows:
            return
        new = self._nearest_selectable(index, step)
        if new == self.cursor:
            self._scroll_cursor_into_view()
            return
        old = self.cursor
        self.cursor = new
        self._refresh_row(old)
        self._refresh_row(new)
        self._scroll_cursor_into_view()
        self.post_message(self.Highlighted(self, self.cursor_key))

    def move_to_key(self, key: str) -> None:
        if key in self._index:
            self.move_cursor(self._index[key])

    def _refresh_row(self, i: int) -> None:
        y = i - int(self.scroll_y) + 1
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def _scroll_cursor_into_view(self) -> None:
        height = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def _page(self) -> int:
        return max(1, self.size.height - 2)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor + 1, 1)

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor - 1, -1)

    def action_cursor_top(self) -> None:
        self.move_cursor(0, 1)

    def action_cursor_bottom(self) -> None:
        self.move_cursor(len(self._rows) - 1, -1)

    def action_page_down(self) -> None:
        self.move_cursor(self.cursor + self._page(), 1)

    def action_page_up(self) -> None:
        self.move_cursor(self.cursor - self._page(), -1)

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.Selected(self, key))

    async def _on_click(self, event: events.Click) -> None:
        if event.y == 0:
            for col, x, w in self._layout:
                if x <= event.x < x + w:
                    self.post_message(self.HeaderClicked(self, col.key))
            return
        i = int(self.scroll_y) + event.y - 1
        if 0 <= i < len(self._rows) and isinstance(self._rows[i], str):
            self.move_cursor(i)
            if event.chain >= 2:
                self.action_select()


def _fit(text: str, width: int, align: str) -> str:
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: max(0, width - 1)] + "…" if width > 1 else text[:width]
    return text.rjust(width) if align == "right" else text.ljust(width)
