"""A cluster's money: rates, hold, spent, what is left, the projection and the account.

It draws a `CostView` (set `view`): the figures are the backend's (integer
micro-dollars parsed from the API's strings), worded by the screen from the model.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import var
from textual.widgets import Static

from ecotui.panel_views import CostView


class CostPanel(Static):
    DEFAULT_CSS = """
    CostPanel {
        height: auto;
        border: round $primary 50%;
        border-title-color: $foreground;
        padding: 0 1;
    }
    """
    COMPONENT_CLASSES = {"cost-panel--label", "cost-panel--warning", "cost-panel--error"}
    DEFAULT_CSS += """
    CostPanel > .cost-panel--label { color: $foreground 65%; }
    CostPanel > .cost-panel--warning { color: $warning; text-style: bold; }
    CostPanel > .cost-panel--error { color: $error; text-style: bold; }
    """

    view: var[CostView | None] = var(None, always_update=True, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Cost"
        self._plain = ""

    def watch_view(self, view: CostView | None) -> None:
        if view is not None:
            self._paint(view)

    def _paint(self, view: CostView) -> None:
        rows = [(r.label, r.value, r.level) for r in view.rows]
        width = self.content_region.width or 40
        label_style = self.get_component_rich_style("cost-panel--label")
        text = Text(no_wrap=True, overflow="ellipsis")
        two = width >= 58 and len(rows) > 1
        if two:
            pairs = [rows[i : i + 2] for i in range(0, len(rows), 2)]
        else:
            pairs = [[r] for r in rows]
        for n, pair in enumerate(pairs):
            if n:
                text.append("\n")
            for k, (label, value, level) in enumerate(pair):
                if k:
                    text.append("  ")
                text.append(f"{label:<15} ", label_style)
                style = self.get_component_rich_style(f"cost-panel--{level}") if level else ""
                text.append(f"{value:<12}" if two and k == 0 else value, style)
        if text.plain != self._plain:
            self._plain = text.plain
            self.update(text)

    def on_resize(self) -> None:
        self._plain = ""
