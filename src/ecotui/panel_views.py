"""Small immutable values the panels draw: what the screens compute from the model
and hand to `CostPanel`, `StatusBar`, `AlertBar` and `GpuPanel`.

Pure data (no textual, no model): a widget can be drawn, and tested, from these alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Level = str  # "" | "ok" | "warning" | "error"
Sample = tuple[float, float, float, float, float]  # t (epoch s), util, mem MiB, temp C, power W


@dataclass(frozen=True)
class CostRow:
    label: str
    value: str
    level: Level = ""


@dataclass(frozen=True)
class CostView:
    """A cluster's money, in reading order."""

    rows: tuple[CostRow, ...]


@dataclass(frozen=True)
class StatusView:
    """The top line's parts: connection, alerts count, credit, clock."""

    connection: str
    connection_level: Level
    alerts: str
    alerts_level: Level
    credit: str
    clock: str


@dataclass(frozen=True)
class AlertLine:
    level: Level  # "warning" | "error"
    title: str
    text: str


# The most alert lines a bar shows (the rest are counted).
ALERT_LINES = 5


@dataclass(frozen=True)
class AlertsView:
    """The alerts in force, most severe first, in words (expiry counts down): the first
    `ALERT_LINES` of them, and how many there are in all."""

    lines: tuple[AlertLine, ...] = ()
    total: int | None = None

    @property
    def count(self) -> int:
        return len(self.lines) if self.total is None else self.total


@dataclass(frozen=True)
class GpuPanelView:
    """One cluster's GPUs: the latest replicas frame and the samples kept per GPU."""

    name: str
    status: str
    now: datetime
    replicas: tuple[Mapping[str, Any], ...]
    samples: Mapping[tuple[str, int], Sequence[Sample]] = field(default_factory=dict)
    telemetry: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.status in ("running", "pending", "stopping")
