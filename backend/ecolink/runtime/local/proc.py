"""Process plumbing for the local runtime (Linux): subreaper, /proc scans, kill sweeps.

Every process the local runtime starts carries `ECO_REPLICA_UID` in its environment;
children inherit it, so a scan of /proc finds a replica's grandchildren and
double-forked daemons even after they left its session. The backend makes itself a
child subreaper, so orphans of replicas are re-parented to it (not to init), and this
module reaps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import signal
import socket
import subprocess
import termios
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
MARKER = "ECO_REPLICA_UID"
_MARKER_B = MARKER.encode() + b"="

# Pids of children a Popen of ours owns and will wait for itself: never reaped here.
MANAGED: set[int] = set()


def normal_scheduling(pid: int) -> None:
    """Put a child just started back under the normal scheduling policy: a child
    inherits its parent thread's, and the server's front runs as SCHED_BATCH
    (`ecolink.front.server.apply_scheduling`), which is for the front alone, not
    for replicas or shells."""
    getter = getattr(os, "sched_getscheduler", None)
    with contextlib.suppress(OSError):
        if getter is not None and getter(pid) == os.SCHED_BATCH:
            os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))


def _own_group_without_terminal() -> None:  # runs in the child, between fork and exec
    """Leave the controlling terminal this process inherited, then lead a process
    group of its own. Not being a session leader, it alone gives the terminal up
    (TIOCNOTTY). Where that cannot be done, a session of its own is the fallback:
    that has no terminal either. Module-level imports only: nothing here may take a
    lock another thread held at the fork."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:  # no controlling terminal after all
        os.setpgid(0, 0)
        return
    try:
        fcntl.ioctl(fd, termios.TIOCNOTTY)
    except OSError:
        os.setsid()
        return
    finally:
        os.close(fd)
    os.setpgid(0, 0)


def replica_group_args() -> dict[str, Any]:
    """`subprocess.Popen` arguments that start a replica as the leader of a process
    group of its own (stopped with `os.killpg`), inside this process's session, and
    never with this process's controlling terminal.

    Not a session of its own: where the kernel groups tasks by session
    (`/proc/sys/kernel/sched_autogroup_enabled`, on in most distributions' kernels),
    each session is one scheduling group, weighed against the others as a whole. A
    replica alone in its group was measured to stall for 20-55 ms at a time while
    runnable when a proxy sent it requests (p99 through the service URL 2.5-3x
    nginx's; nginx's own p99 at 32 connections 16 ms instead of 2.5); in this
    process's group it is scheduled like any task beside the front (bench/proxy.py).
    A terminal is dropped only where this process has one; otherwise the start
    needs no Python in the child."""
    if _has_tty(os.getpid()):
        return {"preexec_fn": _own_group_without_terminal}
    return {"process_group": 0}


def make_subreaper(on: bool = True) -> bool:
    """Make this process a child subreaper (or stop being one); False where the
    kernel refuses."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0)
    except OSError:
        return False


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start_time: int  # clock ticks since boot: with the pid, identifies a process


def proc_info(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcInfo(
            pid=pid,
            state=rest[0].decode(),
            ppid=int(rest[1]),
            pgid=int(rest[2]),
            sid=int(rest[3]),
            start_time=int(rest[19]),
        )
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    info = proc_info(pid)
    return info.start_time if info else None


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (zombies included), from each of its threads'
    `children` file: a few small reads instead of a scan of all /proc."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def marker_of(pid: int) -> str | None:
    """The replica marker in a process's environment (None if absent or unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return None
    i = env.find(_MARKER_B)
    while i > 0 and env[i - 1] != 0:  # only at the start of an entry
        i = env.find(_MARKER_B, i + 1)
    if i < 0:
        return None
    j = env.find(b"\0", i)
    return env[i + len(_MARKER_B) : j if j >= 0 else len(env)].decode(errors="replace")


def _live(pid: int) -> ProcInfo | None:
    info = proc_info(pid)
    return info if info is not None and info.state != "Z" else None


def _descendants(chosen: dict[int, ProcInfo]) -> None:
    """Add every live descendant of `chosen` (by the children files) in place."""
    todo = list(chosen)
    while todo:
        for child in children_of(todo.pop()):
            if child not in chosen:
                info = _live(child)
                if info is not None:
                    chosen[child] = info
                    todo.append(child)


