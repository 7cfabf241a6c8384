"""The `ecotui cp` progress line: bytes, rate and ETA on a terminal, nothing when piped."""

from __future__ import annotations

import io
import sys

from ecotui.tools import copy


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_line_shows_done_total_rate_and_eta():
    clock = Clock()
    out = io.StringIO()
    p = copy.Progress("up", 10 * 1024 * 1024, out=out, clock=clock, width=10)
    clock.t += 2.0
    p.add(4 * 1024 * 1024)  # 2 MiB/s: 6 MiB left, 3 s
    line = out.getvalue().rsplit("\x1b[K", 1)[1]
    assert line == "up [####------]  40% 4.0 MiB / 10.0 MiB  2.0 MiB/s  ETA 0:03"
    clock.t += 0.05
    p.add(1)  # within 0.1 s of the last draw: not drawn again
    assert out.getvalue().count("\x1b[K") == 1
    p.finish()
    assert out.getvalue().endswith("\n")


def test_eta_past_an_hour_and_unknown_total():
    assert copy.eta_text(3725) == "1:02:05"
    assert copy.eta_text(-3) == "0:00"
    clock = Clock()
    p = copy.Progress("down", None, clock=clock)
    clock.t += 1.0
    p.add(2048)
    assert p.line() == "down 2.0 KiB  2.0 KiB/s"


def test_quiet_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    p = copy.progress_for("up", 10)
    assert p.out is None
    p.add(5)
    p.finish()
    assert sys.stderr.getvalue() == ""
