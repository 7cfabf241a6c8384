"""A local program in a pseudo-terminal, driven from an asyncio loop.

Used by the terminal benchmark and tests to feed the emulator and the widget
from a real program without a backend in between; the dashboard's shells go
through the exec WebSocket instead. Output is read as it comes (one read per
readiness event, so the loop stays responsive) and handed to `on_output`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import signal
import struct
import termios
import time
from collections.abc import Callable, Sequence

READ_SIZE = 65536
FULL_READ = 4000  # a read this long means more is probably coming
GATHER_S = 0.004  # how long to keep gathering a flood before handing it on
MAX_BATCH = 128 * 1024  # bounded so a key press never waits long behind a flood


class LocalPty:
    def __init__(
        self,
        argv: Sequence[str],
        cols: int = 80,
        rows: int = 24,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.cols = cols
        self.rows = rows
        self.env = env
        self.cwd = cwd
        self.pid: int | None = None
        self.fd: int | None = None
        self.exit_code: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out = bytearray()
        self._on_output: Callable[[bytes], None] | None = None
        self._on_exit: Callable[[int | None], None] | None = None

    def start(
        self,
        on_output: Callable[[bytes], None],
        on_exit: Callable[[int | None], None] | None = None,
    ) -> None:
        """Spawn the program; call from a running event loop."""
        self._loop = asyncio.get_running_loop()
        self._on_output = on_output
        self._on_exit = on_exit
        pid, fd = pty.fork()
        if pid == 0:  # child
            try:
                if self.cwd:
                    os.chdir(self.cwd)
                env = dict(self.env if self.env is not None else os.environ)
                env.setdefault("TERM", "xterm-256color")
                os.execvpe(self.argv[0], self.argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.resize(self.cols, self.rows)
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        """Drain what the program wrote. A pty hands out at most 4 KiB a read, so
        while the program floods (full reads) keep reading for a moment: one
        large chunk parses far faster than many small ones, and the program
        never waits on the loop between them."""
        assert self.fd is not None
        chunks: list[bytes] = []
        total = 0
        deadline = 0.0
        while total < MAX_BATCH:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                if not chunks or len(chunks[-1]) < FULL_READ:
                    break  # the burst is over
                now = time.perf_counter()
                if not deadline:
                    deadline = now + GATHER_S
                elif now > deadline:
                    break
                os.sched_yield()
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                if chunks:
                    break
                self._finish()
                return
            chunks.append(data)
            total += len(data)
        if not chunks:
            return
        if self._on_output is not None:
            self._on_output(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _finish(self) -> None:
        if self.fd is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            self._loop.remove_writer(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
                self.exit_code = os.waitstatus_to_exitcode(status)
        if self._on_exit is not None:
            self._on_exit(self.exit_code)

    def write(self, data: bytes) -> None:
        """Queue input for the program (never blocks the loop)."""
        if self.fd is None or not data:
            return
        self._out.extend(data)
        self._flush()

    def _flush(self) -> None:
        if self.fd is None or self._loop is None:
            return
        while self._out:
            try:
                n = os.write(self.fd, self._out)
            except BlockingIOError:
                self._loop.add_writer(self.fd, self._flush)
                return
            except OSError:
                self._out.clear()
                return
            del self._out[:n]
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_writer(self.fd)

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        if self.fd is not None:
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close(self) -> None:
        """Hang up and end the program (and what it started in its session)."""
        if self.pid is not None and self.fd is not None:
            for sig in (signal.SIGHUP, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, sig)
        self._finish()
