"""SVG snapshots of every cluster-action dialog at 80x24 and 200x50, with fixed data
and a fixed clock, so a change to what a dialog shows is seen and reviewed.

Update after an intended change: pytest tests/snapshots/test_dialogs.py --snapshot-update
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Input, Static

from ecocore.clock import FakeClock
from ecocore.wire import AccountOut, CatalogOut, ClusterOut, FilesystemOut
from ecotui import dialogs

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

CATALOG = {
    "regions": [
        {
            "name": "us-east",
            "gpu_budget": 32,
            "gpu_types": [
                {"name": "H100-80GB", "rate_per_gpu_hour": "2.500000", "gpu_counts": [1, 2, 4, 8]},
                {"name": "A100-80GB", "rate_per_gpu_hour": "1.600000", "gpu_counts": [1, 2, 4, 8]},
            ],
        },
        {
            "name": "eu-west",
            "gpu_budget": 16,
            "gpu_types": [{"name": "L40S", "rate_per_gpu_hour": "0.950000", "gpu_counts": [1, 2]}],
        },
    ]
}

CLUSTER = {
    "id": "c_7f3a9e",
    "name": "web",
    "region": "us-east",
    "gpu_type": "H100-80GB",
    "gpu_count": 4,
    "replicas": 3,
    "image": "ghcr.io/acme/infer:1.4",
    "startup_command": None,
    "shared_filesystems": [],
    "termination_grace_seconds": 30,
    "status": "running",
    "status_reason": None,
    "stale": False,
    "created_at": "2026-01-01T08:00:00Z",
    "started_at": "2026-01-01T08:00:00Z",
    "expires_at": "2026-01-01T18:00:00Z",
    "estimated_duration_hours": "10",
    "hourly_rate": "30.000000",
    "burn_rate": "30.000000",
    "cost": {
        "hold": "300.000000",
        "spent": "120.000000",
        "hold_remaining": "180.000000",
        "projected_total": "300.000000",
    },
    "endpoint": {"url": "http://127.0.0.1:8765/gpu-clusters/c_7f3a9e/service/", "port": 8000},
    "ready_replicas": 3,
    "replica_states": [
        {
            "name": f"web-{i}",
            "index": i,
            "phase": "Running",
            "ready": True,
            "restarts": 0,
            "reason": None,
            "node": "local",
        }
        for i in range(3)
    ],
    "gpu_summary": {"gpus": 12, "mean_utilization": 40.0, "idle_gpus": 0, "telemetry": "simulated"},
}


class FixedClient:
    """Answers with the fixed data above, as the REST client's wire models; records what it
    was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def catalog(self) -> CatalogOut:
        return CatalogOut.model_validate(CATALOG)

    async def filesystems(self) -> list[FilesystemOut]:
        return [
            FilesystemOut(name="weights", description="model weights"),
            FilesystemOut(name="datasets", description="training data"),
        ]

    async def account(self) -> AccountOut:
        return AccountOut(
            id="acct",
            name="demo",
            balance="1000.000000",
            held="180.000000",
            available="820.000000",
        )

    async def clusters(self, status: str | None = None) -> list[ClusterOut]:
        return [ClusterOut.model_validate(CLUSTER)]


class Host(App[None]):
    """A bare host: the dialogs need only client, notify and push_screen (+ clock, tz)."""

    def __init__(self, opener: Any) -> None:
        super().__init__()
        self.client = FixedClient()
        self.clock = FakeClock(NOW)
        self.tz = UTC
        self.opener = opener
        self.dialog: Any = None

    def compose(self) -> ComposeResult:
        yield Static("host")

    def on_mount(self) -> None:
        self.dialog = self.opener(self)


SIZE: tuple[int, int] = (80, 24)


@pytest.fixture(autouse=True, params=[(80, 24), (200, 50)], ids=["80x24", "200x50"])
def size(request: Any) -> tuple[int, int]:
    """Every dialog at both sizes."""
    global SIZE
    SIZE = request.param
    return SIZE


def cluster(**changes: Any) -> dict[str, Any]:
    c = copy.deepcopy(CLUSTER)
    c.update(changes)
    return c


async def settle(pilot: Any) -> None:
    await pilot.pause()
    # The dialogs load what they show (catalog, account) in workers.
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    await pilot.pause()


def snap(snap_compare: Any, opener: Any, *, typing: str = "", keys: tuple[str, ...] = ()) -> bool:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
        if typing:
            await pilot.press(*typing)
        await settle(pilot)

    return snap_compare(Host(opener), terminal_size=SIZE, run_before=run_before)


def test_launch_form(snap_compare):
    assert snap(snap_compare, dialogs.open_launch, typing="inference-a")


def test_launch_form_short_of_credit(snap_compare):
    # 8 GPUs x 2 replicas x $2.50 x 30 h = $1200 > $820 available.
    async def run_before(pilot):
        await settle(pilot)
        d = pilot.app.dialog
        d.query_one("#name", Input).value = "big"
        d.query_one("#gpu_count").value = 8
        d.query_one("#hours", Input).value = "30"
        await settle(pilot)

    assert snap_compare(Host(dialogs.open_launch), terminal_size=SIZE, run_before=run_before)


def test_scale_up(snap_compare):
    assert snap(
        snap_compare,
        lambda app: dialogs.open_scale(app, cluster()),
        keys=("backspace",),
        typing="5",
    )


def test_scale_down(snap_compare):
    assert snap(
        snap_compare,
        lambda app: dialogs.open_scale(app, cluster()),
        keys=("backspace",),
        typing="2",
    )


def test_scale_stopped(snap_compare):
    assert snap(
        snap_compare,
        lambda app: dialogs.open_scale(app, cluster(status="stopped", burn_rate="0")),
        keys=("backspace",),
        typing="4",
    )


def test_extend(snap_compare):
    assert snap(
        snap_compare,
        lambda app: dialogs.open_extend(app, cluster()),
        keys=("backspace",),
        typing="2.5",
    )


def test_endpoint_open(snap_compare):
    assert snap(snap_compare, lambda app: dialogs.open_endpoint(app, cluster()))


def test_endpoint_none(snap_compare):
    assert snap(
        snap_compare, lambda app: dialogs.open_endpoint(app, cluster(endpoint=None)), typing="8080"
    )


def test_restart_replica(snap_compare):
    assert snap(snap_compare, lambda app: dialogs.open_restart(app, cluster(), "web-1"))


def test_stop(snap_compare):
    assert snap(snap_compare, lambda app: dialogs.open_stop(app, cluster()))


def test_resume(snap_compare):
    assert snap(
        snap_compare, lambda app: dialogs.open_resume(app, cluster(status="stopped", burn_rate="0"))
    )


def test_terminate_with_name_typed(snap_compare):
    assert snap(snap_compare, lambda app: dialogs.open_terminate(app, cluster()), typing="web")


def test_expiry_warning(snap_compare):
    assert snap(
        snap_compare,
        lambda app: dialogs.open_expiry_warning(app, cluster(expires_at="2026-01-01T12:05:00Z")),
    )
