"""The GPU health views on the fixed fleet: the health columns, the fleet GPU view
(sort, filter, restart from a failing row, open a GPU) and the alerts."""

from __future__ import annotations

from ecotui.gpu_health import replica_health
from ecotui.screens.gpu_detail import GpuDetailScreen
from ecotui.screens.gpus import GpusScreen
from support.tui_helpers import fixed_app, screen_text, wait_for, wait_for_text


async def open_gpus(pilot, fx):
    await wait_for_text(pilot, "12 clusters")
    await pilot.press("H")
    await wait_for(pilot, lambda: isinstance(fx.app.screen, GpusScreen) and fx.app.screen.loaded)
    await pilot.pause(0.1)
    return fx.app.screen


async def test_clusters_view_shows_health_of_each_cluster():
    fx = fixed_app(12)
    async with fx.app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "12 clusters")
        text = screen_text(fx.app)
        assert "health" in text
        # vision-serve has a GPU that fell off the bus; rerank-serve one thermally throttled.
        row = next(line for line in text.splitlines() if "vision-serve" in line)
        assert "✖ fail" in row
        row = next(line for line in text.splitlines() if "rerank-serve" in line)
        assert "▲ degr" in row
        row = next(line for line in text.splitlines() if "bert-serve" in line)
        assert "✓ ok" in row
        # A pending cluster has no GPU readings yet: no verdict, not "ok".
        row = next(line for line in text.splitlines() if "mistral-serve" in line)
        assert "✓" not in row and "unkn" not in row


async def test_failing_gpu_raises_an_alert_with_its_reason():
    fx = fixed_app(12)
    async with fx.app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "12 clusters")
        alerts = {a.kind: a for a in fx.app.model.cluster_alerts("gc_00007")}
        assert alerts["gpu_health"].level == "error"
        assert "XID 79" in alerts["gpu_health"].message
        degraded = {a.kind: a for a in fx.app.model.cluster_alerts("gc_00005")}
        assert degraded["gpu_health"].level == "warning"
        assert "thermal" in degraded["gpu_health"].message


async def test_fleet_view_lists_every_gpu_worst_first_and_sorts():
    fx = fixed_app(12)
    async with fx.app.run_test(size=(160, 48)) as pilot:
        screen = await open_gpus(pilot, fx)
        expected = len(fx.fleet.fleet_gpus()["gpus"])
        assert len(screen.gpus) == expected
        assert f"{expected} GPUs" in screen_text(fx.app)
        first = screen.gpus[screen.table.cursor_key]
        assert first["health"]["verdict"] == "failing"
        assert first["cluster"] == "vision-serve" and first["index"] == 3
        await pilot.press("o")  # utilisation, busiest first
        await pilot.pause(0.05)
        utils = [screen.gpus[k]["utilization"] for k in screen._order]
        assert utils == sorted(utils, reverse=True)
        await pilot.press("O")
        await pilot.pause(0.05)
        utils = [screen.gpus[k]["utilization"] for k in screen._order]
        assert utils == sorted(utils)
        await pilot.press("o", "o", "o")  # memory, temperature, idle cost
        await pilot.pause(0.05)
        assert screen.sort_column == "idle"
        idle = [screen.gpus[screen._order[0]]["idle_cost_per_hour"]]
        assert idle != ["0"], "the idle cluster's GPUs cost money while idle and sort first"


async def test_fleet_view_filters_with_slash():
    fx = fixed_app(12)
    async with fx.app.run_test(size=(160, 48)) as pilot:
        screen = await open_gpus(pilot, fx)
        await pilot.press("slash", *"degraded")
        await pilot.pause(0.1)
        assert len(screen._order) == 1
        assert "1 of" in screen_text(fx.app)
        assert "thermal" in screen_text(fx.app)
        await pilot.press("escape")
        await pilot.pause(0.05)
        assert len(screen._order) == len(screen.gpus)


async def test_restart_is_one_key_from_a_failing_gpu_row():
    fx = fixed_app(12)
    async with fx.app.run_test(size=(160, 48)) as pilot:
        screen = await open_gpus(pilot, fx)
        assert screen.current_gpu()["health"]["verdict"] == "failing"
        await pilot.press("R")
        await wait_for(pilot, lambda: type(fx.app.screen).__name__ == "RestartDialog")
        dialog = fx.app.screen
        assert dialog.replica == "vision-serve-0"
        assert dialog.title_text() == "Restart vision-serve-0?"


