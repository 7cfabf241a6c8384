"""The dashboard's view model: everything the screens show, fed by /watch frames.

Pure Python (no textual, no IO). `DashboardModel` is a thin façade over four parts:
`FleetState` (the folded feed), `GpuHistory`, the alerts (`AlertScheduler` and the
pure rules of `ecotui.model.alerts`) and `FleetView` (sort, filter, group).
"""

from __future__ import annotations

# The formatters and the clock live in `ecotui.wording` and `ecocore.clock`; those names
# stay importable from here too, for code written against the former single module.
from ecocore.clock import Clock, SystemClock
from ecotui.model.alerts import AlertScheduler, account_alerts, cluster_alerts
from ecotui.model.dashboard import DashboardModel
from ecotui.model.fleet import FleetState
from ecotui.model.history import GpuHistory
from ecotui.model.values import (
    CRASH_RESTARTS,
    CRASH_WINDOW,
    EXPIRY_CRITICAL,
    EXPIRY_WARN,
    IDLE_AFTER,
    IDLE_UTILIZATION,
    STALE_AFTER,
    STATUS_ORDER,
    STATUS_SYMBOL,
    Alert,
    Changes,
    ClusterNums,
    ClusterView,
    ConnectionInfo,
    GroupRow,
    Sample,
    expiry_level,
    parse_micros,
    status_of,
)
from ecotui.model.view import GROUPINGS, SORT_COLUMNS, FleetView
from ecotui.wording import fmt_duration, fmt_local, fmt_rate, fmt_usd, sparkline

__all__ = [
    "CRASH_RESTARTS",
    "CRASH_WINDOW",
    "EXPIRY_CRITICAL",
    "EXPIRY_WARN",
    "GROUPINGS",
    "IDLE_AFTER",
    "IDLE_UTILIZATION",
    "SORT_COLUMNS",
    "STALE_AFTER",
    "STATUS_ORDER",
    "STATUS_SYMBOL",
    "Alert",
    "AlertScheduler",
    "Changes",
    "ClusterNums",
    "ClusterView",
    "ConnectionInfo",
    "DashboardModel",
    "FleetState",
    "FleetView",
    "GpuHistory",
    "GroupRow",
    "Sample",
    "account_alerts",
    "cluster_alerts",
    "expiry_level",
    "parse_micros",
    "status_of",
    "Clock",
    "SystemClock",
    "fmt_duration",
    "fmt_local",
    "fmt_rate",
    "fmt_usd",
    "sparkline",
]
