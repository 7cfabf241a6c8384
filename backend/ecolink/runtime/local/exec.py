"""Exec for the local runtime: a process in a replica's working dir, on a real PTY
(tty) or on pipes (separate stdout and stderr), behind the `ExecStream` interface.

Output is read only when the consumer asks for it, so a consumer that stops reading
makes the process block on its writes (back-pressure) instead of growing a buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping
from pathlib import Path

from ecolink.runtime.base import STDERR, STDOUT, ExecRequest, ExecResult, ExecStream
from ecolink.runtime.local.proc import ChildExit, normal_scheduling
from ecolink.runtime.local.users import Credentials, popen_credentials

CHUNK = 64 * 1024
# After the process exits, output still in flight (a PTY hands data over
# asynchronously) is waited for this long before the stream ends.
DRAIN_S = 0.15


def login_shell_argv() -> list[str]:
    shell = shutil.which("bash") or shutil.which("sh") or "/bin/sh"
    return [shell, "-l"]


# Signals a terminal session must start with at their default action, whatever the
# backend inherited (e.g. SIGHUP ignored under nohup): else a shell ignores the hangup
# that ends it at stop, and is killed at the end of the grace instead.
_DEFAULT_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
)
_libc = ctypes.CDLL(None, use_errno=True)


def _set_ctty() -> None:  # runs in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # libc's signal(): Python's signal.signal() is for the main thread only, and Popen
    # may run in another one.
    for sig in _DEFAULT_SIGNALS:
        _libc.signal(int(sig), ctypes.c_void_p(0))  # SIG_DFL
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def set_winsize(fd: int, width: int, height: int) -> None:
    width = max(1, min(int(width), 10000))
    height = max(1, min(int(height), 10000))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class LocalExec(ExecStream):
    protocol = None

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        tty: bool,
        master: int = -1,
        stdin_w: int = -1,
        out_fds: tuple[int, ...] = (),
    ) -> None:
        self.proc = proc
        self.tty = tty
        self._master = master
        self._stdin_w = stdin_w
        # Readable fds and the channel each feeds.
        self._outs: dict[int, int] = {}
        if tty:
            self._outs[master] = STDOUT
        else:
            for fd, ch in zip(out_fds, (STDOUT, STDERR), strict=False):
                if fd >= 0:
                    self._outs[fd] = ch
        for fd in self._outs:
            os.set_blocking(fd, False)
        if stdin_w >= 0:
            os.set_blocking(stdin_w, False)
        self._exit = ChildExit(proc)
        self._rr = 0
        self._killed = False

    # -- output
    async def read(self) -> tuple[int, bytes] | None:
        loop = asyncio.get_running_loop()
        while self._outs:
            fds = list(self._outs)
            # Round-robin so stderr is not starved by a busy stdout.
            self._rr = (self._rr + 1) % len(fds)
            fds = fds[self._rr :] + fds[: self._rr]
            for fd in fds:
                try:
                    data = os.read(fd, CHUNK)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: the PTY's other side is closed
                        raise
                    data = b""
                if data:
                    if len(data) < CHUNK:
                        data = self._more(fd, data)
                    return self._outs[fd], data
                self._close_out(fd)
                break
            else:
                # Nothing ready. Wait for data, or for the exit (then drain a little).
                if self._exit.exited:
                    if not await self._wait_readable(fds, DRAIN_S):
                        for fd in fds:
                            self._close_out(fd)
                    continue
                waiter = loop.create_future()
                for fd in fds:
                    loop.add_reader(fd, _wake, waiter)
                exit_fut = self._exit.future()

                def on_exit(_f: object, w: asyncio.Future[None] = waiter) -> None:
                    _wake(w)

                exit_fut.add_done_callback(on_exit)
                try:
                    await waiter
                finally:
                    for fd in fds:
                        loop.remove_reader(fd)
                    exit_fut.remove_done_callback(on_exit)
        return None

    @staticmethod
    def _more(fd: int, data: bytes) -> bytes:
        """Whatever else is ready on fd right now, up to CHUNK: a PTY hands out at
        most about 4 KiB a read, and fewer, larger frames cost much less."""
        parts = [data]
        size = len(data)
        while size < CHUNK:
            try:
                more = os.read(fd, CHUNK - size)
            except (BlockingIOError, OSError):
                break  # nothing more now, or EIO (seen again by the next read)
            if not more:
                break
            parts.append(more)
            size += len(more)
        return b"".join(parts) if len(parts) > 1 else data

    async def _wait_readable(self, fds: list[int], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        for fd in fds:
            loop.add_reader(fd, _wake, waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            for fd in fds:
                loop.remove_reader(fd)

    def _close_out(self, fd: int) -> None:
        if fd in self._outs:
            del self._outs[fd]
            if fd == self._master:
                return  # closed with the stream (writes and resizes still use it)
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- input
    async def write(self, data: bytes) -> None:
        fd = self._master if self.tty else self._stdin_w
        if fd < 0 or not data:
            return
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                waiter = loop.create_future()
                loop.add_writer(fd, _wake, waiter)
                try:
                    await waiter
                finally:
                    loop.remove_writer(fd)
            except OSError:
                return  # the process is gone or closed its input

    async def close_stdin(self) -> None:
        if self.tty:
            # A terminal has no half-close: send end-of-file as a line discipline does.
            await self.write(b"\x04")
            return
        if self._stdin_w >= 0:
            with contextlib.suppress(OSError):
                os.close(self._stdin_w)
            self._stdin_w = -1

    async def resize(self, width: int, height: int) -> None:
        if self.tty and self._master >= 0:
            with contextlib.suppress(OSError):
                set_winsize(self._master, width, height)

    async def result(self) -> ExecResult:
        code = await self._exit.wait()
        return ExecResult(exit_code=code)

    async def kill(self) -> None:
        if not self._exit.exited:
            sig = signal.SIGHUP if self.tty else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                await asyncio.wait_for(self._exit.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._exit.wait(), 2.0)
        self._release()

    def _release(self) -> None:
        for fd in list(self._outs):
            self._close_out(fd)
        for fd in (self._master, self._stdin_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._stdin_w = -1

    @property
    def pid(self) -> int:
        return self.proc.pid


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def spawn_exec(
    request: ExecRequest, *, cwd: Path, env: Mapping[str, str], creds: Credentials | None = None
) -> LocalExec:
    """Start `request` in a replica's directory with its environment, as the uid its
    replica runs as (`creds`; None: the backend's own)."""
    as_replica = popen_credentials(creds)
    argv = list(request.command) if request.command else login_shell_argv()
    full_env = dict(env)
    full_env.update(dict(request.env))
    if request.tty:
        full_env.setdefault("TERM", "xterm-256color")
        master, slave = pty.openpty()
        try:
            if creds is not None:
                # Its terminal is its own: programs that reopen /dev/tty need that.
                os.fchown(slave, creds.uid, creds.gid)
                os.fchmod(slave, 0o620)
            set_winsize(master, request.width, request.height)
            proc = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=full_env,
                start_new_session=True,
                preexec_fn=_set_ctty,
                close_fds=True,
                **as_replica,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        normal_scheduling(proc.pid)
        return LocalExec(proc, tty=True, master=master)

    stdin_r = stdin_w = -1
    if request.stdin:
        stdin_r, stdin_w = os.pipe()
    out_r = out_w = err_r = err_w = -1
    if request.stdout:
        out_r, out_w = os.pipe()
    if request.stderr:
        err_r, err_w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin_r if stdin_r >= 0 else devnull,
            stdout=out_w if out_w >= 0 else devnull,
            stderr=err_w if err_w >= 0 else devnull,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
            close_fds=True,
            **as_replica,
        )
    except BaseException:
        for fd in (stdin_w, out_r, err_r):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (stdin_r, out_w, err_w, devnull):
            if fd >= 0:
                os.close(fd)
    normal_scheduling(proc.pid)
    return LocalExec(proc, tty=False, stdin_w=stdin_w, out_fds=(out_r, err_r))
