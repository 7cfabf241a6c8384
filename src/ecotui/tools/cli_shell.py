"""`ecotui shell NAME [REPLICA] [--session [SID]] [--record FILE] [-- CMD...]`.

On a terminal: the remote shell in raw mode (every key, Ctrl-C and Ctrl-Z
included, goes to the replica), the window size followed, and the remote exit
code as ours, like `ssh` or `kubectl exec -it`. Without a terminal on standard
input it streams like `exec`: stdin passed on, stdout and stderr kept apart.

`--session` attaches to a kept session (a new one without SID); Ctrl-] detaches
and leaves it running. `--record FILE` writes an asciicast v2 recording.
While the shell runs, a one-line warning goes to stderr when the cluster has
10 and 2 minutes left (polled, so an extend is noticed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ecocore.wire import ClusterOut
from ecotui import costs, wording
from ecotui.cli_io import Parser, Subcommands
from ecotui.client.exec import STDOUT, ExecConnection, attach_session, open_exec
from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient
from ecotui.tools.asciicast import CastWriter, default_recording_path
from ecotui.tools.common import EXIT_OK, EXIT_REFUSED, LateParser, UsageError, pump_stdin
from ecotui.tools.runner import ready_replicas

DETACH = b"\x1d"  # Ctrl-]
WARN_AT_S = (600, 120)
POLL_S = 5.0  # an extend is noticed within this


def add_parser(sub: Subcommands, common: Parser) -> None:
    s = sub.add_parser(
        "shell", parents=[common], help="an interactive shell in a replica (in this terminal)"
    )
    _options(s)
    # One remainder: argparse would take a `--` right after NAME as NAME's own.
    s.add_argument(
        "words",
        nargs=argparse.REMAINDER,
        metavar="NAME [REPLICA] [-- CMD...]",
        help="the cluster, the replica (default: the first ready one), and the "
        "command (default: a login shell)",
    )


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--session",
        metavar="SID",
        help="attach to kept session SID, or start a kept session with 'new'; "
        "ctrl+] detaches and leaves it running",
    )
    p.add_argument(
        "--record",
        metavar="FILE",
        help="record to an asciicast v2 file (a directory: a new file in it)",
    )


def _split(args: argparse.Namespace) -> list[str]:
    """NAME, REPLICA and options from the words; the command after `--`."""
    words = list(args.words)
    if "--" in words:
        i = words.index("--")
        pre, cmd = words[:i], words[i + 1 :]
    else:
        pre, cmd = words, []
    p = LateParser(prog="ecotui shell", add_help=False)
    _options(p)
    p.add_argument("name")
    p.add_argument("replica", nargs="?")
    parsed = p.parse_intermixed_args(pre)
    for k, v in vars(parsed).items():
        if v is not None or not hasattr(args, k):
            setattr(args, k, v)
    return cmd


class ExpiryWarner:
    """Says once, on stderr, when 10 and then 2 minutes are left (pure but for `say`)."""

    def __init__(
        self, name: str, say: Callable[[str], None], thresholds: tuple[int, ...] = WARN_AT_S
    ) -> None:
        self.name = name
        self.say = say
        self.thresholds = sorted(thresholds, reverse=True)
        self.warned: set[int] = set()

    def check(self, expires_at: str | None, now: datetime) -> None:
        if not expires_at:
            return
        left_s = costs.remaining_us(expires_at, now) / 1e6
        for t in self.thresholds:
            if left_s <= t and t not in self.warned:
                # Also mark the larger thresholds: a late start says only the nearest.
                self.warned.update(x for x in self.thresholds if x >= t)
                mins = max(0, int(left_s // 60))
                self.say(
                    f"ecotui: {self.name} expires in {mins} min "
                    f"({wording.duration_text(costs.remaining_us(expires_at, now))} left); "
                    f"extend with: ecotui extend {self.name} HOURS"
                )
            if left_s > t:
                # extended past this one: warn again if it comes near again
                self.warned.discard(t)


async def cmd_shell(client: EcoClient, args: argparse.Namespace) -> int:
    command = _split(args)
    c = await client.cluster(args.name)
    interactive = sys.stdin.isatty()
    replica = args.replica
    if replica is None and args.session in (None, "new"):
        ready = ready_replicas(c)
        if not ready:
            print(f"ecotui: {c.name} has no ready replica ({c.status})", file=sys.stderr)
            return EXIT_REFUSED
        replica = ready[0]
    width, height = _size()
    if args.session is not None:
        sid = args.session
        if sid == "new":
            if replica is None:
                raise UsageError("a new kept session needs a REPLICA")
            s = await client.create_session(
                c.id, replica, command=command or None, tty=interactive, width=width, height=height
            )
            sid = s.id
            print(
                f"ecotui: kept session {sid} on {replica}; ctrl+] detaches, "
                f"reattach with: ecotui shell {c.name} --session {sid}",
                file=sys.stderr,
            )
        conn = await attach_session(client, c.id, sid)
        label = replica or sid
    else:
        assert replica is not None
        conn = await open_exec(client, c.id, replica, command or None, stdin=True, tty=interactive)
        label = replica
    recorder = None
    if args.record is not None:
        path = args.record
        if os.path.isdir(path):
            path = str(Path(path) / default_recording_path(c.name, label).name)
        try:
            recorder = CastWriter(path, width, height, title=f"{c.name}/{label}", env=os.environ)
        except OSError as exc:
            await conn.close()
            raise UsageError(f"cannot record to {path}: {exc.strerror or exc}") from exc
        print(f"ecotui: recording to {path}", file=sys.stderr)
    warner = ExpiryWarner(c.name, _say(interactive))
    watch = asyncio.create_task(_watch_expiry(client, c, warner))
    try:
        if interactive:
            code = await _interactive(conn, recorder, detach=args.session is not None)
        else:
            code = await _streamed(conn, recorder)
    finally:
        watch.cancel()
        if recorder is not None:
            recorder.close()
    if code == "detached":
        print(
            f"\r\necotui: detached; reattach with: ecotui shell {c.name} --session {sid}",
            file=sys.stderr,
        )
        return EXIT_OK
    return int(code)


def _say(raw: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        # Raw mode: the terminal does not turn \n into \r\n.
        sys.stderr.write(("\r\n" + text + "\r\n") if raw else (text + "\n"))
        sys.stderr.flush()

    return say


async def _watch_expiry(client: EcoClient, c: ClusterOut, warner: ExpiryWarner) -> None:
    expires = c.expires_at
    while True:
        warner.check(expires, datetime.now(UTC))
        await asyncio.sleep(POLL_S)
        with contextlib.suppress(ApiRefusal, BackendUnreachable):
            expires = (await client.cluster(c.id)).expires_at


def _size() -> tuple[int, int]:
    try:
        sz = os.get_terminal_size(sys.stdout.fileno())
        return sz.columns, sz.lines
    except OSError:
        return 80, 24


def _exit_code(conn: ExecConnection) -> int | str:
    st = conn.status
    if st is None:
        print(
            "\r\necotui: the connection closed before the shell's exit status arrived",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    if st.success:
        return EXIT_OK
    if st.exit_code is None:
        print(f"ecotui: {st.message or st.reason or 'the shell failed'}", file=sys.stderr)
        return EXIT_REFUSED
    return st.exit_code


async def _interactive(
    conn: ExecConnection, recorder: CastWriter | None, *, detach: bool
) -> int | str:
    loop = asyncio.get_running_loop()
    fd_in = sys.stdin.fileno()
    fd_out = sys.stdout.fileno()
    saved = termios.tcgetattr(fd_in)
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    detached = asyncio.Event()

    def on_key() -> None:
        try:
            data = os.read(fd_in, 65536)
        except OSError:
            data = b""
        keys.put_nowait(data)

    async def send_keys() -> None:
        while True:
            data = await keys.get()
            if not data:
                await conn.close_stdin()
                return
            if detach and DETACH in data:
                before = data.split(DETACH, 1)[0]
                await conn.send_stdin(before)
                detached.set()
                await conn.close()
                return
            await conn.send_stdin(data)

    def on_winch() -> None:
        w, h = _size()
        if recorder is not None:
            recorder.resize(w, h)
        asyncio.ensure_future(conn.resize(w, h))

    tty.setraw(fd_in)
    loop.add_reader(fd_in, on_key)
    loop.add_signal_handler(signal.SIGWINCH, on_winch)
    sender = asyncio.create_task(send_keys())
    try:
        await conn.resize(*_size())
        async for _channel, payload in conn.frames():
            if recorder is not None:
                recorder.output(payload)
            _write_all(fd_out, payload)
    finally:
        loop.remove_reader(fd_in)
        loop.remove_signal_handler(signal.SIGWINCH)
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        await conn.close()
    if detached.is_set():
        return "detached"
    return _exit_code(conn)


async def _streamed(conn: ExecConnection, recorder: CastWriter | None) -> int | str:
    pump = asyncio.create_task(pump_stdin(conn))
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        async for channel, payload in conn.frames():
            if recorder is not None:
                recorder.output(payload)
            stream = out if channel == STDOUT else err
            stream.write(payload)
            stream.flush()
    finally:
        pump.cancel()
        await conn.close()
    return _exit_code(conn)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[n:]
