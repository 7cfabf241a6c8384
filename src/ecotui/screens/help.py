"""The help screen: every key of the dashboard's key map, by where it works."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from ecotui.keymap import SCOPES, TERMINAL_NOTE, key_label
from ecotui.screens.command_line import commands_for


def help_tables() -> list[Group]:
    tables = []
    for scope, bindings in SCOPES:
        table = Table(show_header=False, box=None, padding=(0, 2), expand=False)
        table.add_column("key", style="bold", no_wrap=True, min_width=10)
        table.add_column("does")
        by_action: dict[str, list[Binding]] = {}
        for b in bindings:
            by_action.setdefault(b.description, []).append(b)
        for desc, bs in by_action.items():
            table.add_row(" ".join(key_label(b) for b in bs), desc)
        # The heading is its own line (a table title would wrap and be cut off).
        tables.append(Group(Text(scope, style="bold"), table))
    return tables


def command_line_summary(app: object) -> str:
    cmds = {c.name: c for c in commands_for(app).values()}
    return "  ".join(f":{' '.join([c.name, *(a.upper() for a in c.args)])}" for c in cmds.values())


class HelpScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "close", key_display="esc"),
        Binding("question_mark", "app.pop_screen", "close", key_display="?"),
        Binding("q", "app.quit", "quit"),
        Binding("j,down", "scroll_down", "down", show=False),
        Binding("k,up", "scroll_up", "up", show=False),
    ]

    DEFAULT_CSS = """
    HelpScreen { background: $surface; }
    HelpScreen #help-title { height: 1; background: $panel; text-style: bold; padding: 0 1; }
    HelpScreen VerticalScroll { padding: 1 2; }
    HelpScreen #help-keys { width: 1fr; height: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Static(
            "ecotui help · esc or ? closes · every key below is also in the command "
            "palette (ctrl+p)",
            id="help-title",
        )
        with VerticalScroll():
            yield Static(id="help-keys")

    def on_mount(self) -> None:
        self._render_keys()

    def on_resize(self) -> None:
        self._render_keys()

    def _render_keys(self) -> None:
        sections = help_tables()
        columns = 2 if self.app.size.width >= 120 else 1
        grid = Table.grid(padding=(0, 6))
        for _ in range(columns):
            grid.add_column()
        for i in range(0, len(sections), columns):
            row: list[RenderableType] = list(sections[i : i + columns])
            row += [Text("")] * (columns - len(row))
            grid.add_row(*row)
            grid.add_row(*([Text("")] * columns))
        note = Text(
            TERMINAL_NOTE + "\nStatus is always in words and symbols: "
            "● running  ◌ pending  ◑ stopping/terminating  ○ stopped  · terminated  "
            "✖ failed  ~ stale (runtime unreachable)  ✖/▲ alert  ✓ ready  ✗ not ready"
            "\nTimes are local times. NO_COLOR is respected."
            "\nCommand line (:, tab completes): " + command_line_summary(self.app)
        )
        # The notes come first: they hold the one key that leaves a shell, which
        # must be readable without scrolling.
        self.query_one("#help-keys", Static).update(Group(note, Text(""), grid))

    def action_scroll_down(self) -> None:
        self.query_one(VerticalScroll).scroll_down()

    def action_scroll_up(self) -> None:
        self.query_one(VerticalScroll).scroll_up()
