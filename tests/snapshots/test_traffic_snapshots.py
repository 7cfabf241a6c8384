"""SVG snapshots of the cluster view of a cluster serving traffic through its public URL
(per-replica requests, 5xx, in flight and p99 beside the GPU utilisation; the path to
the replicas in the table's title), at 80x24 and 200x50. Update after an intended change:
pytest tests/snapshots/test_traffic_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from snapshots.test_dashboard_snapshots import SIZES, app_with_history, settle
from support.tui_helpers import wait_for, wait_for_text


@pytest.mark.parametrize("size", SIZES)
def test_cluster_view_with_traffic(snap_compare, size):
    fx = app_with_history()

    async def run_before(pilot: Pilot) -> None:
        await wait_for_text(pilot, "12 clusters")
        fx.app.open_cluster("gc_00009")  # tts-serve: one replica answers some 5xx
        await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False))
        await wait_for_text(pilot, "tts-serve-7")
        await settle(pilot)

    assert snap_compare(fx.app, terminal_size=size, run_before=run_before)
