"""Copying files and directories to and from replicas over the exec WebSocket.

A tar stream is produced or consumed on the replica's side (`tar`, as `kubectl
cp` does, so both runtimes work alike) and on ours by `tarfile` in streaming
mode; memory stays bounded on both sides (a pipe between the WebSocket and the
tar thread, and the exec bridge's back-pressure). Modes, mtimes and symlinks
(as links) are kept.

Nothing half-copied is left behind: a download is unpacked into a hidden
directory beside the destination and renamed into place at the end; an upload
likewise on the replica's side, whose script removes its hidden directory when
it fails or is ended (a connection that drops ends the exec); when it was killed
outright (a replica restart), the client removes it once the replica answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from websockets.exceptions import ConnectionClosed

from ecotui.client.exec import STDOUT, ExecConnection, open_exec
from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient

CHUNK = 64 * 1024
_REMOTE = re.compile(r"^([a-z][a-z0-9-]{0,39})(?:/([A-Za-z0-9][A-Za-z0-9._-]*))?:(.*)$")

# The replica-side scripts (sh): "$1" the path, "$2" a name.
PROBE = r"""p="$1"
if [ -L "$p" ] && [ ! -e "$p" ]; then echo "link 0"
elif [ -d "$p" ]; then echo "dir $(du -sk "$p" 2>/dev/null | cut -f1)"
elif [ -e "$p" ]; then echo "file $(wc -c < "$p")"
else echo missing; fi"""
PACK = r'''p="$1"; cd "$(dirname "$p")" && exec tar cf - "$(basename "$p")"'''
# "$3" a token naming the hidden directory, so the client can remove it after a
# failure that killed this script (a replica restart SIGKILLs what is left).
UNPACK = r"""dst="$1"; name="$2"; token="$3"
if [ -d "$dst" ]; then parent="$dst"; final="$dst/$name"
else parent=$(dirname "$dst"); final="$dst"; fi
if [ ! -d "$parent" ]; then echo "$parent: no such directory" >&2; exit 2; fi
tmp="$parent/.ecotui-cp.$token"
mkdir -m 700 "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 143' TERM INT HUP
if [ "$4" = raw ]; then cat > "$tmp/$name" || exit 1
else tar xpf - -C "$tmp" || exit 1; fi
if [ -d "$final" ] && [ ! -d "$tmp/$name" ]; then echo "$final: is a directory" >&2; exit 21; fi
if [ -e "$final" ] && [ -d "$tmp/$name" ]; then echo "$final: already exists" >&2; exit 17; fi
mv -f "$tmp/$name" "$final" || exit 1"""
CLEANUP = r'''dst="$1"
if [ -d "$dst" ]; then parent="$dst"; else parent=$(dirname "$dst"); fi
rm -rf "$parent/.ecotui-cp.$2"'''


class CopyError(Exception):
    """A copy failed; the message says why and that nothing was left behind."""


@dataclass(frozen=True)
class RemotePath:
    cluster: str
    replica: str | None
    path: str

    def __str__(self) -> str:
        r = f"/{self.replica}" if self.replica else ""
        return f"{self.cluster}{r}:{self.path}"


def parse_location(text: str) -> RemotePath | None:
    """`NAME[/REPLICA]:PATH` -> RemotePath; a local path (or `-`) -> None."""
    if text == "-" or text.startswith(("/", ".", "~")):
        return None
    m = _REMOTE.match(text)
    if not m:
        return None
    return RemotePath(m.group(1), m.group(2), m.group(3) or ".")


# -- progress ------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def eta_text(seconds: float) -> str:
    s = int(max(0, seconds))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Progress:
    """Bytes done out of a total, drawn on one line of a terminal (else silent)."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 24,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.out = out
        self.clock = clock
        self.start = clock()
        self.width = width
        self._drawn = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if self.out is not None and now - self._drawn >= 0.1:
            self._drawn = now
            self.draw(now)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(1e-6, now - self.start)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            fill = int(frac * self.width)
            bar = "#" * fill + "-" * (self.width - fill)
            left = (self.total - self.done) / rate if rate > 0 else 0
            return (
                f"{self.label} [{bar}] {frac * 100:3.0f}% {human_bytes(self.done)} / "
                f"{human_bytes(self.total)}  {human_bytes(rate)}/s  ETA {eta_text(left)}"
            )
        return f"{self.label} {human_bytes(self.done)}  {human_bytes(rate)}/s"

    def draw(self, now: float | None = None) -> None:
        if self.out is not None:
            self.out.write("\r\x1b[K" + self.line(now))
            self.out.flush()

    def finish(self) -> None:
        if self.out is not None:
            self.draw()
            self.out.write("\n")
            self.out.flush()


