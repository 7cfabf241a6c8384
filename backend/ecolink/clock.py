"""The backend's steady clock: the wall clock checked against one that never steps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from ecocore.clock import Clock, FakeClock, SystemClock

__all__ = ["Clock", "FakeClock", "SteadyClock", "SystemClock", "monotonic", "steady_seconds"]

log = logging.getLogger(__name__)


def monotonic() -> float:
    return time.monotonic()


def steady_seconds() -> float:
    """Seconds on a clock that never steps: CLOCK_BOOTTIME (it counts suspend, as real
    time passes for the clusters) where there is one, else the monotonic clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


class SteadyClock:
    """The wall clock, checked against a clock that never steps.

    Follows the wall clock while it agrees with the elapsed steady time (within
    `tolerance_s`, and forward steps up to `max_step_s`). A step backwards, or forward
    by more than `max_step_s`, is logged and not followed: time goes on from the
    steady clock, so no cluster pays for time that did not run and none expires
    early. Readings never go backwards. Once the wall clock agrees again within
    `tolerance_s` (it was put right), it is followed again."""

    def __init__(
        self,
        wall: Clock | None = None,
        steady: Callable[[], float] = steady_seconds,
        *,
        tolerance_s: float = 2.0,
        max_step_s: float = 60.0,
    ) -> None:
        self._wall = wall or SystemClock()
        self._steady = steady
        self.tolerance_s = tolerance_s
        self.max_step_s = max_step_s
        self._anchor: tuple[datetime, float] | None = None
        self._last: datetime | None = None
        self._stepped = False
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            wall = self._wall.now()
            mono = self._steady()
            if self._anchor is None:
                self._anchor = (wall, mono)
                result = wall
            else:
                a_wall, a_mono = self._anchor
                steady = a_wall + timedelta(seconds=mono - a_mono)
                drift = (wall - steady).total_seconds()
                # After a step that was not followed, the wall clock is followed again
                # only once it agrees within the tolerance: steps that add up to less
                # than `max_step_s` are not one small step forward.
                ahead = self.tolerance_s if self._stepped else self.max_step_s
                if -self.tolerance_s <= drift <= ahead:
                    if self._stepped:
                        log.warning(
                            "the wall clock agrees with the elapsed time again; following it"
                        )
                        self._stepped = False
                    self._anchor = (wall, mono)
                    result = wall
                else:
                    if not self._stepped:
                        log.warning(
                            "the wall clock stepped %s by %.1f s against the elapsed time; "
                            "not followed: time goes on from the steady clock",
                            "backwards" if drift < 0 else "forward",
                            abs(drift),
                        )
                        self._stepped = True
                    result = steady
            if self._last is not None and result < self._last:
                result = self._last
            self._last = result
            return result
