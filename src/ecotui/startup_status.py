"""A status line on stderr while the dashboard waits for something before its first
paint (the local backend starting, a lock another dashboard holds).

Nothing is written while a wait is short (under `delay` seconds). Past that, on a
terminal a spinner, what is awaited and the seconds so far, redrawn in place and
erased when done; elsewhere (a pipe, a log, TERM=dumb) one line per step.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TextIO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
DEFAULT_DELAY_S = 0.5
TICK_S = 0.1


class StartupStatus:
    def __init__(
        self, stream: TextIO, *, delay: float = DEFAULT_DELAY_S, prefix: str = "ecotui: "
    ) -> None:
        self.stream = stream
        self.delay = delay
        self.prefix = prefix
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError, OSError):
            tty = False
        self.live = tty and os.environ.get("TERM", "") != "dumb"
        self._lock = threading.Lock()
        self._text = ""
        self._since = time.monotonic()
        self._said: str | None = None
        self._drawn = False
        self._frame = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StartupStatus:
        self._thread = threading.Thread(target=self._run, name="startup-status", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._drawn:
                self._write("\r\x1b[K")

    def step(self, text: str) -> None:
        """What is awaited now; its clock starts now."""
        with self._lock:
            self._text = text
            self._since = time.monotonic()

    def _write(self, s: str) -> None:
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                text, waited = self._text, time.monotonic() - self._since
                if not text or waited < self.delay:
                    continue
                if self.live:
                    self._frame = (self._frame + 1) % len(FRAMES)
                    self._write(f"\r\x1b[K{FRAMES[self._frame]} {self.prefix}{text} {waited:.0f}s")
                    self._drawn = True
                elif self._said != text:
                    self._write(f"{self.prefix}{text}\n")
                    self._said = text
