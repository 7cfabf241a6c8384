"""Listening sockets from netlink sock_diag or /proc/net/tcp{,6}, and whose they
are (`ecolink.runtime.local.ports`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ecolink.runtime.local import ports
from ecolink.runtime.local.ports import dial_address, listeners_on, parse_listeners, socket_inodes

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1
   1: 00000000:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4444 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1
   1: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5252 1
"""


def test_parse_listening_sockets_only():
    assert parse_listeners(TCP, v6=False) == [("127.0.0.1", 8080, 4242), ("0.0.0.0", 8888, 4343)]
    assert parse_listeners(TCP6, v6=True) == [("::1", 8081, 5151), ("::", 8082, 5252)]


def test_wildcards_are_dialled_on_loopback():
    assert dial_address("0.0.0.0") == "127.0.0.1"
    assert dial_address("::") == "::1"
    assert dial_address("::ffff:10.0.0.5") == "10.0.0.5"
    assert dial_address("10.1.2.3") == "10.1.2.3"


def test_a_real_listener_and_its_inode():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = listeners_on(port)
        assert list(found.values()) == ["127.0.0.1"]
        assert set(found) <= socket_inodes(os.getpid())
    assert listeners_on(port) == {}


def test_netlink_and_proc_net_agree():
    with socket.socket() as s4, socket.socket(socket.AF_INET6) as s6:
        s4.bind(("127.0.0.1", 0))
        s4.listen()
        s6.bind(("::1", 0))
        s6.listen()
        for port in (s4.getsockname()[1], s6.getsockname()[1]):
            assert ports.diag_listeners_on(port) == ports.proc_listeners_on(port) != {}
        assert ports._diag_works is True
        # a connected socket on the port is no listener
        with socket.create_connection(("127.0.0.1", s4.getsockname()[1])) as c:
            assert c.getsockname()[1] not in {p for _, p, _ in ports.diag_listeners()}


def test_without_netlink_proc_net_answers(monkeypatch):
    def refused() -> list[tuple[str, int, int]]:
        raise PermissionError(13, "netlink refused")

    monkeypatch.setattr(ports, "diag_listeners", refused)
    monkeypatch.setattr(ports, "_diag_works", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert list(listeners_on(port).values()) == ["127.0.0.1"]
        assert ports._diag_works is False
        with pytest.raises(ports.Undecided):
            ports.quick_listener([os.getpid()], port)


LISTEN_IN_CHILD = """
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
files = [open(os.devnull) for _ in range(int(sys.argv[1]))]
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.fixture
def listening_child():
    procs: list[subprocess.Popen[str]] = []

    def start(extra_fds: int = 0, shell: bool = False) -> tuple[int, int]:
        argv = [sys.executable, "-c", LISTEN_IN_CHILD, str(extra_fds)]
        if shell:  # the listener is a grandchild under a shell
            argv = ["sh", "-c", '"$0" "$@"; :', *argv]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout is not None
        return p.pid, int(p.stdout.readline())

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_quick_look_finds_the_replica_tree(listening_child):
    pid, port = listening_child(shell=True)
    assert ports.quick_listener([pid], port) == "127.0.0.1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert ports.quick_listener([pid], free) is None  # nothing listens: said at once


def test_quick_look_leaves_the_hard_cases_to_the_full_one(listening_child, monkeypatch):
    pid, _ = listening_child()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        # Someone else's listener (this process) is not the replica's: not decided here.
        with pytest.raises(ports.Undecided):
            ports.quick_listener([pid], s.getsockname()[1])
    # A process with more descriptors than the quick look reads.
    many, port = listening_child(extra_fds=40)
    monkeypatch.setattr(ports, "QUICK_FDS", 32)
    with pytest.raises(ports.Undecided):
        ports.quick_listener([many], port)
    assert ports.replica_listener("no-marker", [many], port) == "127.0.0.1"
