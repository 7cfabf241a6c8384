"""The dashboard's replica tools against a real backend: `!` asks for a command and
shows the folded result of every ready replica; `N` (nvidia-smi side by side) is a
use of it and opens the same folded report with `f`."""

from __future__ import annotations

import pytest
from textual.widgets import Input, OptionList, Static

from ecocore.wire import ClusterOut
from ecotui.client.rest import EcoClient
from ecotui.screens.gpu_compare import GpuCompareScreen, open_gpu_compare
from ecotui.screens.run_everywhere import CommandPrompt, RunScreen, open_run_everywhere
from support.shell_helpers import HostApp, launch, wait_until
from support.wire import cluster_out


@pytest.fixture
def cluster(fresh_api):
    return launch(fresh_api, "box", replicas=3)


@pytest.fixture
def client(shared_ecolink_server, fresh_api):
    return EcoClient(shared_ecolink_server.url, fresh_api.account_key)


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_bang_asks_and_shows_the_folded_result(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run_everywhere(app, cluster)
        await pilot.pause()
        assert isinstance(app.screen, CommandPrompt)
        app.screen.query_one(
            Input
        ).value = "sh -c 'echo same; [ $ECO_REPLICA_INDEX = 2 ] && echo odd && exit 5; true'"
        await pilot.press("enter")
        await wait_until(lambda: isinstance(app.screen, RunScreen), 10, "the run panel")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_until(lambda: bool(screen.report), 30, "the folded report")
        await pilot.pause()
        report = _text(screen, "#run-report")
        assert report.startswith("=== box-0,1 (2 replicas) · exit 0\nsame\n")
        assert "=== box-2 (1 replica) · exit 5 · differs from the majority" in report
        assert "+odd" in report
        assert "exit 5: box-2 (1 replica)" in report
        assert "2 of 3 replicas exited 0" in _text(screen, "#run-title")
        # ! again: another command on the same cluster
        await pilot.press("exclamation_mark")
        await pilot.pause()
        assert isinstance(app.screen, CommandPrompt)
        app.screen.query_one(Input).value = "printenv ECO_CLUSTER_NAME"
        await pilot.press("enter")
        await wait_until(
            lambda: (
                "box (3 replicas)" not in screen.report
                and screen.report.startswith("=== box-0..2 (3 replicas) · exit 0\nbox")
            ),
            30,
            "the second report",
        )


async def test_bang_refuses_an_empty_or_unreadable_command(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_run_everywhere(app, cluster)
        await pilot.pause()
        prompt = app.screen
        assert isinstance(prompt, CommandPrompt)
        prompt.query_one(Input).value = "echo 'unclosed"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is prompt
        assert "cannot read the command" in _text(prompt, ".error")
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CommandPrompt | RunScreen)


async def test_nvidia_smi_view_is_a_use_of_run(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await open_gpu_compare(app, cluster)
        assert isinstance(app.screen, GpuCompareScreen)
        await wait_until(lambda: screen.done.is_set(), 60, "nvidia-smi in every replica")
        await pilot.pause()
        assert [o.name for o in screen.outcomes] == ["box-0", "box-1", "box-2"]
        title = _text(screen, "#gpu-title")
        assert title.endswith(screen.agreement()) and "replicas" in title
        await pilot.press("f")
        await wait_until(lambda: isinstance(app.screen, RunScreen), 10, "the folded report")
        folded = app.screen
        assert isinstance(folded, RunScreen) and folded.command == ["nvidia-smi"]
        await wait_until(lambda: bool(folded.report), 60, "the folded report")
        assert "(3 replicas)" in folded.report


# -- the shells screen: recording and the reservation clock -----------------------------------


def test_clock_words_and_levels():
    from datetime import UTC, datetime, timedelta

    from ecotui.screens.shell_tools import clock

    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def at(minutes: float, status: str = "running") -> ClusterOut:
        c = cluster_out(
            status=status,
            expires_at=(now + timedelta(minutes=minutes)).isoformat(),
            burn_rate="12.500000",
        )
        return c.model_copy(update={"cost": c.cost.model_copy(update={"spent": "3.250000"})})

    words, level = clock(at(90), now)
    assert (words, level) == ("1h 30m left · $12.50/h · $3.25 spent", "ok")
    assert clock(at(30.5), now)[1] == "ok"
    assert clock(at(29), now)[1] == "amber"
    assert clock(at(5.5), now)[1] == "amber"
    assert clock(at(4), now)[1] == "red"
    assert clock(at(10, "terminated"), now) == (
        "terminated",
        "none",
    )
    assert clock(None, now) == ("", "none")


async def test_record_toggle_clock_on_the_tab_and_extend(client, fresh_api, monkeypatch, tmp_path):
    import asyncio
    import sys

    from textual.widgets import Tab, Tabs

    from ecotui.dialogs.extend import ExtendDialog
    from ecotui.screens.shells import open_shell
    from ecotui.tools.asciicast import list_recordings
    from support.shell_helpers import ready_shell, shells, shows, type_line

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    c = launch(fresh_api, "rec", replicas=2)
    app = HostApp(client)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_shell(app, c, "rec-1", command=["sh"])
        assert pane is not None
        await ready_shell(pane)
        screen = shells(app)
        tab = screen.query_one("#shell-tabs", Tabs).query_one(f"#{pane.pane_id}", Tab)
        await wait_until(lambda: "left ·" in str(tab.label), 15, "the clock on the tab")
        assert "/h ·" in str(tab.label) and "spent" in str(tab.label)

        await pilot.press("ctrl+right_square_bracket")
        await pilot.press("r")
        await pilot.pause()
        assert pane.recorder is not None
        assert "● REC " in str(tab.label) and str(tab.label).startswith("› ")
        assert "● REC" in pane.header_text()
        await pilot.press("enter")  # back into the shell
        await type_line(pilot, "echo rec-$((2*3))")
        await wait_until(lambda: shows(pane.view, "rec-6"), 20, "the command's output")
        await pilot.press("ctrl+right_square_bracket")
        await pilot.press("r")
        await pilot.pause()
        assert pane.recorder is None and "● REC" not in str(tab.label)

        await pilot.press("e")
        await wait_until(lambda: isinstance(app.screen, ExtendDialog), 15, "the extend dialog")

    [cast] = list_recordings()
    assert cast.parent == tmp_path / "data" / "ecotui" / "recordings"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asciinema",
        "cat",
        str(cast),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert b"rec-6" in out


async def test_recordings_are_listed_and_played(client, monkeypatch, tmp_path):
    from ecotui.screens.recordings import RecordingsScreen, open_recordings
    from ecotui.tools.asciicast import CastWriter, recordings_dir
    from ecotui.widgets.terminal import TerminalView
    from support.shell_helpers import shows

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    ticks = iter([0.0, 0.1, 5.0, 5.1])
    w = CastWriter(recordings_dir() / "box-box-0-1.cast", 80, 24, clock=lambda: next(ticks))
    w.output(b"\x1b[1mhello\x1b[0m from a recording\r\n")
    w.output(b"second line after a long pause\r\n")
    w.close()
    (recordings_dir() / "broken.cast").write_text("not a cast\n")
    app = HostApp(client)
    async with app.run_test(size=(140, 30)) as pilot:
        screen = await open_recordings(app)
        await pilot.pause()
        assert isinstance(app.screen, RecordingsScreen)
        assert sorted(p.name for p in screen.files) == ["box-box-0-1.cast", "broken.cast"]
        screen.query_one(OptionList).highlighted = [p.name for p in screen.files].index(
            "box-box-0-1.cast"
        )
        await pilot.press("plus")
        assert screen.speed == 2.0
        await pilot.press("enter")
        view = screen.query_one(TerminalView)
        # the 4.9 s pause is cut to 2 s, at 2x: about 1 s
        await wait_until(lambda: screen.finished.is_set(), 15, "the replay")
        assert shows(view, "hello from a recording")
        assert shows(view, "second line after a long pause")
        screen.query_one(OptionList).highlighted = [p.name for p in screen.files].index(
            "broken.cast"
        )
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert any("Cannot play broken.cast" in n.message for n in app._notifications)
