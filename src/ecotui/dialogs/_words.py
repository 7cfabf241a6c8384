"""Short sentences about a cluster that several dialogs open with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ecotui import costs


def gpus_text(cluster: Mapping[str, Any]) -> str:
    r = int(cluster["replicas"])
    return f"{r} replica{'s' if r != 1 else ''} × {cluster['gpu_count']} {cluster['gpu_type']}"


def cluster_summary(cluster: Mapping[str, Any]) -> str:
    """`web (running): 3 replicas × 4 H100-80GB in us-east at $30.00/h.`"""
    rate = costs.usd_exact(costs.cluster_hourly_rate(cluster))
    return (f"{cluster['name']} ({cluster['status']}): {gpus_text(cluster)} in "
            f"{cluster['region']} at {rate}/h.")
