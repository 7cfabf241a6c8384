"""The front's pure parts: the one Cookie parser, Set-Cookie scoping, and how a
cluster's pool orders its replicas (least outstanding, round-robin, back-off)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecolink.front import cookies
from ecolink.front.balancer import Pool
from ecolink.front.proxy import ErrorLog


def test_session_tokens_and_strip_read_the_same_pairs() -> None:
    forms = [
        "a=1; eco_session=T; b=2",
        "a=1, eco_session=T, b=2",
        "a=1 eco_session=T b=2",
        "a=1;eco_session=T;b=2",
        "eco_session=T",
        "  eco_session=T  ,a=1",
    ]
    for value in forms:
        assert cookies.session_tokens([value]) == ["T"], value
        stripped = cookies.strip_session(value)
        assert stripped is None or "eco_session" not in stripped, value
        assert cookies.session_tokens([stripped or ""]) == []
    assert cookies.strip_session("a=1; eco_session=T; b=2") == "a=1; b=2"
    # A name in other case is stripped too (never sent on), though it opens nothing.
    assert cookies.strip_session("ECO_SESSION=T; a=1") == "a=1"
    assert cookies.session_tokens(["ECO_SESSION=T"]) == []
    # Without our cookie the header passes byte for byte.
    assert cookies.strip_session('a=1;  b="x y"') == 'a=1;  b="x y"'
    assert cookies.session_tokens(["a=1", "eco_session=U"]) == ["U"]


def test_set_cookie_scope() -> None:
    p = ("/gpu-clusters/web/service", "/gpu-clusters/gc_1/service")
    allowed = cookies.set_cookie_allowed
    assert allowed("a=1", p)
    assert allowed("a=1; Path=/gpu-clusters/web/service", p)
    assert allowed("a=1; Path=/gpu-clusters/gc_1/service/x; HttpOnly", p)
    assert not allowed("a=1; Path=/", p)
    assert not allowed("a=1; Path=/gpu-clusters/web/serviceX", p)
    assert not allowed("a=1; Domain=example.com", p)
    assert not allowed("eco_session=x; Path=/gpu-clusters/web/service", p)
    assert not allowed("Eco_Session=x", p)
    assert not allowed("=x", p)


def _pool(policy: str) -> Pool:
    pool = Pool("c", policy)
    pool.update(
        [
            ("r0", "127.0.0.1", 1, "local"),
            ("r1", "127.0.0.1", 2, "local"),
            ("r2", "127.0.0.1", 3, "local"),
        ]
    )
    return pool


def test_least_outstanding_takes_turns_when_idle_and_avoids_busy() -> None:
    pool = _pool("least-outstanding")
    assert [pool.order(0)[0].name for _ in range(6)] == ["r0", "r1", "r2"] * 2
    pool.replicas[1].in_flight = 3
    pool.replicas[2].in_flight = 1
    assert [pool.order(0)[0].name for _ in range(3)] == ["r0"] * 3
    pool.replicas[0].in_flight = 5
    assert pool.order(0)[0].name == "r2"


def test_round_robin_ignores_load() -> None:
    pool = _pool("round-robin")
    pool.replicas[1].in_flight = 9
    assert [pool.order(0)[0].name for _ in range(6)] == ["r0", "r1", "r2"] * 2


def test_failed_replica_backs_off_and_comes_back() -> None:
    pool = _pool("least-outstanding")
    r1 = pool.replicas[1]
    r1.failed(100.0)
    names = [pool.order(100.1)[0].name for _ in range(4)]
    assert "r1" not in names
    # In back-off it is still tried last rather than never.
    assert pool.order(100.1)[-1] is r1
    r1.failed(100.2)  # failing again doubles the back-off
    assert r1.down_until - 100.2 == 2 * (r1.backoff / 2)
    assert not r1.healthy(100.2 + r1.backoff - 0.01) and r1.healthy(100.2 + r1.backoff)
    r1.answered(200, 0.01)
    assert r1.healthy(0) and r1.backoff == 0
    # Every replica in back-off: the request is still tried.
    for r in pool.replicas:
        r.failed(300.0)
    assert len(pool.order(300.0)) == 3


@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=6),
    st.integers(0, 20),
    st.sampled_from(["least-outstanding", "round-robin"]),
)
def test_order_tries_every_replica_once_healthy_first_best_at_the_head_and_pick_agrees(
    states: list[tuple[int, bool]], turn: int, policy: str
) -> None:
    pool = Pool("c1", policy)
    pool.update([(f"r{i}", "127.0.0.1", 9000 + i, "local") for i in range(len(states))])
    for r, (in_flight, sick) in zip(pool.replicas, states, strict=True):
        r.in_flight = in_flight
        r.down_until = 50.0 if sick else 0.0
    pool._next = turn
    start = turn % len(states)
    # pick() is order()'s first, and takes the same turn.
    first = pool.pick(10.0)
    after_pick = pool._next
    pool._next = turn
    out = pool.order(10.0)
    assert out[0] is first and pool._next == after_pick
    assert sorted(r.name for r in out) == sorted(r.name for r in pool.replicas)
    healthy = [r for r in out if r.down_until <= 10.0]
    assert out[: len(healthy)] == healthy  # those in back-off come last
    rotation = pool.replicas[start:] + pool.replicas[:start]
    if healthy:
        ready = [r for r in rotation if r.down_until <= 10.0]
        if policy == "least-outstanding":
            low = min(r.in_flight for r in ready)
            assert out[0] is next(r for r in ready if r.in_flight == low)
        else:
            assert out[0] is ready[0]
    else:
        assert out[0] is rotation[0]
    # The next turn starts after the one chosen.
    assert pool._next == pool.replicas.index(out[0]) + 1


def test_counters_keep_across_updates() -> None:
    pool = _pool("least-outstanding")
    pool.replicas[0].answered(503, 0.003)
    pool.replicas[0].answered(200, 0.3)
    pool.update([("r0", "127.0.0.1", 1, "local")])
    c = pool.replicas[0].counters()
    assert c["requests"] == 2 and c["statuses"] == [0, 1, 0, 0, 1]
    assert sum(c["hist"]) == 2  # type: ignore[arg-type]


def test_error_log_repeats_once_with_a_count(caplog: object) -> None:
    import logging

    logger = logging.getLogger("test.front.errors")
    records: list[str] = []

    class H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger.addHandler(H())
    log = ErrorLog(logger, every_s=0.0)
    log("boom")
    assert records == ["boom"]
    slow = ErrorLog(logger, every_s=3600)
    for _ in range(1000):
        slow("flood")
    assert records.count("flood") == 1


def test_log_file_is_copied_and_truncated_past_its_bound(tmp_path: object) -> None:
    from pathlib import Path

    from ecolink.front.logfile import rotate_if_big

    path = Path(str(tmp_path)) / "backend.log"
    with open(path, "ab") as f:  # a writer that appends, like the backend's stderr
        f.write(b"x" * 100)
        f.flush()
        assert not rotate_if_big(path, 1000)
        f.write(b"y" * 1000)
        f.flush()
        assert rotate_if_big(path, 1000)
        f.write(b"after\n")
        f.flush()
    assert path.read_bytes() == b"after\n"
    assert (path.parent / "backend.log.1").read_bytes() == b"x" * 100 + b"y" * 1000


def test_sessions_die_with_the_key_that_minted_them_when_the_store_links_them() -> None:
    import sqlite3

    from ecolink.front.table import load_snapshot

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript("""
        CREATE TABLE api_keys (id INTEGER PRIMARY KEY, account_id TEXT, prefix TEXT,
                               key_hash TEXT, revoked_at INTEGER);
        CREATE TABLE console_sessions (token_hash TEXT, account_id TEXT, expires_at INTEGER,
                                       key_id INTEGER);
        CREATE TABLE clusters (id TEXT, account_id TEXT, name TEXT, status TEXT,
                               endpoint_port INTEGER, created_at INTEGER);
        INSERT INTO api_keys VALUES (1, 'a', 'eco_aaa', 'h1', NULL), (2, 'a', 'eco_bbb', 'h2', 5);
        INSERT INTO console_sessions VALUES ('s1', 'a', 99, 1), ('s2', 'a', 99, 2);
    """)
    snap = load_snapshot(conn)
    assert set(snap.keys) == {"h1"} and set(snap.sessions) == {"s1"}


def _frame(opcode: int, payload_len: int, *, fin: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    if payload_len < 126:
        head = bytes([b0, 0x80 | payload_len])
    elif payload_len < 1 << 16:
        head = bytes([b0, 0x80 | 126]) + payload_len.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + payload_len.to_bytes(8, "big")
    return head + b"mask" + b"x" * payload_len


def test_frame_guard_counts_messages_across_frames_and_reads() -> None:
    from ecolink.front.proxy import FrameGuard

    g = FrameGuard(300)
    stream = _frame(0x1, 300) + _frame(0x9, 100) + _frame(0x2, 200)
    for i in range(len(stream)):  # one byte at a time: headers cut anywhere
        assert g.feed(stream[i : i + 1])
    # Fragments add up; a control frame between them does not count.
    g = FrameGuard(300)
    assert g.feed(_frame(0x2, 200, fin=False) + _frame(0xA, 120) + _frame(0x0, 100))
    assert not g.feed(_frame(0x2, 200, fin=False) + _frame(0x0, 101))
    # An announced length over the limit is refused on the header alone.
    assert not FrameGuard(8 * 1024).feed(
        bytes([0x82, 0x80 | 127]) + (64 << 20).to_bytes(8, "big") + b"mask"
    )
    assert not FrameGuard(300).feed(_frame(0x1, 301)[:8])


def test_front_sessions_live_while_their_key_does(tmp_path: Path) -> None:
    import time

    from ecolink.front.table import Table
    from ecolink.store import Store

    store = Store(tmp_path / "ecolink.db")
    now = int(time.time() * 1_000_000)
    with store.tx():
        a = store.create_account("a", now)
        b = store.create_account("b", now)
        key_a = store.create_api_key(a.id, now)
        key_b = store.create_api_key(b.id, now)
    kid_a = store.authenticate_key(key_a)[0]  # type: ignore[index]
    kid_b = store.authenticate_key(key_b)[0]  # type: ignore[index]
    with store.tx():
        token, _ = store.create_console_session(a.id, now, kid_a)
        # A session row naming another account's key opens nothing.
        forged, _ = store.create_console_session(a.id, now, kid_b)
    table = Table(tmp_path / "ecolink.db")
    try:
        assert table.account_for_session(token) == a.id
        assert table.account_for_session(forged) is None
        # The key revoked (the session row still there): the session is gone at once.
        with store.tx():
            store._conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, kid_a))
        assert table.account_for_session(token) is None
    finally:
        table.stop()


def test_a_lookup_never_reads_the_database_on_the_loop_nor_misses_a_new_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from ecolink.front import table as table_module
    from ecolink.front.table import WAIT_S, Snapshot, Table
    from ecolink.store import Store

    store = Store(tmp_path / "ecolink.db")
    now = int(time.time() * 1_000_000)
    with store.tx():
        a = store.create_account("a", now)
        key = store.create_api_key(a.id, now)
    kid = store.authenticate_key(key)[0]  # type: ignore[index]
    table = Table(tmp_path / "ecolink.db")
    table.start()
    try:
        assert table._shm is not None  # the WAL index header is what the loop reads

        class NoReads:
            def execute(self, *args: object) -> None:
                raise AssertionError("the event loop read the database")

        table._loop_conn = NoReads()
        assert table.account_for_key(key) == a.id
        # The table's thread is in the middle of a slow reload when a session is
        # made: its first use waits for the next reload, and finds it.
        real_load = table_module.load_snapshot

        def slow_load(conn: object) -> Snapshot:
            time.sleep(0.05)
            return real_load(conn)

        monkeypatch.setattr(table_module, "load_snapshot", slow_load)
        with store.tx():
            store.create_account("b", now)  # a commit the thread starts reloading for
        table._wake.set()
        time.sleep(0.01)
        with store.tx():
            token, _ = store.create_console_session(a.id, now, kid)
        assert table.account_for_session(token) == a.id
        # The thread stuck in the database: a lookup waits WAIT_S once, then answers
        # from what the table has at once until the thread gets through.
        with table._lock:
            with store.tx():
                token2, _ = store.create_console_session(a.id, now, kid)
            t = time.monotonic()
            assert table.account_for_session(token2) is None
            assert WAIT_S * 0.8 <= time.monotonic() - t < WAIT_S + 1.0
            t = time.monotonic()
            assert table.account_for_session(token2) is None
            assert time.monotonic() - t < WAIT_S / 2
        deadline = time.monotonic() + 5
        while table.account_for_session(token2) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert table.account_for_session(token2) == a.id
        # A load that began earlier, published later, does not replace a newer one.
        newest = table.snap
        assert table._publish(0, Snapshot())
        assert table.snap is newest
    finally:
        table.stop()
        store.close()
