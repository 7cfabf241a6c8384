"""Which ports a local replica listens on (Linux /proc), for port-forward.

A port-forward to a local replica may reach only a port that one of the
replica's own processes listens on: the listening sockets come from
/proc/net/tcp and /proc/net/tcp6, their owners from the socket inodes in
/proc/PID/fd of the replica's processes (those carrying its marker, plus the
descendants of its main process).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable

from ecolink.runtime.local.proc import ProcInfo, find_marked, tracked

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


def listeners_on(port: int) -> dict[int, str]:
    """inode -> the address to dial, for every socket listening on `port`."""
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


def socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


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
                # Prefer IPv4 loopback when the socket is dual-stack.
                return sorted((listeners[i] for i in hits), key=lambda a: ":" in a)[0]
        return None

    def match(m: str) -> bool:
        return m == uid

    roots = list(roots)
    # The replica's process tree and the execs in it (children of this backend) are
    # found without reading all of /proc; the full scan only when that finds nothing.
    return search(tracked(match, roots).values()) or search(find_marked(match, roots))
