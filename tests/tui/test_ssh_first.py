"""The dashboard over SSH at 80×24: the UX review's findings on views, the `:`
command line, `/` everywhere, `esc` one level back, and backend text that is
shown, never obeyed (control characters, Rich markup)."""

from __future__ import annotations

import copy
import re

from ecotui.screens.clusters import ClustersScreen
from ecotui.screens.command_line import commands_for, completions
from ecotui.screens.gpus import GpusScreen
from ecotui.screens.logs import LogsScreen
from ecotui.testing import ReplayFrameSource
from ecotui.widgets.keybar import KeyBar
from ecotui.widgets.replicas_table import ReplicasTable
from support.tui_helpers import fixed_app, screen_text, wait_for, wait_for_text

SMALL = (80, 24)
WIDE = (200, 50)
OSC52 = "\x1b]52;c;aGVsbG8=\x07"


def cid_of(fx, name: str) -> str:
    return next(c["id"] for c in fx.fleet.clusters.values() if c["name"] == name)


async def open_cluster(pilot, fx, name: str) -> None:
    fx.app.open_cluster(cid_of(fx, name))
    await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False), what="history")
    await pilot.pause(0.1)


def footer_rows(app) -> int:
    return app.screen.query_one(KeyBar).region.height


async def test_empty_view_says_how_to_launch_and_the_footer_takes_two_rows():
    fx = fixed_app(0)
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "press n to launch the first one")
        assert footer_rows(fx.app) <= 2
        assert "? all keys" in screen_text(fx.app)


async def test_a_backend_slow_to_start_shows_a_spinner_and_what_it_waits_for():
    fx = fixed_app(3)
    fx.app.feed = ReplayFrameSource([])  # the backend has not answered yet
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "waiting for the backend's first snapshot")
        first = next(ln for ln in screen_text(fx.app).splitlines() if "waiting for" in ln)
        await pilot.pause(0.6)
        second = next(ln for ln in screen_text(fx.app).splitlines() if "waiting for" in ln)
        assert first != second  # the spinner turns
        assert "fixed.invalid" in first


async def test_every_view_keeps_the_footer_to_two_rows_at_80x24():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        assert footer_rows(fx.app) <= 2
        await open_cluster(pilot, fx, "vision-serve")
        assert footer_rows(fx.app) <= 2
        await pilot.press("l")
        await wait_for_text(pilot, "logs of")
        assert footer_rows(fx.app) <= 2
        await pilot.press("escape", "escape", "a")
        await wait_for_text(pilot, "entries")
        assert footer_rows(fx.app) <= 2


async def test_cluster_view_at_80x24_header_table_and_panels():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "vision-serve")
        lines = screen_text(fx.app).splitlines()
        header = next(ln for ln in lines if ln.strip().startswith("vision-serve ●"))
        for part in ("running", "left", "burn $160.00/h", "spent $"):
            assert part in header, (part, header)
        table = fx.app.screen.query_one(ReplicasTable)
        assert not table.show_horizontal_scrollbar
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert not fx.app.screen.query_one("#body").show_vertical_scrollbar
        # GPU panel: whole replica names under a "replica" heading
        assert any(ln.startswith("│vision-serve-0     0") for ln in lines), lines
        assert "┏━ Replicas" in screen_text(fx.app)  # the focused panel, without colour
        await pilot.press("2")
        await wait_for_text(pilot, "hourly rate")
        await pilot.press("3")
        await wait_for_text(pilot, "exited with code 1")
        assert "┏━ 3 Events" in screen_text(fx.app) and "┏━ Replicas" not in screen_text(fx.app)
        await pilot.press("1")
        await wait_for_text(pilot, "telemetry: simulated")


async def test_gpu_window_says_only_as_much_history_as_there_is():
    fx = fixed_app()
    async with fx.app.run_test(size=WIDE) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "vision-serve")
        text = screen_text(fx.app)
        m = re.search(r"utilisation, last (\d+)m (\d+)s", text)
        assert m, text
        assert int(m.group(1)) * 60 + int(m.group(2)) <= 10 * 60 + 5  # the history served


async def test_a_manual_restart_shows_in_the_replica_row():
    fx = fixed_app()
    cid = cid_of(fx, "vision-serve")
    fx.fleet._events[cid].append(
        {
            "at": "2026-03-02T13:59:00Z",
            "kind": "restarted",
            "message": "replica vision-serve-3 restarted",
            "replica": "vision-serve-3",
        }
    )
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "vision-serve")
        row = next(ln for ln in screen_text(fx.app).splitlines() if "vision-serve-3 " in ln)
        assert "↻ restarted 13:59" in row, row


