"""Active alerts in words, in colour and with a symbol, under the status line.

Shows as many alerts as its height allows, most severe first, then how many
more there are; hidden when there is nothing to say.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import var
from textual.widgets import Static

from ecotui.panel_views import AlertsView
from ecotui.text import visible


class AlertBar(Static):
    DEFAULT_CSS = """
    AlertBar {
        height: auto;
        max-height: 3;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        padding: 0 1;
        background: $error 15%;
        display: none;
    }
    AlertBar.-shown { display: block; }
    AlertBar.-tall { max-height: 5; }
    """

    COMPONENT_CLASSES = {"alert-bar--error", "alert-bar--warning", "alert-bar--more"}
    DEFAULT_CSS += """
    AlertBar > .alert-bar--error { color: $error; text-style: bold; }
    AlertBar > .alert-bar--warning { color: $warning; text-style: bold; }
    AlertBar > .alert-bar--more { color: $foreground 70%; }
    """

    view: var[AlertsView] = var(AlertsView(), always_update=True, init=False)

    def __init__(self, *, cluster_id: str | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cluster_id = cluster_id  # None: the whole fleet
        self._last: Text | None = None

    def watch_view(self, view: AlertsView) -> None:
        if not self.is_mounted:
            return
        alerts = view.lines
        total = view.count
        height = self.app.size.height
        tall = height >= 40
        self.set_class(tall, "-tall")
        # A small terminal gives alerts one line (the status line counts them all).
        limit = 5 if tall else 3 if height >= 30 else 1
        text = Text(no_wrap=True, overflow="ellipsis")
        if limit == 1 or total <= limit:
            shown = alerts[:limit]
        else:
            shown = alerts[: limit - 1]
        for i, a in enumerate(shown):
            if i:
                text.append("\n")
            style = self.get_component_rich_style(f"alert-bar--{a.level}")
            word = "ALERT" if a.level == "error" else "WARNING"
            symbol = "✖" if a.level == "error" else "▲"
            count = f"1/{total} " if limit == 1 and total > 1 else ""
            text.append(f"{symbol} {word} {count}{visible(a.title)}: ", style)
            text.append(visible(a.text))
        if total > len(shown) and limit > 1:
            text.append("\n")
            text.append(
                f"  … and {total - len(shown)} more alerts",
                self.get_component_rich_style("alert-bar--more"),
            )
        self.set_class(total > 0, "-shown")
        if self._last is None or text.plain != self._last.plain or text.spans != self._last.spans:
            self._last = text
            self.update(text)
