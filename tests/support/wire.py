"""Wire models of the API for tests that build answers by hand: a cluster with every
field the backend sends, changed where a test says."""

from __future__ import annotations

from typing import Any

from ecocore.wire import ClusterOut


def cluster_out(**changes: Any) -> ClusterOut:
    """A running cluster as the REST client answers it (4 GPUs x 3 replicas, $30/h)."""
    base: dict[str, Any] = {
        "id": "c1",
        "name": "web",
        "region": "us-east",
        "gpu_type": "H100-80GB",
        "gpu_count": 4,
        "replicas": 3,
        "image": "img",
        "startup_command": None,
        "shared_filesystems": [],
        "termination_grace_seconds": 30,
        "status": "running",
        "status_reason": None,
        "stale": False,
        "created_at": "2026-01-01T08:00:00Z",
        "started_at": None,
        "expires_at": "2026-01-01T22:00:00Z",
        "estimated_duration_hours": 10.0,
        "hourly_rate": "30.000000",
        "burn_rate": "30.000000",
        "cost": {
            "hold": "0.000000",
            "spent": "0.000000",
            "hold_remaining": "0.000000",
            "projected_total": "0.000000",
        },
        "endpoint": None,
        "ready_replicas": 0,
        "replica_states": [],
        "gpu_summary": {
            "gpus": 0,
            "mean_utilization": 0.0,
            "idle_gpus": 0,
            "telemetry": "simulated",
        },
    }
    base.update(changes)
    return ClusterOut.model_validate(base)