def progress_for(label: str, total: int | None) -> Progress:
    return Progress(label, total, out=sys.stderr if sys.stderr.isatty() else None)


# -- replica-side helpers ---------------------------------------------------------------


async def _collect(conn: ExecConnection) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    async for channel, payload in conn.frames():
        (out if channel == STDOUT else err).extend(payload[: 1 << 20])
    return bytes(out), bytes(err)


def _failure(conn: ExecConnection, err: bytes, what: str) -> CopyError | None:
    st = conn.status
    if st is None:
        return CopyError(f"{what}: the connection to the backend was lost")
    if st.success:
        return None
    text = err.decode("utf-8", "replace").strip().splitlines()
    reason = (text[-1] if text else "") or st.message or "failed"
    return CopyError(f"{what}: {reason.removeprefix('tar: ')}")


async def probe(client: EcoClient, cluster: str, replica: str, path: str) -> tuple[str, int]:
    """("file"|"dir"|"link"|"missing", approximate size in bytes)."""
    conn = await open_exec(client, cluster, replica, ["sh", "-c", PROBE, "sh", path])
    try:
        out, err = await _collect(conn)
    finally:
        await conn.close()
    fail = _failure(conn, err, path)
    if fail is not None:
        raise fail
    words = out.decode().split()
    kind = words[0] if words else "missing"
    size = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
    return kind, size * 1024 if kind == "dir" else size


# -- download ----------------------------------------------------------------------------


