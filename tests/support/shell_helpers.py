"""Helpers for the shell tests: a host app with a REST client, clusters, waiting on screens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from textual.app import App, ComposeResult
from textual.widgets import Static

from ecocore.clock import SystemClock
from ecotui.client.rest import EcoClient
from ecotui.screens.shells import ShellPane, ShellsScreen
from ecotui.widgets.terminal import TerminalView

# A prompt that is easy to find and the same in every replica.
PROMPT = "PROMPT> "


class HostApp(App[None]):
    """The smallest app the shells screens need (`ecotui.host.DialogHost`): a
    `client`, and the clock and zone the extend dialog shows times with."""

    def __init__(self, client: EcoClient) -> None:
        super().__init__()
        self.client = client
        self.clock = SystemClock()
        self.tz = None  # the machine's local zone
        self.copied: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("dashboard")

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)
        super().copy_to_clipboard(text)


def launch(api: httpx.Client, name: str, replicas: int = 2) -> dict[str, Any]:
    body = {
        "name": name,
        "region": "us-east",
        "gpu_type": "H100-80GB",
        "gpu_count": 1,
        "replicas": replicas,
        "image": "example/app:1",
        "estimated_duration_hours": 1,
        "startup_command": "sleep infinity",
    }
    r = api.post("/gpu-clusters", json=body)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        c = api.get(f"/gpu-clusters/{cid}").json()
        states = c["replica_states"]
        if c["status"] == "running" and len(states) == replicas and all(s["ready"] for s in states):
            return c
        time.sleep(0.05)
    raise AssertionError(f"cluster {name} never got {replicas} ready replicas")


async def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def screen_of(view: TerminalView) -> list[str]:
    return view.term.display()


def shows(view: TerminalView, text: str) -> bool:
    return any(text in row for row in screen_of(view))


def on_prompt(view: TerminalView) -> bool:
    """The cursor row holds only the prompt: the shell waits for a command."""
    t = view.term
    return t.display()[t.y].rstrip() == PROMPT.rstrip()


async def ready_shell(pane: ShellPane) -> None:
    """Wait for the shell, then give it the test prompt."""
    await wait_until(lambda: pane.state == "live", 20, "the session to attach")
    await wait_until(
        lambda: pane.view.term.display() != [""] * pane.view.term.rows, 20, "the first prompt"
    )
    pane.view.deliver(f"export PS1='{PROMPT}'; clear\r".encode())
    await wait_until(lambda: on_prompt(pane.view), 20, "the test prompt")


async def type_line(pilot: Any, text: str) -> None:
    """Type a command through Textual's key handling, as a person would."""
    keys = []
    for ch in text:
        keys.append(
            {
                " ": "space",
                "|": "vertical_line",
                ">": "greater_than_sign",
                "$": "dollar_sign",
                "'": "apostrophe",
                ";": "semicolon",
                "=": "equals_sign",
                "(": "left_parenthesis",
                ")": "right_parenthesis",
                "*": "asterisk",
                "/": "slash",
                "-": "minus",
                ".": "full_stop",
                "\\": "backslash",
                '"': "quotation_mark",
                "&": "ampersand",
                "_": "underscore",
                ":": "colon",
                ",": "comma",
            }.get(ch, ch)
        )
    await pilot.press(*keys, "enter")


def shells(app: App[Any]) -> ShellsScreen:
    screen = app.get_screen("shells")
    assert isinstance(screen, ShellsScreen)
    return screen
