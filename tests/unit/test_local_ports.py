"""Reading listening sockets from /proc/net/tcp{,6} (`ecolink.runtime.local.ports`)."""

from __future__ import annotations

import os
import socket

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
