"""The top line of every screen: where we are, connection state, credit, alerts, clock.

Each part is its own label so a change repaints only that label; the
connection state is always shown in words and a symbol, not by colour alone.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.reactive import var
from textual.widgets import Label

from ecotui.panel_views import StatusView
from ecotui.text import visible


class StatusBar(Horizontal):
    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $foreground;
    }
    StatusBar Label { padding: 0 1; height: 1; }
    StatusBar #sb-title { text-style: bold; color: $accent; }
    StatusBar #sb-where { width: 1fr; color: $foreground 80%; }
    StatusBar .-ok { color: $success; }
    StatusBar .-warning { color: $warning; text-style: bold; }
    StatusBar .-error { color: $error; text-style: bold reverse; }
    StatusBar #sb-clock { color: $foreground 70%; }
    StatusBar.-narrow #sb-credit { display: none; }
    """

    view: var[StatusView | None] = var(None, always_update=True, init=False)

    def __init__(self, where: str = "") -> None:
        super().__init__()
        self._where = where

    def compose(self) -> ComposeResult:
        yield Label("ecotui", id="sb-title")
        yield Label(Content(visible(self._where)), id="sb-where")
        yield Label("", id="sb-alerts")
        yield Label("", id="sb-credit")
        yield Label("", id="sb-conn")
        yield Label("", id="sb-clock")

    def set_where(self, where: str) -> None:
        self._set("#sb-where", where)

    def _set(self, selector: str, text: str, level: str | None = None) -> None:
        label = self.query_one(selector, Label)
        if getattr(label, "_eco_text", None) != text:
            label._eco_text = text  # type: ignore[attr-defined]
            label.update(Content(visible(text)))  # "where" holds cluster and replica names
        if level is not None:
            for lv in ("ok", "warning", "error"):
                label.set_class(lv == level, f"-{lv}")

    def watch_view(self, view: StatusView | None) -> None:
        if view is None:
            return
        self.set_class(self.app.size.width < 110, "-narrow")
        self._set("#sb-conn", view.connection, view.connection_level)
        self._set("#sb-alerts", view.alerts, view.alerts_level)
        self._set("#sb-credit", view.credit)
        self._set("#sb-clock", view.clock)