async def _pipe_frames(conn: ExecConnection, fd: int, progress: Progress) -> bytes:
    """stdout frames into a pipe (blocking writes in a thread: bounded memory); stderr kept."""
    loop = asyncio.get_running_loop()
    err = bytearray()

    def write_all(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    try:
        async for channel, payload in conn.frames():
            if channel == STDOUT:
                await loop.run_in_executor(None, write_all, payload)
                progress.add(len(payload))
            else:
                err.extend(payload[: 1 << 16])
    except BrokenPipeError:
        pass  # the reader stopped (a bad archive): reported by it
    return bytes(err)


def _final_destination(dst: Path, name: str) -> Path:
    return dst / name if dst.is_dir() else dst


async def download(
    client: EcoClient,
    cluster: str,
    replica: str,
    src: str,
    dst: str,
    *,
    label: str | None = None,
    progress: Progress | None = None,
) -> Path | None:
    """Copy `src` of the replica to the local `dst` ("-": standard output). Returns
    where it landed (None for standard output)."""
    kind, size = await probe(client, cluster, replica, src)
    if kind == "missing":
        raise CopyError(f"{replica}:{src}: no such file or directory")
    if progress is None:
        progress = progress_for(label or f"{replica}:{src}", size or None)
    elif progress.total is None:
        progress.total = size or None
    if dst == "-":
        await _download_stdout(client, cluster, replica, src, kind, progress)
        return None
    name = os.path.basename(src.rstrip("/")) or "root"
    target = Path(dst)
    final = _final_destination(target, name)
    parent = final.parent
    if not parent.is_dir():
        raise CopyError(f"{parent}: no such directory")
    if final.is_dir() and kind != "dir":
        raise CopyError(f"{final}: is a directory")
    if final.exists() and kind == "dir" and not final.is_dir():
        raise CopyError(f"{final}: not a directory")
    if final.is_dir() and kind == "dir":
        raise CopyError(f"{final}: already exists")
    tmp = Path(tempfile.mkdtemp(prefix=".ecotui-cp.", dir=parent))
    try:
        await _unpack_from(client, cluster, replica, src, tmp, progress)
        got = tmp / name
        if not got.exists() and not got.is_symlink():
            raise CopyError(f"{replica}:{src}: nothing arrived")
        os.replace(got, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress.finish()
    return final


async def _download_stdout(
    client: EcoClient, cluster: str, replica: str, src: str, kind: str, progress: Progress
) -> None:
    command = ["cat", "--", src] if kind == "file" else ["sh", "-c", PACK, "sh", src]
    conn = await open_exec(client, cluster, replica, command)
    out = sys.stdout.buffer
    err = bytearray()
    try:
        async for channel, payload in conn.frames():
            if channel == STDOUT:
                out.write(payload)
                progress.add(len(payload))
            else:
                err.extend(payload[: 1 << 16])
        out.flush()
    finally:
        await conn.close()
    fail = _failure(conn, bytes(err), f"{replica}:{src}")
    if fail is not None:
        raise fail
    progress.finish()


async def _unpack_from(
    client: EcoClient, cluster: str, replica: str, src: str, into: Path, progress: Progress
) -> None:
    conn = await open_exec(client, cluster, replica, ["sh", "-c", PACK, "sh", src])
    r, w = os.pipe()
    problem: list[BaseException] = []

    def unpack() -> None:
        try:
            with (
                os.fdopen(r, "rb", buffering=CHUNK) as f,
                tarfile.open(fileobj=f, mode="r|", bufsize=16 * CHUNK) as t,
            ):
                t.extractall(into, filter="tar")
                # drain whatever follows the archive's end
                while f.read(CHUNK):
                    pass
        except BaseException as exc:  # reported below
            problem.append(exc)

    worker = threading.Thread(target=unpack, name="ecotui-cp-unpack", daemon=True)
    worker.start()
    try:
        err = await _pipe_frames(conn, w, progress)
    finally:
        os.close(w)
        await conn.close()
        await asyncio.to_thread(worker.join)
    fail = _failure(conn, err, f"{replica}:{src}")
    if fail is not None:
        raise fail
    if problem:
        exc = problem[0]
        raise CopyError(f"{replica}:{src}: cannot unpack: {exc}") from exc


# -- upload --------------------------------------------------------------------------------


def local_size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


async def upload(
    client: EcoClient,
    cluster: str,
    replica: str,
    src: str,
    dst: str,
    *,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
) -> None:
    """Copy the local `src` ("-": `stdin`) to `dst` in the replica."""
    token = secrets.token_hex(6)
    if src == "-":
        name = os.path.basename(dst.rstrip("/"))
        if not name or dst.endswith("/"):
            raise CopyError(f"{dst}: give a file name to copy standard input to")
        command = ["sh", "-c", UNPACK, "sh", dst, name, token, "raw"]
        source: Callable[[int], None] = _stream_file(stdin or sys.stdin.buffer)
        total = None
    else:
        path = Path(src)
        if not path.exists() and not path.is_symlink():
            raise CopyError(f"{src}: no such file or directory")
        name = path.name or path.resolve().name
        command = ["sh", "-c", UNPACK, "sh", dst, name, token]
        source = _stream_tar(path, name)
        total = local_size(path)
    progress = progress or progress_for(f"{src} -> {replica}:{dst}", total)
    conn = await open_exec(client, cluster, replica, command, stdin=True)
    r, w = os.pipe()
    problem: list[BaseException] = []

    def produce() -> None:
        try:
            source(w)
        except BaseException as exc:
            problem.append(exc)
        finally:
            with contextlib.suppress(OSError):
                os.close(w)

    worker = threading.Thread(target=produce, name="ecotui-cp-pack", daemon=True)
    worker.start()
    loop = asyncio.get_running_loop()
    err = bytearray()

    async def collect() -> None:
        async for channel, payload in conn.frames():
            if channel != STDOUT:
                err.extend(payload[: 1 << 16])

    reader = asyncio.create_task(collect())
    try:
        while True:
            chunk = await loop.run_in_executor(None, os.read, r, CHUNK)
            if not chunk or reader.done():
                break
            try:
                await conn.send_stdin(chunk)
            except ConnectionClosed:
                break
            progress.add(len(chunk))
        if not reader.done():
            with contextlib.suppress(ConnectionClosed):
                await conn.close_stdin()
        await reader
    finally:
        os.close(r)
        reader.cancel()
        await conn.close()
        await asyncio.to_thread(worker.join)
    fail = _failure(conn, bytes(err), f"{replica}:{dst}")
    if fail is not None:
        await _cleanup(client, cluster, replica, dst, token)
        # (the reader then saw a broken pipe: a consequence, not the cause)
        raise await _upload_failure(client, cluster, replica, dst, conn, bytes(err), fail)
    if problem:
        raise CopyError(f"{src}: cannot read: {problem[0]}")
    progress.finish()


# What a write that found no room says on the replica's side (tar, cat, sh).
_NO_SPACE = ("No space left on device", "Disk quota exceeded")
# How long a failed upload waits for a replica that was being stopped to say why.
STOPPED_WAIT_S = 5.0


async def _upload_failure(
    client: EcoClient,
    cluster: str,
    replica: str,
    dst: str,
    conn: ExecConnection,
    err: bytes,
    fail: CopyError,
) -> CopyError:
    """The failure of an upload in words: "no space left on the replica" when a write
    found no room, or when the replica was stopped for its disk quota (the local
    runtime's limit) while the copy ran; why the replica went away when it did."""
    what = f"{replica}:{dst}"
    text = err.decode("utf-8", "replace")
    for line in text.splitlines():
        if any(words in line for words in _NO_SPACE):
            return CopyError(f"{what}: no space left on the replica ({line.strip()})")
    st = conn.status
    killed = (
        st is None or st.exit_code in (137, 143) or (st.message or "") in ("Terminated", "Killed")
    )
    if not killed:
        return fail
    deadline = time.monotonic() + STOPPED_WAIT_S
    while True:
        try:
            c = await client.cluster(cluster)
        except (ApiRefusal, BackendUnreachable):
            return fail
        state = next((r for r in c.replica_states if r.name == replica), None)
        if state is None:
            return CopyError(f"{what}: {replica} went away during the copy")
        reason = state.reason or ""
        if "disk quota" in reason:
            return CopyError(f"{what}: no space left on the replica: {replica} {reason}")
        if state.phase != "Running" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if state.phase != "Running":
        why = f": {state.reason}" if state.reason else ""
        return CopyError(f"{what}: {replica} went away during the copy ({state.phase}{why})")
    return fail


async def _cleanup(
    client: EcoClient, cluster: str, replica: str, dst: str, token: str, *, within: float = 15.0
) -> None:
    """Remove the hidden directory of a failed upload (the script removes it itself
    unless it was killed); retried while the replica comes back from a restart."""
    deadline = time.monotonic() + within
    while True:
        try:
            conn = await open_exec(
                client, cluster, replica, ["sh", "-c", CLEANUP, "sh", dst, token]
            )
            try:
                await _collect(conn)
            finally:
                await conn.close()
            if conn.status is not None and conn.status.success:
                return
        except (ApiRefusal, BackendUnreachable):
            pass
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)


def _stream_tar(path: Path, name: str) -> Callable[[int], None]:
    def run(fd: int) -> None:
        with (
            os.fdopen(fd, "wb", buffering=CHUNK, closefd=False) as f,
            tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT, bufsize=16 * CHUNK) as t,
        ):
            t.add(path, arcname=name, recursive=True)

    return run


def _stream_file(src: IO[bytes]) -> Callable[[int], None]:
    def run(fd: int) -> None:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]

    return run
