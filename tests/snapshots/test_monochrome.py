"""Monochrome snapshots (NO_COLOR=1) at 80x24: focus, the cursor row, checkboxes and
radio buttons must read without colour (glyphs and text styles, not hues).

Update after an intended change: pytest tests/snapshots/test_monochrome.py --snapshot-update
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from test_dashboard_snapshots import app_with_history, settle
from test_dialogs import Host, cluster
from test_dialogs import settle as settle_dialog
from textual.pilot import Pilot

from ecotui import dialogs
from ecotui.screens import run_everywhere as run_screen
from ecotui.screens.forwards import ForwardEntry, open_forwards, registry
from ecotui.screens.gpu_detail import GpuDetailScreen
from ecotui.screens.recordings import open_recordings
from ecotui.tools.fold import ReplicaOutcome
from ecotui.tools.portforward import Forward, ForwardStats
from snapshots.test_gpu_snapshots import open_gpus
from support.tui_helpers import screen_text, wait_for, wait_for_text


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

    assert snap_compare(
        Host(lambda app: dialogs.open_restart(app, cluster(), "web-1")),
        terminal_size=(80, 24),
        run_before=run_before,
    )


# -- the GPU health views, port-forwards, recordings, run everywhere ----------------------------


def test_fleet_gpu_view(snap_compare):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await open_gpus(pilot)
        await pilot.press("j")
        await settle(pilot)
        text = screen_text(fx.app)
        # health by glyph and word, the cursor row by a glyph
        assert "✖ failing" in text and "▲ degraded" in text and "✓ ok" in text
        assert "›rerank-serve-1" in text

    assert snap_compare(fx.app, terminal_size=(80, 24), run_before=run_before)


def test_gpu_detail(snap_compare):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await open_gpus(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, GpuDetailScreen))
        await wait_for_text(pilot, "fallen off the bus")
        await pilot.pause(0.3)
        await settle(pilot)
        assert "verdict         ✖ failing" in screen_text(fx.app)

    assert snap_compare(fx.app, terminal_size=(80, 24), run_before=run_before)


def _forward(
    fx: Any, name: str, replica: str, remote: int, local: int, **stats: Any
) -> ForwardEntry:
    cid = next(c["id"] for c in fx.fleet.clusters.values() if c["name"] == name)
    fwd = Forward(
        fx.app.client, cid, remote, local, "127.0.0.1", replica, stats=ForwardStats(**stats)
    )
    return ForwardEntry(fwd, cid, name, replica)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_port_forwards_list(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        registry(fx.app).entries += [
            _forward(
                fx,
                "vision-serve",
                "vision-serve-0",
                8888,
                40001,
                connections=3,
                active=1,
                bytes_in=48_213,
                bytes_out=1_022,
            ),
            _forward(fx, "llama-serve", "llama-serve-1", 6006, 40002),
            _forward(fx, "rerank-serve", "rerank-serve-0", 5000, 40003, connections=2, failures=1),
        ]
        registry(fx.app).entries[2].lines.append("127.0.0.1:40003 -> rerank-serve-0:5000: refused")
        await open_forwards(fx.app)
        await pilot.press("down")
        await settle(pilot)
        text = screen_text(fx.app)
        # the highlighted forward is marked by a glyph, the others are not
        assert "›llama-serve: 127.0.0.1:40002" in text
        assert "›vision-serve" not in text and "›rerank-serve" not in text
        box = pilot.app.screen.query_one("#forwards").parent
        # the whole box shows
        assert box.region.right <= size[0] and box.region.bottom <= size[1]

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_recordings(snap_compare, size, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    folder = tmp_path / "ecotui" / "recordings"
    folder.mkdir(parents=True)
    for n, name in enumerate(
        ["vision-serve-0-20260302T130000Z.cast", "llama-serve-1-20260302T134500Z.cast"]
    ):
        path = folder / name
        path.write_text(
            '{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "$ nvidia-smi\\r\\n"]\n'
        )
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        await open_recordings(fx.app)
        await wait_for_text(pilot, "choose one and press enter")
        await pilot.press("down")
        await settle(pilot)
        text = screen_text(fx.app)
        assert "›vision-serve-0-20260302T130000Z.cast" in text  # the second, newest first
        assert "›llama-serve" not in text

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_run_everywhere_panel(snap_compare, size, monkeypatch):
    outcomes = [
        ReplicaOutcome("vision-serve-0", b"GPU 0: NVIDIA H100\nGPU 1: NVIDIA H100\n", exit_code=0),
        ReplicaOutcome("vision-serve-1", b"GPU 0: NVIDIA H100\nGPU 1: NVIDIA H100\n", exit_code=0),
        ReplicaOutcome(
            "vision-serve-2", b"GPU 0: NVIDIA H100\n", b"GPU 1: fallen off the bus\n", exit_code=1
        ),
    ]

    async def fake_run(client: Any, cid: str, targets: Any, command: Any, **kw: Any) -> Any:
        return outcomes

    monkeypatch.setattr(run_screen, "run_everywhere", fake_run)
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        cluster = next(c for c in fx.fleet.clusters.values() if c["name"] == "vision-serve")
        await run_screen.open_run_everywhere(fx.app, cluster, ["nvidia-smi", "-L"])
        await wait_for_text(pilot, "2 of 3 replicas exited 0")
        await settle(pilot)
        text = screen_text(fx.app)
        # what differs and what failed reads as text: diff signs, "differs", the exit code
        assert "differs from the majority" in text and "-GPU 1: NVIDIA H100" in text
        assert "exit 1" in text

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)
