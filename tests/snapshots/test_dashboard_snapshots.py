"""SVG snapshots of every dashboard view at 80x24 and 200x50, with a fixed clock and a
generated fleet (frames injected at the watch-client seam, REST from the same fleet).

Notifications are cleared before each picture (one test keeps them, to show alert
toasts); the input cursor does not blink. Update after an intended change:
pytest tests/snapshots/test_dashboard_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from support.tui_helpers import fixed_app, screen_text, wait_for, wait_for_text

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((200, 50), id="200x50")]


def app_with_history():
    """The fixed fleet, with a minute of summaries so the sparklines have a shape."""
    fx = fixed_app(12)
    for k in range(12):
        fx.source.push(fx.fleet.summaries_frame(5.0 * k))
    return fx


async def settle(pilot: Pilot, *, keep_notifications: bool = False) -> None:
    await pilot.pause(0.2)
    app = pilot.app
    for inp in app.screen.query(Input):
        inp.cursor_blink = False
    if not keep_notifications:
        app.clear_notifications()
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES)
def test_clusters_view(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_clusters_view_grouped_and_filtered(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("o", "o", "O", "m", "slash", *"serve")
        await wait_for_text(pilot, "group: region")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_cluster_view(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00007")  # vision-serve: a crash-looping replica
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False))
        await wait_for_text(pilot, "vision-serve-7")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_cluster_view_pending_unschedulable(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00001")  # mistral-serve: nothing fits
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False))
        await wait_for_text(pilot, "mistral-serve-7")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_logs_view(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00009")
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False))
        await pilot.press("l")
        await wait_for_text(pilot, "60 lines")
        await pilot.press("slash", *"health", "enter")
        await wait_for(pilot, lambda: fx.app.screen.log_view.match_index == 0)
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_account_view(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("a")
        await wait_for_text(pilot, "28 entries")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("question_mark")
        await wait_for_text(pilot, "ecotui help")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_reconnecting_with_stale_data(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.source.drop(retry_in=8, attempt=3, now=fx.clock.now())
        await wait_for_text(pilot, "reconnecting in 8s")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


def test_alert_notifications_light_theme(snap_compare):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("T")
        fx.app.clear_notifications()
        fx.clock.advance(10 * 60 + 5)
        fx.source.push(fx.fleet.summaries_frame(60.0))
        await wait_for(pilot, lambda: any(n.title == "Idle GPUs" for n in fx.app._notifications))
        await settle(pilot, keep_notifications=True)
        assert "Idle GPUs" in screen_text(fx.app)

    assert snap_compare(fx.app, terminal_size=(160, 48), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_clusters_view_empty(snap_compare, size):
    fx = fixed_app(0)

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "press n to launch")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_command_line(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("colon", *"cluster ", "v")
        await wait_for_text(pilot, "vision-serve")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("panel", ["2", "3"])
def test_cluster_view_panels_at_80x24(snap_compare, panel):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00007")
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False))
        await pilot.press(panel)
        await wait_for_text(pilot, "hourly rate" if panel == "2" else "exited with code")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_export_dialog(snap_compare, size, tmp_path):
    fx = fixed_app(12, export_dir=tmp_path / "exports")

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("a")
        await wait_for_text(pilot, "28 entries")
        fx.app.screen.export_dir = type(tmp_path)("/home/me/exports")
        await pilot.press("x")
        await wait_for_text(pilot, "Export the ledger as CSV")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_command_palette(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.clear_notifications()
        await pilot.pause(0.1)
        await pilot.press("ctrl+p", *"scale")
        await wait_for_text(pilot, "Scale")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


NVIDIA_SMI = """+-----------------------------------------------------------------------------+
| NVIDIA-SMI 550.54       Driver Version: 550.54       CUDA Version: 12.4     |
|   GPU  Name                 Temp   Pwr:Usage/Cap |         Memory-Usage |  Util |
|=============================================================================|
|     0  NVIDIA H100 80GB     54C     402W / 700W |  42000MiB / 81559MiB |   52% |
|     1  NVIDIA H100 80GB     \x1b]52;c;aGk=\x07[bold]55C[/bold] 391W / 700W |  41888MiB |  51% |
+-----------------------------------------------------------------------------+
"""


@pytest.mark.parametrize("size", SIZES)
def test_gpu_compare(snap_compare, size, monkeypatch):
    from ecotui.screens import gpu_compare
    from ecotui.tools.fold import ReplicaOutcome

    async def fake_run(client, cluster_id, replica, command, *, timeout=None, **_kw):
        if replica.endswith("-1"):
            return ReplicaOutcome(replica, b"", b"sh: nvidia-smi: not found\n", 127)
        return ReplicaOutcome(replica, NVIDIA_SMI.encode(), b"", 0)

    monkeypatch.setattr(gpu_compare, "run_one", fake_run)
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00007")
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False))
        await pilot.press("N")
        await wait_for(
            pilot,
            lambda: (
                isinstance(fx.app.screen, gpu_compare.GpuCompareScreen)
                and fx.app.screen.done.is_set()
            ),
        )
        text = screen_text(fx.app)
        assert "␛]52;c;aGk=␇[bold]55C[/bold]" in text or size == (80, 24)
        assert "\x1b" not in text
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)
