"""How screens reach the app: the host protocol and the navigation messages."""

from __future__ import annotations

from ecotui.host import DialogHost, EcoHost, OpenCluster, OpenLogs, OpenView
from ecotui.screens.account import AccountScreen
from ecotui.screens.cluster import ClusterScreen
from ecotui.screens.gpus import GpusScreen
from ecotui.screens.help import HelpScreen
from ecotui.screens.logs import LogsScreen
from ecotui.widgets.fleet_table import FleetTable
from support.tui_helpers import fixed_app, wait_for, wait_for_text

BIG = (160, 48)


async def test_the_app_is_the_host_its_screens_and_dialogs_expect():
    fx = fixed_app()
    assert isinstance(fx.app, EcoHost)
    assert isinstance(fx.app, DialogHost)
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        assert fx.app.screen.eco is fx.app
        assert fx.app.screen.eco.model.clusters


async def test_navigation_messages_open_their_views():
    fx = fixed_app()
    cid = next(c["id"] for c in fx.fleet.clusters.values() if c["name"] == "tts-serve")
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        fx.app.screen.post_message(OpenCluster(cid))
        await wait_for(pilot, lambda: isinstance(fx.app.screen, ClusterScreen), what="cluster")
        assert fx.app.screen.cluster_id == cid
        fx.app.screen.post_message(OpenLogs(cid, "tts-serve-1"))
        await wait_for(pilot, lambda: isinstance(fx.app.screen, LogsScreen), what="logs")
        assert (fx.app.screen.cluster_id, fx.app.screen.replica) == (cid, "tts-serve-1")
        for view, kind in (("help", HelpScreen), ("account", AccountScreen), ("gpus", GpusScreen)):
            fx.app.screen.post_message(OpenView(view))
            await wait_for(pilot, lambda kind=kind: isinstance(fx.app.screen, kind), what=view)
            depth = len(fx.app.screen_stack)
            fx.app.post_message(OpenView(view))  # already on top: not pushed twice
            await pilot.pause(0.05)
            assert len(fx.app.screen_stack) == depth


async def test_a_double_click_on_a_row_opens_that_cluster_and_a_header_click_sorts():
    fx = fixed_app()
    seen: list[FleetTable.Selected | FleetTable.HeaderClicked] = []

    def hook(message: object) -> None:
        if isinstance(message, (FleetTable.Selected, FleetTable.HeaderClicked)):
            seen.append(message)

    async with fx.app.run_test(size=BIG, message_hook=hook) as pilot:
        await wait_for_text(pilot, "12 clusters")
        table = fx.app.screen.query_one("#fleet", FleetTable)
        await pilot.click("#fleet", offset=(2, 0))  # the first column's header
        await wait_for(pilot, lambda: table.sort_column is not None, what="sorted")
        await pilot.double_click("#fleet", offset=(2, 2))  # the second row
        await wait_for(pilot, lambda: isinstance(fx.app.screen, ClusterScreen), what="cluster")
        # The hook sees a message at each node it bubbles through: the same object.
        header, selected = {id(m): m for m in seen}.values()
        assert isinstance(header, FleetTable.HeaderClicked) and header.control is table
        assert header.column == table.sort_column
        assert isinstance(selected, FleetTable.Selected) and selected.control is table
        assert fx.app.screen.cluster_id == selected.key


async def test_the_shells_keys_open_the_shells_view_loaded_on_first_use():
    from ecotui.screens.shells import ShellPicker, ShellsScreen

    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        # S: the shells view; with no shell open yet, the picker over it.
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, ShellPicker), what="picker")
        assert isinstance(fx.app.screen_stack[-2], ShellsScreen)
        assert fx.app.screen.query_one("#cluster").value == fx.app.screen.cluster_id


async def test_s_opens_a_shell_in_the_selected_replica_through_the_app():
    from ecotui.screens.shells import ShellsScreen

    fx = fixed_app()
    cid = next(c["id"] for c in fx.fleet.clusters.values() if c["name"] == "tts-serve")
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster(cid)
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False), what="history")
        replica = fx.app.screen.current_replica()
        assert replica is not None
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, ShellsScreen), what="shells")
        (pane,) = fx.app.screen.panes.values()
        assert (pane.cluster_id, pane.replica) == (cid, replica)
        # The pane has the cluster as the REST client reads it: its reservation clock.
        assert pane.cluster_info is not None and pane.cluster_info.id == cid