async def test_gpu_detail_shows_every_reading_and_unknowns():
    fx = fixed_app(12)
    async with fx.app.run_test(size=(120, 48)) as pilot:
        await open_gpus(pilot, fx)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, GpuDetailScreen))
        await wait_for_text(pilot, "verdict changes")
        text = screen_text(fx.app)
        for words in (
            "XID event",
            "79",
            "fallen off the bus",
            "ECC double-bit",
            "row remapping",
            "throttling",
            "PCIe",
            "NVLink",
            "MIG",
            "pid 4103 python",
        ):
            assert words in text, words
        screen = fx.app.screen
        # A source that gives nothing: every reading says unknown, none says 0.
        screen.gpu = {"index": 0, "health": {"verdict": "unknown", "reason": "no health readings"}}
        screen.render_gpu()
        await pilot.pause(0.05)
        text = screen_text(fx.app)
        assert "volatile unknown, aggregate unknown" in text
        assert "NVLink" in text and "processes" in text


def test_replica_health_is_the_worst_of_its_gpus():
    rep = {
        "gpus": [
            {"health": {"verdict": "ok"}},
            {"health": {"verdict": "degraded", "reason": "thermal"}},
            {"health": {"verdict": "ok"}},
        ]
    }
    assert replica_health(rep).level == "degraded"
    assert replica_health({"gpus": []}).level == "unknown"


async def test_cluster_view_opens_the_worst_gpu_of_the_replica():
    fx = fixed_app(12)
    async with fx.app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00007")
        await wait_for_text(pilot, "health")
        await wait_for_text(pilot, "✖ failing")
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(fx.app.screen, GpuDetailScreen))
        screen = fx.app.screen
        assert (screen.replica, screen.index) == ("vision-serve-0", 3)
        await wait_for_text(pilot, "fallen off the bus")


async def test_gpu_detail_reads_the_readings_the_feed_leaves_out():
    # The feed's replicas frames carry each GPU's verdict and reason only.
    fx = fixed_app(12)
    frame = fx.fleet.replicas_frame("gc_00007", 0.0)
    rep = next(r for r in frame["replicas"] if r["name"] == "vision-serve-0")
    g = next(x for x in rep["gpus"] if x["index"] == 3)
    assert set(g["health"]) == {"verdict", "reason"} and g["health"]["verdict"] == "failing"
    async with fx.app.run_test(size=(120, 48)) as pilot:
        await wait_for_text(pilot, "12 clusters")
        screen = GpuDetailScreen("gc_00007", "vision-serve-0", 3, initial=g, autoload=False)
        screen.readings_loaded = False
        fx.app.push_screen(screen)
        await wait_for_text(pilot, "loading …")
        text = screen_text(fx.app)
        assert "failing" in text and "ECC double-bit" not in text
        screen.load()
        await wait_for_text(pilot, "ECC double-bit")
        text = screen_text(fx.app)
        assert "loading …" not in text and "row remapping" in text
        assert "GET /gpu-clusters/gc_00007/replicas?" in fx.requests


async def test_fleet_view_reloads_only_what_changed():
    from ecotui.screens.gpus import row_key

    fx = fixed_app(12)
    async with fx.app.run_test(size=(160, 48)) as pilot:
        screen = await open_gpus(pilot, fx)
        assert screen.version
        first = screen.version
        screen.load()
        await wait_for(pilot, lambda: any(f"since={first}" in r for r in fx.requests))
        await wait_for(pilot, lambda: screen.version != first)
        # Later readings, sent as changes since the version held: the same rows as a
        # whole read of that moment, and the screen shows the new values.
        later = fx.fleet.fleet_gpus_answer(40.0, brief=True, since=screen.version)
        assert later["since"] == screen.version and later["gpus"]
        assert all(len(d) < 12 for d in later["gpus"])  # changed fields, not whole rows
        screen.apply_answer(later)
        whole = fx.fleet.fleet_gpus(40.0, brief=True)["gpus"]
        assert screen.gpus == {row_key(g): g for g in whole}
        await pilot.pause(0.1)
        top = screen.gpus[screen._order[0]]
        assert f"{float(top['utilization']):.0f}%" in screen_text(fx.app)
        # An answer since a version the view does not hold is dropped; the next read is whole.
        screen.apply_answer({**later, "since": "elsewhere-1"})
        assert screen.version is None and screen.gpus == {row_key(g): g for g in whole}
