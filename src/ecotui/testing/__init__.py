"""Test doubles of the dashboard: a generated fleet and a replayed network.

Used where the dashboard needs fixed, repeatable data: the snapshot and view
tests, the screenshots script and the benchmark. Nothing in the dashboard
itself imports this package. No textual here.
"""

from ecotui.testing.common import FIXED_START
from ecotui.testing.fleet import GeneratedFleet
from ecotui.testing.replay import ReplayFrameSource, as_frame, dumps, fleet_transport

__all__ = [
    "FIXED_START",
    "GeneratedFleet",
    "ReplayFrameSource",
    "as_frame",
    "dumps",
    "fleet_transport",
]
