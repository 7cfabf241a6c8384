"""The status line a slow start writes on stderr when stderr is not a terminal: one
line per step that lasts past the delay, nothing for a quick one, no escape codes."""

from __future__ import annotations

import io
import time

from ecotui.startup_status import StartupStatus


def test_one_line_per_slow_step_and_nothing_for_a_quick_one():
    out = io.StringIO()
    with StartupStatus(out, delay=0.2) as status:
        status.step("looking for the local backend…")
        time.sleep(0.01)  # answered at once: never said
        status.step("starting the local backend… (state dir /x)")
        deadline = time.monotonic() + 10
        while "starting" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # still the same step: said once
    assert out.getvalue() == "ecotui: starting the local backend… (state dir /x)\n"


def test_quiet_when_everything_is_quick():
    out = io.StringIO()
    with StartupStatus(out, delay=5.0) as status:
        status.step("looking for the local backend…")
    assert out.getvalue() == ""