async def test_slash_filters_replicas_and_events_and_esc_goes_back_one_level():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "vision-serve")
        await pilot.press("slash", *"serve-1")
        await pilot.pause(0.2)
        table = fx.app.screen.query_one(ReplicasTable)
        assert table.row_count == 1 and table.selected_replica == "vision-serve-1"
        await pilot.press("enter", "3")
        await wait_for_text(pilot, "exited with code 1")
        assert "vision-serve-4 is ready" not in screen_text(fx.app)
        await pilot.press("escape")  # clears the filter, stays
        await pilot.pause(0.2)
        assert table.row_count == 8 and fx.app.screen.cluster_id == cid_of(fx, "vision-serve")
        await pilot.press("escape")  # back to the clusters
        await wait_for(pilot, lambda: isinstance(fx.app.screen, ClustersScreen))


async def test_command_line_completes_and_jumps():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("colon", "c", "l", "u", "tab")
        box = fx.app.screen.query_one("#cmd-input")
        assert box.value == "cluster" or box.value == "cluster "
        await pilot.press(*"vis", "tab")
        await pilot.pause(0.1)
        assert box.value == "cluster vision-serve "
        await pilot.press("enter")
        await wait_for_text(pilot, "vision-serve ●")
        assert fx.app.screen.cluster_id == cid_of(fx, "vision-serve")
        await pilot.press("colon", *"logs vision-serve vision-serve-1", "enter")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, LogsScreen))
        assert fx.app.screen.replica == "vision-serve-1"
        await pilot.press("colon", *"clusters", "enter")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, ClustersScreen))
        await pilot.press("colon", *"nosuch", "enter")
        await pilot.pause(0.1)
        assert any("no command :nosuch" in str(n.message) for n in fx.app._notifications)
        await pilot.press("colon", "l")
        await pilot.pause(0.1)
        assert "ledger" in screen_text(fx.app) and "logs" in screen_text(fx.app)
        await pilot.press("escape")  # closes the command line only
        await pilot.pause(0.1)
        assert isinstance(fx.app.screen, ClustersScreen)
        assert not fx.app.screen.query_one("CommandLine").has_class("-shown")
        await pilot.press("colon", "q", "enter")
        await pilot.pause(0.2)
    assert fx.app.return_code == 0


async def test_command_line_gpus_opens_the_fleet_gpu_view():
    fx = fixed_app()
    assert "gpus" in commands_for(fx.app)
    assert completions(fx.app, "gp") == ("", ["gpus"])
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("colon", *"gpus", "enter")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, GpusScreen))


async def test_logs_say_their_run_once_and_switch_replica_with_brackets():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "vision-serve")
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, LogsScreen))
        first = fx.app.screen.replica
        await pilot.press("v")
        await wait_for_text(pilot, "previous run · ")
        assert "previous run · previous run" not in screen_text(fx.app)
        await pilot.press("right_square_bracket")
        await pilot.pause(0.2)
        assert fx.app.screen.replica != first
        assert f"{fx.app.screen.replica} · previous run" in screen_text(fx.app)


async def test_ledger_reads_as_money_available_and_empty_ended_panel_is_hidden():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("a")
        await wait_for_text(pilot, "28 entries")
        text = screen_text(fx.app)
        hold = next(ln for ln in text.splitlines() if " hold " in ln)
        assert "-$" in hold and "+$" not in hold, hold
        ledger = fx.app.screen.query_one("#ledger")
        assert not ledger.show_horizontal_scrollbar
        fx.app.model.terminated_costs = lambda: []  # type: ignore[method-assign]
        fx.app.screen._ended()
        await pilot.pause(0.1)
        assert "Ended clusters" not in screen_text(fx.app)


async def test_palette_icon_sits_beside_the_query_at_80x24():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("ctrl+p", *"scale")
        await pilot.pause(0.3)
        line = next(ln for ln in screen_text(fx.app).splitlines() if "scale" in ln)
        assert "›" in line.split("scale")[0], line


async def test_backend_text_is_shown_not_obeyed():
    fx = fixed_app()
    cid = cid_of(fx, "vision-serve")
    evil = f"{OSC52}[bold]boom[/bold]"
    c = copy.deepcopy(fx.fleet.clusters[cid])
    c["startup_command"] = f"echo {evil}"
    # The image is free text to the dashboard (the status reason is one of api.md's
    # words: a frame with another is refused before anything shows it).
    c["image"] = f"img{evil}"
    fx.fleet._events[cid].append(
        {
            "at": "2026-03-02T13:59:30Z",
            "kind": "replica_crashed",
            "message": f"crashed: {evil}",
            "replica": None,
        }
    )
    async with fx.app.run_test(size=WIDE) as pilot:
        await wait_for_text(pilot, "12 clusters")
        fx.source.push({"type": "cluster", "cluster": c})
        await open_cluster(pilot, fx, "vision-serve")
        await pilot.press("3")
        await pilot.pause(0.2)
        text = screen_text(fx.app)
        shown = "␛]52;c;aGVsbG8=␇[bold]boom[/bold]"
        assert f"command echo {shown}" in text
        assert (
            any(f"{edge}{shown}" in text for edge in "│┃") or f"crashed: {shown}" in text
        )  # event
        assert f"image img{shown}" in text
        assert "\x1b" not in text and "\x07" not in text