def find_marked(match: Callable[[str], bool], roots: Iterable[int] = ()) -> list[ProcInfo]:
    """Full scan: live processes whose marker satisfies `match`, plus the sessions,
    process groups and descendants of `roots` (which covers processes that emptied
    their environment). Reads every process's environ: costly on a busy machine, so
    only for a last sweep, never in a polling loop (`tracked` is the cheap way)."""
    me = os.getpid()
    root_set = {r for r in roots if r > 0}
    chosen: dict[int, ProcInfo] = {}
    for pid in all_pids():
        if pid == me:
            continue
        m = marker_of(pid)
        if m is not None and match(m):
            info = _live(pid)
        elif root_set:
            info = _live(pid)
            if info is not None and not (
                pid in root_set or info.sid in root_set or info.pgid in root_set
            ):
                info = None
        else:
            continue
        if info is not None:
            chosen[pid] = info
    _descendants(chosen)
    return list(chosen.values())


def tracked(
    match: Callable[[str], bool], roots: Iterable[int], known: Iterable[ProcInfo] = ()
) -> dict[int, ProcInfo]:
    """Cheap discovery without scanning /proc: `roots` and `known` processes still
    alive, their descendants, and the orphans this process (a child subreaper)
    inherited whose session or group is a root's or whose marker matches (that is
    where double-forked daemons end up)."""
    me = os.getpid()
    root_set = {r for r in roots if r > 0}
    chosen: dict[int, ProcInfo] = {}
    for r in root_set:
        info = _live(r)
        if info is not None:
            chosen[r] = info
    for p in known:
        info = _live(p.pid)
        if info is not None and info.start_time == p.start_time:
            chosen[p.pid] = info
    for pid in children_of(me):
        if pid in chosen:
            continue
        info = _live(pid)
        if info is None:
            continue
        if info.sid in root_set or info.pgid in root_set:
            chosen[pid] = info
            continue
        m = marker_of(pid)
        if m is not None and match(m):
            chosen[pid] = info
    _descendants(chosen)
    return chosen


def signal_all(procs: Iterable[ProcInfo], sig: int) -> None:
    for p in procs:
        # Only signal the process we saw (a reused pid has another start time).
        if start_time(p.pid) == p.start_time:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p.pid, sig)


def alive(procs: Iterable[ProcInfo]) -> list[ProcInfo]:
    out = []
    for p in procs:
        info = proc_info(p.pid)
        if info is not None and info.start_time == p.start_time and info.state != "Z":
            out.append(p)
    return out


def reap_orphans() -> int:
    """Reap zombie children of this process that nobody else waits for: those the
    subreaper inherited. Children in MANAGED are never touched. Reads only this
    process's children files, not all of /proc."""
    n = 0
    for pid in children_of(os.getpid()):
        if pid in MANAGED:
            continue
        info = proc_info(pid)
        if info is None or info.state != "Z":
            continue
        # Re-check: a child owned by other code has its pid in no marker set; its
        # owner waits for it. Inherited orphans carry no Popen: reap those only.
        if _owned_elsewhere(pid):
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
            n += 1
    return n


# Pids of children started by other code in this process (subprocess.Popen keeps them
# in its private list only once they are garbage; live Popen objects are unknown to
# us), so a zombie is only reaped after it has stayed a zombie for a full sweep.
_zombie_seen: dict[int, int] = {}


def _owned_elsewhere(pid: int) -> bool:
    st = start_time(pid)
    if st is None:
        return True
    if _zombie_seen.get(pid) == st:
        _zombie_seen.pop(pid, None)
        return False
    _zombie_seen[pid] = st
    return True


