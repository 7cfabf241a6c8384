"""Monochrome snapshots (NO_COLOR=1) at 80x24: focus, the cursor row, checkboxes and
radio buttons must read without colour (glyphs and text styles, not hues).

Update after an intended change: pytest tests/snapshots/test_monochrome.py --snapshot-update
"""

from __future__ import annotations

from typing import Any

import pytest
from test_dashboard_snapshots import app_with_history, settle
from test_dialogs import Host, cluster
from test_dialogs import settle as settle_dialog
from textual.pilot import Pilot

from ecotui import dialogs
from tui.helpers import screen_text, wait_for, wait_for_text


@pytest.fixture(autouse=True)
def no_color(monkeypatch: Any) -> None:
    monkeypatch.setenv("NO_COLOR", "1")


def test_clusters_view(snap_compare):
    fx = app_with_history()
    assert fx.app.no_color

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("j", "j")
        await settle(pilot)
        assert "›clip-serve" in screen_text(fx.app)  # the cursor row, in plain text

    assert snap_compare(fx.app, terminal_size=(80, 24), run_before=run_before)


def test_cluster_view(snap_compare):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00007")
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False))
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=(80, 24), run_before=run_before)


def test_launch_form(snap_compare):
    async def run_before(pilot: Any) -> None:
        await settle_dialog(pilot)
        pilot.app.dialog.query_one("#expose").toggle()
        await pilot.press("tab")
        await settle_dialog(pilot)
        text = screen_text(pilot.app)
        assert "› Region" in text and "[x] on: expose" in text and "[ ] weights" in text

    host = Host(dialogs.open_launch)
    assert host.no_color
    assert snap_compare(host, terminal_size=(80, 24), run_before=run_before)


def test_restart_dialog(snap_compare):
    async def run_before(pilot: Any) -> None:
        await settle_dialog(pilot)
        text = screen_text(pilot.app)
        assert "(•) Only replica web-1" in text and "( ) The whole cluster" in text

    assert snap_compare(Host(lambda app: dialogs.open_restart(app, cluster(), "web-1")),
                        terminal_size=(80, 24), run_before=run_before)
