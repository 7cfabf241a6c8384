"""The recordings kept under the user's data directory, and playing one back
(`P` in the shells view). Plays in the dashboard's own terminal widget at the
recorded pace (`+`/`-` change the speed; pauses longer than 2 s are cut)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ecotui.keymap import RECORDINGS_VIEW
from ecotui.tools.asciicast import CastError, list_recordings, read_cast, schedule
from ecotui.widgets.controls import EcoOptionList
from ecotui.widgets.keybar import KeyBar
from ecotui.widgets.terminal import TerminalView

IDLE_LIMIT_S = 2.0


class RecordingsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [*RECORDINGS_VIEW]
    DEFAULT_CSS = """
    RecordingsScreen #rec-title { height: 1; background: $panel; padding: 0 1; }
    RecordingsScreen #rec-body { height: 1fr; }
    RecordingsScreen #rec-list { width: 48; height: 1fr; }
    RecordingsScreen TerminalView { width: 1fr; height: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.files: list[Path] = []
        self.speed = 1.0
        self.playing: Path | None = None
        self.finished = asyncio.Event()

    def compose(self) -> ComposeResult:
        yield Static("", id="rec-title")
        with Horizontal(id="rec-body"):
            yield EcoOptionList(id="rec-list")
            yield TerminalView(scrollback=2000)
        yield KeyBar()

    def on_mount(self) -> None:
        self.action_reload()
        self.query_one(OptionList).focus()

    def _title(self) -> None:
        what = f"playing {self.playing.name}" if self.playing else "choose one and press enter"
        self.query_one("#rec-title", Static).update(
            Text(f"recordings · {what} · speed {self.speed:g}x", no_wrap=True)
        )

    def action_reload(self) -> None:
        self.files = list_recordings()
        ol = self.query_one(OptionList)
        ol.clear_options()
        if not self.files:
            ol.add_option(
                Option("No recordings yet: r in the shells view records one.", disabled=True)
            )
        for p in self.files:
            ol.add_option(Option(f"{p.name}\n  {p.stat().st_size:,} bytes", id=str(p)))
        if self.files:
            ol.highlighted = 0
        self._title()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.play(Path(event.option.id))

    def action_play(self) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is not None and self.files:
            self.play(self.files[ol.highlighted])

    def action_faster(self) -> None:
        self.speed = min(16.0, self.speed * 2)
        self._title()

    def action_slower(self) -> None:
        self.speed = max(0.25, self.speed / 2)
        self._title()

    @work(group="replay", exclusive=True, exit_on_error=False)
    async def play(self, path: Path) -> None:
        self.finished.clear()
        view = self.query_one(TerminalView)
        try:
            cast = read_cast(path)
        except (CastError, OSError) as exc:
            self.notify(f"Cannot play {path.name}: {exc}", severity="error")
            return
        self.playing = path
        self._title()
        view.reset_terminal()
        for delay, kind, data in schedule(cast.events, idle_limit=IDLE_LIMIT_S):
            if delay > 0:
                await asyncio.sleep(delay / self.speed)
            if kind == "o":
                view.feed(data.encode("utf-8"))
        self.playing = None
        self._title()
        self.finished.set()


async def open_recordings(app: App[Any]) -> RecordingsScreen:
    screen = RecordingsScreen()
    await app.push_screen(screen)
    return screen
