"""Which ports a local replica listens on (Linux), for port-forward.

A port-forward to a local replica may reach only a port that one of the
replica's own processes listens on: the listening sockets come from the
kernel's socket diagnostics (netlink `SOCK_DIAG_BY_FAMILY`, listening sockets
only: a few records), else from /proc/net/tcp and /proc/net/tcp6 (every socket
of the machine, TIME_WAIT included: megabytes on a busy one, too slow to read at
every forwarded connection); their owners from the socket inodes in
/proc/PID/fd of the replica's processes (those carrying its marker, plus the
descendants of its main process).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable

from ecolink.runtime.local.proc import ProcInfo, children_of, find_marked, tracked

LISTEN = "0A"


def _addr4(hex_addr: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(hex_addr)[::-1]))


def _addr6(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def parse_listeners(text: str, *, v6: bool) -> list[tuple[str, int, int]]:
    """(address, port, inode) of every listening socket in a /proc/net/tcp{,6} table."""
    out: list[tuple[str, int, int]] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != LISTEN:
            continue
        addr, _, port = parts[1].partition(":")
        try:
            host = _addr6(addr) if v6 else _addr4(addr)
            out.append((host, int(port, 16), int(parts[9])))
        except ValueError:
            continue
    return out


# netlink sock_diag (linux/sock_diag.h, linux/inet_diag.h)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10
_NLMSG_HDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
# (sport, dport big-endian; src, dst 16 bytes each; interface; cookie).
_DIAG_REQ = struct.Struct("=BBBBI48s")
# inet_diag_msg: family, state, timer, retrans, sockid, expires, rqueue, wqueue, uid, inode
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16s4s8sIIIII")


def diag_request(family: int, seq: int) -> bytes:
    """A dump request for the listening TCP sockets of `family`."""
    body = _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN, b"")
    head = _NLMSG_HDR.pack(
        _NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, seq, 0
    )
    return head + body


def parse_diag(data: bytes) -> tuple[list[tuple[str, int, int]], bool]:
    """(address, port, inode) of the sockets in a netlink answer, and whether the
    dump is over. OSError when the kernel answered an error."""
    out: list[tuple[str, int, int]] = []
    off = 0
    while off + _NLMSG_HDR.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HDR.unpack_from(data, off)
        if length < _NLMSG_HDR.size:
            break
        body = off + _NLMSG_HDR.size
        if kind == _NLMSG_DONE:
            return out, True
        if kind == _NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, body)
            if errno:
                raise OSError(-errno, os.strerror(-errno))
            return out, True
        if kind == _SOCK_DIAG_BY_FAMILY and body + _DIAG_MSG.size <= len(data):
            family, state, _, _, sport, _, src, *_, inode = _DIAG_MSG.unpack_from(data, body)
            if state == _TCP_LISTEN and inode:
                if family == socket.AF_INET:
                    host = str(ipaddress.IPv4Address(src[:4]))
                else:
                    host = str(ipaddress.IPv6Address(src))
                out.append((host, int.from_bytes(sport, "big"), inode))
        off += (length + 3) & ~3
    return out, False


def diag_listeners() -> list[tuple[str, int, int]]:
    """(address, port, inode) of every listening TCP socket, from netlink sock_diag.
    OSError where the kernel (or a sandbox) does not offer it."""
    out: list[tuple[str, int, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(0.5)  # the kernel answers at once: a longer wait is a sandbox
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            nl.sendall(diag_request(family, seq))
            done = False
            while not done:
                found, done = parse_diag(nl.recv(1 << 16))
                out += found
    return out


_diag_works: bool | None = None  # None: not tried yet


class Undecided(Exception):
    """The quick look (`quick_listener`) cannot tell: `replica_listener` (in a
    thread) can."""


def diag_listeners_on(port: int) -> dict[int, str] | None:
    """listeners_on from netlink; None where netlink does not answer."""
    global _diag_works
    if _diag_works is False:
        return None
    try:
        listening = diag_listeners()
    except OSError:
        if _diag_works is None:
            _diag_works = False  # not offered here: /proc/net from now on
        return None
    _diag_works = True
    return {inode: dial_address(h) for h, p, inode in listening if p == port}


def listeners_on(port: int) -> dict[int, str]:
    """inode -> the address to dial, for every socket listening on `port`."""
    found = diag_listeners_on(port)
    return found if found is not None else proc_listeners_on(port)


def proc_listeners_on(port: int) -> dict[int, str]:
    """listeners_on from /proc/net/tcp{,6}: every socket of the machine, parsed."""
    found: dict[int, str] = {}
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(f"/proc/net/{name}") as f:
                text = f.read()
        except OSError:
            continue
        for host, p, inode in parse_listeners(text, v6=v6):
            if p != port or inode == 0:
                continue
            found[inode] = dial_address(host)
    return found


def dial_address(bound: str) -> str:
    """A wildcard bind is reached on loopback; a specific address as it is."""
    if bound == "0.0.0.0":
        return "127.0.0.1"
    if bound == "::":
        return "::1"
    if bound.startswith("::ffff:"):
        return bound.removeprefix("::ffff:")
    return bound


def socket_inodes(pid: int, most: int | None = None) -> set[int]:
    """The inodes of the sockets `pid` holds. With `most`: Undecided when it holds
    more descriptors than that (a bound on the work)."""
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    if most is not None and len(fds) > most:
        raise Undecided(f"process {pid} holds {len(fds)} descriptors")
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def _pick(listeners: dict[int, str], hits: Iterable[int]) -> str:
    # Prefer IPv4 loopback when the socket is dual-stack.
    return sorted((listeners[i] for i in hits), key=lambda a: ":" in a)[0]


# The quick look reads at most this many processes, each with at most this many
# descriptors: work small enough for the event loop.
QUICK_PROCS = 16
QUICK_FDS = 256


def quick_listener(roots: Iterable[int], port: int) -> str | None:
    """`replica_listener` for the common case, cheap enough to run on the event
    loop at every forwarded connection: the listening sockets from netlink (None
    when nothing listens on `port`), their owner among the replica's main process
    (`roots`, live children of this backend) and its descendants. Undecided when
    netlink does not answer, the process tree is larger than the quick look reads,
    or the owner is elsewhere (an exec, a daemon that left the tree, someone else)."""
    listeners = diag_listeners_on(port)
    if listeners is None:
        raise Undecided("no socket diagnostics here")
    if not listeners:
        return None
    todo = [r for r in roots if r > 0]
    for _ in range(QUICK_PROCS):
        if not todo:
            break
        pid = todo.pop()
        hits = socket_inodes(pid, QUICK_FDS) & listeners.keys()
        if hits:
            return _pick(listeners, hits)
        todo += children_of(pid)
    raise Undecided(f"no process of the quick look listens on port {port}")


def replica_listener(uid: str, roots: Iterable[int], port: int) -> str | None:
    """The address to dial for `port` when a process of the replica (marker `uid`)
    listens on it; None otherwise (nobody, or another process on this machine)."""
    listeners = listeners_on(port)
    if not listeners:
        return None

    def search(procs: Iterable[ProcInfo]) -> str | None:
        for proc in procs:
            hits = socket_inodes(proc.pid) & listeners.keys()
            if hits:
                return _pick(listeners, hits)
        return None

    def match(m: str) -> bool:
        return m == uid

    roots = list(roots)
    # The replica's process tree and the execs in it (children of this backend) are
    # found without reading all of /proc; the full scan only when that finds nothing.
    return search(tracked(match, roots).values()) or search(find_marked(match, roots))
