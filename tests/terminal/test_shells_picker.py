"""The shell picker at 80x24, one tab per session, broadcast once per session, and the
split view's divider, through the shells screen and a real backend."""

from __future__ import annotations

import pytest
from textual.widgets import Button, OptionList, Select

from ecotui.client.rest import EcoClient
from ecotui.screens.shells import ShellPane, ShellPicker, open_shell
from support.shell_helpers import HostApp, launch, ready_shell, shells, shows, type_line, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(fresh_api):
    return launch(fresh_api, "pick", replicas=3)


@pytest.fixture
def client(shared_ecolink_server, fresh_api):
    return EcoClient(shared_ecolink_server.url, fresh_api.account_key)


async def _picker(app, pilot) -> ShellPicker:
    await pilot.press("o")
    await wait_until(lambda: isinstance(app.screen, ShellPicker), what="the picker")
    return app.screen


async def test_the_picker_fits_80x24_and_enter_opens_the_highlighted_session(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(80, 24)) as pilot:
        first = await open_shell(app, cluster, "pick-1", command=["sh"])
        await ready_shell(first)
        await type_line(pilot, "echo in-first")
        await pilot.press("ctrl+right_square_bracket")
        picker = await _picker(app, pilot)
        sessions = picker.query_one("#sessions", OptionList)
        await wait_until(lambda: sessions.option_count == 1, what="the running session listed")
        await pilot.pause(0.2)
        # Everything is on the 80x24 screen: the list and both buttons.
        for widget in (
            sessions,
            picker.query_one("#open", Button),
            picker.query_one("#cancel", Button),
        ):
            r = widget.region
            assert r.height >= 1 and r.y >= 0 and r.bottom <= 24 and r.right <= 80, widget
        # No blank "Select" entry among the replicas; the list starts highlighted.
        replica = picker.query_one("#replica", Select)
        assert [str(v) for _, v in replica._options] == ["pick-0", "pick-1", "pick-2"]
        assert sessions.highlighted == 0
        assert "open in a tab" in str(sessions.get_option_at_index(0).prompt)
        # Tab to the list, Enter: the highlighted session, already in a tab: focused there.
        sessions.focus()
        await pilot.press("enter")
        screen = shells(app)
        await wait_until(
            lambda: not isinstance(app.screen, ShellPicker), what="the picker to close"
        )
        await pilot.pause(0.3)
        assert list(screen.panes.values()) == [first] and screen.active_pane is first
        assert first.view.has_focus


async def test_enter_in_the_command_field_opens_a_new_shell_on_the_chosen_replica(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_shell(app, cluster, "pick-0", command=["sh"])
        await pilot.press("ctrl+right_square_bracket")
        picker = await _picker(app, pilot)
        picker.query_one("#replica", Select).value = "pick-2"
        await type_line(pilot, "sh")  # the command field has focus; Enter opens
        screen = shells(app)
        await wait_until(lambda: len(screen.panes) == 2, what="a second tab")
        new = screen.active_pane
        assert new.replica == "pick-2" and new.command == "sh"


async def test_broadcast_reaches_each_session_once_and_says_what_it_opened(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(140, 30)) as pilot:
        first = await open_shell(app, cluster, "pick-0", command=["sh"])
        await ready_shell(first)
        screen = shells(app)
        # A second tab on the same session (as an older version could make).
        twin = ShellPane(client, cluster, "pick-0", command=["sh"], sid=first.sid)
        await screen.add_pane(twin, focus=False)
        await wait_until(lambda: twin.state == "live", what="the twin attached")
        first.view.focus()
        await pilot.press("ctrl+right_square_bracket", "b")
        await wait_until(lambda: len(screen.panes) == 4, what="shells in pick-1 and pick-2")
        banner = str(screen.query_one("#broadcast-banner").render())
        assert "all 3 of its sessions" in banner and "opened new shells in pick-1, pick-2" in banner
        for p in screen.panes.values():
            await wait_until(lambda p=p: p.state == "live", what="every shell live")
        for p in screen.panes.values():
            if p.replica != "pick-0":
                await ready_shell(p)
        await pilot.press("enter")
        await type_line(pilot, "echo N$((1+1))-$ECO_REPLICA_NAME")
        await wait_until(lambda: shows(first.view, "N2-pick-0"), what="the line ran in pick-0")
        await pilot.pause(0.8)
        ran = sum(row.strip() == "N2-pick-0" for row in first.view.term.display())
        typed = sum("echo N$((1+1))" in row for row in first.view.term.display())
        assert (ran, typed) == (1, 1)  # once, not twice
        others = [p for p in screen.panes.values() if p.replica != "pick-0"]
        for p in others:
            await wait_until(lambda p=p: shows(p.view, f"N2-{p.replica}"), what="the line in each")


async def test_split_panes_have_a_divider(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(120, 30)) as pilot:
        a = await open_shell(app, cluster, "pick-0", command=["sh"])
        b = await open_shell(app, cluster, "pick-1", command=["sh"])
        screen = shells(app)
        screen.activate(a.pane_id)
        await pilot.press("ctrl+right_square_bracket", "v")
        await pilot.pause(0.3)
        assert screen.split and a.has_class("-visible") and b.has_class("-visible")
        assert b.has_class("-divider") and not a.has_class("-divider")
        assert b.styles.border_left[0] != "" and a.styles.border_left[0] == ""
        assert b.region.x >= a.region.right  # side by side, the divider between them
        await pilot.press("v")
        await pilot.pause(0.1)
        assert not b.has_class("-divider")