def reap_orphans_now(pids: Iterable[int]) -> None:
    """Reap zombies we know are ours (orphans we just killed)."""
    me = os.getpid()
    for pid in pids:
        if pid in MANAGED:
            continue
        info = proc_info(pid)
        if info is not None and info.ppid == me and info.state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _has_tty(pid: int) -> bool:
    """Whether the process has a controlling terminal (tty_nr in its stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2 :].split()[4]) != 0
    except (OSError, IndexError, ValueError):
        return False


def term_groups_and_wait_sync(
    match: Callable[[str], bool], root: int | None, grace_s: float, poll_s: float = 0.05
) -> None:
    """The start of a graceful stop: SIGTERM, once, to the process group of `root`
    (the replica's own process) and to that of every child of this process whose
    marker matches (what was started in the replica through exec: shells, kept
    sessions, copies), then wait up to `grace_s` for those group leaders to exit.
    Their children are not signalled (as a container's are not): a drain may start
    helpers. What is left is for `kill_tree_sync`. Blocking (run it in a thread)."""
    import time

    me = os.getpid()
    leaders: list[ProcInfo] = []
    if root is not None and root > 0:
        info = _live(root)
        if info is not None:
            leaders.append(info)
    for pid in children_of(me):
        if pid == root:
            continue
        info = _live(pid)
        if info is None or info.pgid != pid:
            continue
        m = marker_of(pid)
        if m is not None and match(m):
            leaders.append(info)
    for p in leaders:
        if start_time(p.pid) == p.start_time:
            # A shell on a terminal ignores SIGTERM: its terminal hangs up (SIGHUP),
            # as when its window closes.
            sigs = (
                [signal.SIGHUP, signal.SIGTERM]
                if p.pid != root and _has_tty(p.pid)
                else [signal.SIGTERM]
            )
            for sig in sigs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, sig)
    deadline = time.monotonic() + grace_s
    while alive(leaders) and time.monotonic() < deadline:
        time.sleep(poll_s)


def kill_tree_sync(
    match: Callable[[str], bool],
    roots: Iterable[int],
    grace_s: float,
    poll_s: float = 0.05,
    *,
    full_scan: bool = True,
) -> int:
    """SIGTERM everything matched, wait up to `grace_s`, then SIGKILL what is left.
    Blocking (run it in a thread). Returns how many processes were signalled.

    While waiting, only the processes already known are polled (plus their new
    children and inherited orphans: `tracked`). With `full_scan`, one scan of all
    /proc at the start finds what tracking cannot (a backend that is no subreaper,
    leftovers of an earlier backend); `sweep_sync` is the scan for the end."""
    roots = [r for r in roots if r > 0]
    seen = tracked(match, roots)
    if full_scan:
        for p in find_marked(match, roots):
            seen.setdefault(p.pid, p)
    if not seen:
        return 0
    for r in roots:  # the whole process group of a root, in one go
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(r, signal.SIGTERM)
    return _term_then_kill(match, seen, grace_s, poll_s)


def _term_then_kill(
    match: Callable[[str], bool], seen: dict[int, ProcInfo], grace_s: float, poll_s: float
) -> int:
    """SIGTERM `seen`, poll only them (and what `tracked` adds) until they are gone
    or `grace_s` passed, then SIGKILL the rest."""
    import time

    signal_all(seen.values(), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        reap_orphans_now(seen)
        # Children forked during the grace period (and their orphans) get TERM too.
        left = alive(seen.values())
        for pid, p in tracked(match, (), left).items():
            if pid not in seen:
                seen[pid] = p
                signal_all([p], signal.SIGTERM)
                left.append(p)
        if not left:
            return len(seen)
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    for _ in range(5):
        left = alive(seen.values())
        for pid, p in tracked(match, (), left).items():
            if pid not in seen:
                seen[pid] = p
                left.append(p)
        if not left:
            break
        signal_all(left, signal.SIGKILL)
        time.sleep(0.02)
    reap_orphans_now(seen)
    return len(seen)


def kill_now_sync(
    match: Callable[[str], bool], roots: Iterable[int], *, full_scan: bool = True
) -> int:
    """SIGKILL everything matched at once (leftovers of a run that already ended).
    Without `full_scan`, only what `tracked` finds (this process's inherited orphans)."""
    import time

    total = 0
    roots = list(roots)
    for _ in range(5):
        found = tracked(match, roots)
        if full_scan:
            for p in find_marked(match, roots):
                found.setdefault(p.pid, p)
        if not found:
            break
        total += len(found)
        signal_all(found.values(), signal.SIGKILL)
        time.sleep(0.02)
        reap_orphans_now(found)
    return total


def sweep_sync(match: Callable[[str], bool], grace_s: float, poll_s: float = 0.05) -> int:
    """The last sweep after a stop or terminate: one full scan for processes still
    carrying a matching marker (escapees no tracking found). Only if there are any
    are they ended (TERM, grace, KILL) and the scan repeated."""
    total = 0
    for _ in range(3):
        procs = find_marked(match)
        if not procs:
            break
        total += _term_then_kill(match, {p.pid: p for p in procs}, grace_s, poll_s)
    return total


def free_port() -> int:
    """A free loopback TCP port (bound and released; the replica binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ChildExit:
    """Await the exit of a Popen child via a pidfd, without a SIGCHLD handler or a
    waiting thread. `wait()` reaps it and returns its exit code (128+N for signal N,
    as containers report it)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        MANAGED.add(proc.pid)
        self._fd = os.pidfd_open(proc.pid)
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(self._fd, self._ready)

    def _ready(self) -> None:
        rc = self.proc.poll()
        if rc is None:
            return  # spurious
        MANAGED.discard(self.proc.pid)
        self._close()
        if not self._done.done():
            self._done.set_result(128 - rc if rc < 0 else rc)

    def _close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    @property
    def exited(self) -> bool:
        return self._done.done()

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def future(self) -> asyncio.Future[int]:
        return self._done

    def close(self) -> None:
        self._close()
