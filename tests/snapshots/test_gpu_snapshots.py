"""SVG snapshots of the GPU health views (the fleet GPU view, filtered, and one GPU's
detail) at 80x24 and 160x48, on the generated fleet with a fixed clock.
Update after an intended change: pytest tests/snapshots/test_gpu_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from ecotui.screens.gpu_detail import GpuDetailScreen
from ecotui.screens.gpus import GpusScreen
from snapshots.test_dashboard_snapshots import SIZES, settle
from support.tui_helpers import fixed_app, wait_for, wait_for_text


async def open_gpus(pilot: Pilot) -> None:
    await wait_for_text(pilot, "12 clusters")
    await pilot.press("H")
    await wait_for(
        pilot, lambda: isinstance(pilot.app.screen, GpusScreen) and pilot.app.screen.loaded
    )


@pytest.mark.parametrize("size", SIZES)
def test_gpus_view(snap_compare, size):
    fx = fixed_app(12)

    async def run_before(pilot: Pilot) -> None:
        await open_gpus(pilot)
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_gpus_view_filtered(snap_compare, size):
    fx = fixed_app(12)

    async def run_before(pilot: Pilot) -> None:
        await open_gpus(pilot)
        await pilot.press("slash", *"vision")
        await wait_for_text(pilot, "GPUs match")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_gpu_detail(snap_compare, size):
    fx = fixed_app(12)

    async def run_before(pilot: Pilot) -> None:
        await open_gpus(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, GpuDetailScreen))
        await wait_for_text(pilot, "fallen off the bus")
        await wait_for_text(pilot, "failing")
        await pilot.pause(0.3)
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)
