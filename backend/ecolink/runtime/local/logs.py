"""Replica logs for the local runtime: size-bounded rotated files, and their readers.

Layout under `logs/<cluster_id>/`: `<replica>.log` (the current run, newest part),
`<replica>.log.1` .. `.log.N` (older parts of the current run) and
`<replica>.prev.log` (the newest part of the run before the last restart).

A replica's stdout and stderr go to one pipe; a single pump thread copies every pipe
into its files so a replica that floods output costs the event loop nothing, and the
replica blocks (the pipe fills) rather than the backend buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

CHUNK = 64 * 1024


class LogSet:
    """The files of one replica. Writers and readers go through the same names."""

    def __init__(self, base: Path, max_bytes: int, backups: int) -> None:
        self.base = base  # .../logs/<cid>/<replica>  (no suffix)
        self.max_bytes = max_bytes
        self.backups = backups
        self.lock = threading.Lock()
        self.writer: LogWriter | None = None

    @property
    def current(self) -> Path:
        return self.base.with_name(self.base.name + ".log")

    @property
    def previous(self) -> Path:
        return self.base.with_name(self.base.name + ".prev.log")

    def part(self, k: int) -> Path:
        return self.base.with_name(f"{self.base.name}.log.{k}")

    def parts_oldest_first(self) -> list[Path]:
        out = [self.part(k) for k in range(self.backups, 0, -1) if self.part(k).exists()]
        if self.current.exists():
            out.append(self.current)
        return out

    def new_run(self) -> LogWriter:
        """Start the files of a new run: the last run's newest part becomes `prev`."""
        self.base.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if self.writer is not None:
                self.writer.detached = True
            if self.current.exists():
                os.replace(self.current, self.previous)
            for k in range(1, self.backups + 2):
                with contextlib.suppress(FileNotFoundError):
                    self.part(k).unlink()
            self.writer = LogWriter(self)
            return self.writer

    def remove_files(self) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.detached = True
            for p in [
                self.current,
                self.previous,
                *(self.part(k) for k in range(1, self.backups + 2)),
            ]:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


