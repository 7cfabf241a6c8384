"""Keys that arrive in one read (a paste, SSH coalescing `BackSpace 5`) are all
applied, in order, in the shell picker's command field and in the `:` command line."""

from __future__ import annotations

from typing import Any

from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Input, Static

from ecotui.screens.shells import ShellPicker
from support.tui_helpers import fixed_app, wait_for, wait_for_text

SMALL = (80, 24)


def burst(app: App[Any], *keys: str) -> None:
    """Queue every key before any is handled, as one read from the terminal does."""
    for key in keys:
        app.post_message(events.Key(key, key if len(key) == 1 else None))


class NoSessions:
    async def sessions(self, cluster_id: str) -> list[dict[str, Any]]:
        return []


class PickerHost(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("dashboard")

    def on_mount(self) -> None:
        cluster = {
            "id": "gc_1",
            "name": "web",
            "replica_states": [{"name": "web-0", "ready": True}],
        }
        self.push_screen(ShellPicker(NoSessions(), [cluster]))  # type: ignore[arg-type]


async def test_the_shell_pickers_command_field_keeps_a_digit_typed_after_backspace():
    app = PickerHost()
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ShellPicker))
        box = app.screen.query_one("#command", Input)
        await wait_for(pilot, lambda: box.has_focus)
        await pilot.press(*"top -d 1")
        assert box.value == "top -d 1"
        burst(app, "backspace", "5")
        await pilot.pause(0.1)
        assert box.value == "top -d 5"
        burst(app, "left", "backspace", "backspace", "9")
        await pilot.pause(0.1)
        assert box.value == "top -95"  # the space and the d went, 9 before the 5


async def test_the_command_line_keeps_a_digit_typed_after_backspace():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("colon", *"logs web web-1")
        box = fx.app.screen.query_one("#cmd-input", Input)
        assert box.value == "logs web web-1"
        burst(fx.app, "backspace", "7")
        await pilot.pause(0.1)
        assert box.value == "logs web web-7"
