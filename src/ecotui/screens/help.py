"""The help screen: every key of the dashboard's key map, by where it works."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from ecotui.screens.keymap import SCOPES, TERMINAL_NOTE, key_label


def help_tables() -> list[Table]:
    tables = []
    for scope, bindings in SCOPES:
        table = Table(title=scope, title_justify="left", title_style="bold", show_header=False,
                      box=None, padding=(0, 2), expand=False)
        table.add_column("key", style="bold", no_wrap=True, min_width=10)
        table.add_column("does")
        by_action: dict[str, list[Binding]] = {}
        for b in bindings:
            by_action.setdefault(b.description, []).append(b)
        for desc, bs in by_action.items():
            table.add_row(" ".join(key_label(b) for b in bs), desc)
        tables.append(table)
    return tables


class HelpScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "close", key_display="esc"),
        Binding("question_mark", "app.pop_screen", "close", key_display="?"),
        Binding("q", "app.quit", "quit"),
        Binding("j,down", "scroll_down", "down", show=False),
        Binding("k,up", "scroll_up", "up", show=False),
    ]

    DEFAULT_CSS = """
    HelpScreen { background: $surface; }
    HelpScreen #help-title { height: 1; background: $panel; text-style: bold; padding: 0 1; }
    HelpScreen VerticalScroll { padding: 0 2; }
    HelpScreen .help-table { margin: 1 0 0 0; width: 1fr; height: auto; }
    HelpScreen #help-grid { layout: grid; grid-size: 1; grid-gutter: 0 4; height: auto;
                            grid-rows: auto; }
    HelpScreen.-wide #help-grid { grid-size: 2; }
    """

    def compose(self) -> ComposeResult:
        yield Static("ecotui help · esc or ? closes · every key below is also in the command "
                     "palette (ctrl+p)", id="help-title")
        with VerticalScroll():
            with Container(id="help-grid"):
                for table in help_tables():
                    yield Static(table, classes="help-table")
            yield Static(Text("\n" + TERMINAL_NOTE + "\nStatus is always in words and symbols: "
                              "● running  ◌ pending  ◑ stopping/terminating  ○ stopped  · terminated  "
                              "✖ failed  ~ stale (runtime unreachable)  ✖/▲ alert  ✓ ready  ✗ not ready"
                              "\nTimes are local times. NO_COLOR is respected."),
                         classes="help-table")

    def on_mount(self) -> None:
        self.set_class(self.app.size.width >= 120, "-wide")

    def action_scroll_down(self) -> None:
        self.query_one(VerticalScroll).scroll_down()

    def action_scroll_up(self) -> None:
        self.query_one(VerticalScroll).scroll_up()