class LogWriter:
    """Appends one run's output, rotating by size. Once a newer run started it is
    `detached`: it keeps writing what is left into its (now `prev`) file, bounded."""

    def __init__(self, logs: LogSet) -> None:
        self.logs = logs
        self.detached = False
        self.done = threading.Event()  # set once the run's output is all written
        self.fd = os.open(logs.current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0

    def write(self, data: bytes) -> None:
        with self.logs.lock:
            if self.fd < 0:
                return
            if self.detached:
                if self.size < self.logs.max_bytes:
                    self.size += os.write(self.fd, data[: self.logs.max_bytes - self.size])
                return
            view = memoryview(data)
            while view:
                room = self.logs.max_bytes - self.size
                if room <= 0:
                    self._rotate()
                    room = self.logs.max_bytes
                n = os.write(self.fd, view[:room])
                view = view[n:]
                self.size += n

    def _rotate(self) -> None:
        os.close(self.fd)
        lg = self.logs
        with contextlib.suppress(FileNotFoundError):
            lg.part(lg.backups).unlink()
        for k in range(lg.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(lg.part(k), lg.part(k + 1))
        if lg.backups > 0:
            os.replace(lg.current, lg.part(1))
        else:
            lg.current.unlink()
        self.fd = os.open(lg.current, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self.size = 0

    def close(self) -> None:
        with self.logs.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
        self.done.set()


class LogPump:
    """One thread copying every replica pipe into its LogWriter."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._add: list[tuple[int, LogWriter, Callable[[], None] | None]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="ecolink-log-pump", daemon=True)
        self._thread.start()

    def add(self, fd: int, writer: LogWriter, on_eof: Callable[[], None] | None = None) -> None:
        """Pump `fd` (a pipe's read end; the pump owns and closes it) into `writer`."""
        with self._lock:
            self._add.append((fd, writer, on_eof))
        os.write(self._wake_w, b"x")

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=1.0):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    with self._lock:
                        adds, self._add = self._add, []
                    for fd, writer, on_eof in adds:
                        self._sel.register(fd, selectors.EVENT_READ, (writer, on_eof))
                    continue
                writer, on_eof = key.data
                try:
                    data = os.read(key.fd, CHUNK)
                except OSError:
                    data = b""
                if data:
                    try:
                        writer.write(data)
                    except OSError:
                        pass  # disk full: drop output rather than stall the replica
                    continue
                self._sel.unregister(key.fd)
                os.close(key.fd)
                writer.close()
                if on_eof is not None:
                    on_eof()
        for key in list(self._sel.get_map().values()):
            if key.data is not None:
                os.close(key.fd)
                key.data[0].close()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


# --------------------------------------------------------------------------- readers


def _tail_lines(paths_newest_first: list[Path], n: int) -> bytes:
    """The last n lines over several files, reading backwards in blocks."""
    if n <= 0:
        return b""
    pieces: list[bytes] = []
    newlines = 0
    for path in paths_newest_first:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue
        with f:
            pos = f.seek(0, os.SEEK_END)
            while pos > 0 and newlines <= n:
                step = min(CHUNK, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                newlines += block.count(b"\n")
                pieces.append(block)
        if newlines > n:
            break
    lines = b"".join(reversed(pieces)).splitlines(keepends=True)
    return b"".join(lines[-n:])


def _newer_parts(logs: LogSet, ino: int | None) -> list[Path]:
    """The files written after the one with inode `ino`, oldest first."""
    paths = logs.parts_oldest_first()
    for i, p in enumerate(paths):
        try:
            if os.stat(p).st_ino == ino:
                return paths[i + 1 :]
        except FileNotFoundError:
            continue
    return paths


async def read_logs(
    logs: LogSet,
    *,
    tail: int | None,
    follow: bool,
    previous: bool,
    still_there: Callable[[], bool],
    poll_s: float = 0.1,
) -> AsyncIterator[bytes]:
    """The log stream for the API: the whole run (or its last `tail` lines), then,
    with `follow`, new output as it comes until the replica is gone."""
    if previous:
        path = logs.previous
        if tail is not None:
            data = await asyncio.to_thread(_tail_lines, [path], tail)
            if data:
                yield data
            return
        with contextlib.suppress(FileNotFoundError):
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        return

    fd: int | None = None
    ino: int | None = None
    if tail is not None:
        parts = list(reversed(logs.parts_oldest_first()))
        data = await asyncio.to_thread(_tail_lines, parts, tail)
        if follow:
            # Continue from the end of the current file as it was when we read it.
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(logs.current, os.O_RDONLY)
                ino = os.fstat(fd).st_ino
                os.lseek(fd, 0, os.SEEK_END)
        if data:
            yield data
    else:
        parts = logs.parts_oldest_first()
        for path in parts[:-1]:
            with contextlib.suppress(FileNotFoundError):
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        yield chunk
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(logs.current, os.O_RDONLY)
            ino = os.fstat(fd).st_ino
    try:
        while True:
            if fd is not None:
                chunk = os.read(fd, CHUNK)
                if chunk:
                    yield chunk
                    continue
            if not follow:
                return
            # At the end: did the file rotate (or a new run start)? Then the old file
            # is complete (the writer closed it before renaming): switch to the new one.
            try:
                st = os.stat(logs.current)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_ino != ino:
                if fd is not None:
                    while chunk := os.read(fd, CHUNK):
                        yield chunk
                    os.close(fd)
                    fd = None
                # Parts rotated while we were behind come before the current file.
                newer = _newer_parts(logs, ino)
                for path in newer[:-1]:
                    with contextlib.suppress(FileNotFoundError):
                        with open(path, "rb") as f:
                            while chunk := f.read(CHUNK):
                                yield chunk
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(logs.current, os.O_RDONLY)
                    ino = os.fstat(fd).st_ino
                continue
            if not still_there():
                return
            await asyncio.sleep(poll_s)
    finally:
        if fd is not None:
            os.close(fd)
