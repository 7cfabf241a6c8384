"""What the front knows: credentials and clusters (read from the state directory's
database whenever it changes) and the replicas' addresses (pushed by the control
plane, which runs the runtime).

The database is read through its own WAL reader connection, in the table's
thread. The event loop never reads it (a reader SQLite keeps out, for instance
while another process holds the WAL index's read locks, waits for seconds inside
SQLite whatever its busy timeout): it looks every `POLL_S` at the WAL index's
header (the first 48 bytes of `<db>-shm`, which every commit rewrites; one
`pread`, a microsecond, no lock), and when it moved wakes the thread, which
reloads. A revoked key stops working within `POLL_S` plus one reload, in every
front process. A lookup that needs the newest tables (an unknown credential, a
session's every use) finds out from the same header whether the snapshot is
behind, and only then waits for the thread's reload, at most `WAIT_S` (after a
wait that ran out, not again until the thread gets through). The look is the
loop's, not the thread's: a thread that woke every `POLL_S` took the GIL from a
busy front at each SQLite call, and that cost a third of its requests per second
(bench/proxy.py). On Postgres every commit is announced (NOTIFY, see
`ecolink.store.database`): the table listens, and the notice wakes the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecolink.store.engine import PostgresEngine, is_postgres_url
from ecolink.store.walindex import WalIndex

log = logging.getLogger(__name__)

POLL_S = 0.02
WAIT_S = 0.25
ROUTABLE = frozenset({"pending", "running", "stopping", "stopped", "failed"})


@dataclass(frozen=True)
class ClusterInfo:
    id: str
    account_id: str
    name: str
    status: str
    endpoint_port: int | None
    created_at: int


@dataclass
class Snapshot:
    keys: dict[str, str] = field(default_factory=dict)  # sha256 hex -> account
    sessions: dict[str, tuple[str, int]] = field(default_factory=dict)  # hash -> (acct, exp µs)
    clusters: dict[str, ClusterInfo] = field(default_factory=dict)
    by_name: dict[tuple[str, str], str] = field(default_factory=dict)  # (acct, name) -> id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def load_snapshot(conn: Any) -> Snapshot:
    """The credential and cluster tables as the front needs them: one read transaction."""
    snap = Snapshot()
    conn.execute("BEGIN")
    try:
        for key_hash, account in conn.execute(
            "SELECT key_hash, account_id FROM api_keys WHERE revoked_at IS NULL"
        ):
            snap.keys[key_hash] = account
        for token_hash, account, expires in conn.execute(_SESSIONS_SQL):
            snap.sessions[token_hash] = (account, expires)
        rows = conn.execute(
            "SELECT id, account_id, name, status, endpoint_port, created_at FROM clusters"
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    for row in rows:
        info = ClusterInfo(*row)
        snap.clusters[info.id] = info
        if info.status == "terminated":
            continue
        snap.by_name[(info.account_id, info.name)] = info.id
    # The newest terminated cluster of a name answers for it when no live one does
    # (as the API's lookup by name does).
    for info in sorted(snap.clusters.values(), key=lambda c: c.created_at, reverse=True):
        if info.status == "terminated":
            snap.by_name.setdefault((info.account_id, info.name), info.id)
    return snap


# The live console sessions: each lives only while the API key that minted it
# (`console_sessions.key_id`, of the same account) is not revoked, as the store's own
# lookup has it. A session without such a key opens nothing.
_SESSIONS_SQL = (
    "SELECT s.token_hash, s.account_id, s.expires_at FROM console_sessions s"
    " JOIN api_keys k ON k.id = s.key_id AND k.revoked_at IS NULL"
    " AND k.account_id = s.account_id"
)


class Table:
    """The front's view of credentials and clusters, kept current from the database."""

    def __init__(self, db_path: Path | str, on_change: Callable[[], None] | None = None) -> None:
        self.db_path = str(db_path)
        self._pg = PostgresEngine(self.db_path) if is_postgres_url(self.db_path) else None
        self._conn: Any = self._connect()
        # The event loop's own look at a SQLite file: it never waits for a lock (a
        # database another process holds answers "busy" at once, not in 2 s).
        self._loop_conn: Any = None if self._pg is not None else self._connect(timeout=0.0)
        self._lock = threading.Lock()  # the thread's connection (and closing it)
        self._version = -1
        self._loop_version = -1
        # Each load takes a number before it reads; the newest-started one published
        # wins, so a slow load never replaces a newer snapshot.
        self._tickets = itertools.count(1)
        self._published = 0
        self._publish_lock = threading.Lock()
        # Postgres: a commit was announced since the last load (or may have been).
        self._dirty = True
        self._failing = False
        self.snap = Snapshot()
        self.on_change = on_change
        self._stop = threading.Event()
        self._wake = threading.Event()  # the loop saw a change (or Postgres announced one)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hashes: dict[str, str] = {}  # key -> its hash (the table decides, not this)
        # The WAL index's header: the loop's last look at it, and the one the thread
        # read before its last reload that got through (the snapshot is as new as
        # that); the thread's reloads begun and the last one finished (by number).
        self._shm: WalIndex | None = None
        self._seen_hdr = b""
        self._loaded_hdr = b""
        self._starts = 0
        self._done = 0
        self._reloaded = threading.Condition()
        self._stuck = False  # a wait for the thread ran out: not again until it is back
        self.refresh()
        if self._pg is None:
            self._shm = WalIndex.open(self.db_path)

    def header(self) -> bytes:
        """The WAL index's header as it is now (b"" where there is none to read)."""
        return self._shm.header() if self._shm is not None else b""

    def _connect(self, timeout: float = 2.0) -> Any:
        if self._pg is not None:
            return self._pg.connect(reader=True)
        conn = sqlite3.connect(
            f"file:{self.db_path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=timeout,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        return conn

    def refresh(self, *, from_loop: bool = False) -> bool:
        """Reload when the database changed since the last load; True if it did.

        `from_loop`: asked by the event loop, for a lookup that needs the newest
        tables (see `_fresh`): it never reads the database there."""
        if from_loop:
            return self._fresh()
        with self._lock:
            with self._reloaded:
                self._starts += 1
                start = self._starts
            hdr = self.header()  # before the read: a commit after it moves it
            ticket = next(self._tickets)
            try:
                if self._pg is not None:
                    if not self._dirty:
                        self._finished(start, hdr)
                        return False
                    self._dirty = False
                    if not self._pg.usable(self._conn):
                        self._conn = self._connect()
                    version = self._version + 1
                else:
                    version = self._conn.execute("PRAGMA data_version").fetchone()[0]
                    if version == self._version:
                        self._finished(start, hdr)
                        return False
                snap = load_snapshot(self._conn)
            except Exception as exc:
                if self._pg is not None:
                    self._dirty = True
                self._failed(exc)
                self._finished(start, None)
                return False
            self._version = version
            published = self._publish(ticket, snap)
            self._finished(start, hdr)
        return published

    def _finished(self, start: int, hdr: bytes | None) -> None:
        """Reload `start` is over; `hdr`: the header its snapshot is as new as (None:
        it failed, the snapshot is what it was)."""
        with self._reloaded:
            if hdr is not None:
                self._loaded_hdr = hdr
                self._stuck = False
            self._done = max(self._done, start)
            self._reloaded.notify_all()

    def _fresh(self) -> bool:
        """The event loop's lookup needs the newest tables: True once the snapshot
        is as new as the database is now, False if it was already (or cannot be
        made so in `WAIT_S`). No database read on the loop: the WAL index's header
        says whether anyone committed since the snapshot's load, and if so the
        table's thread reloads while the loop waits for it."""
        if self._pg is not None:
            return False  # a commit's notice wakes the thread, which reloads
        if self._shm is None or self._thread is None:
            return self._from_loop()  # nothing to look at, or not started: read here
        if self.header() == self._loaded_hdr or self._stuck:
            return False
        with self._reloaded:
            want = self._starts + 1  # a reload that begins after this look
            self._wake.set()
            if not self._reloaded.wait_for(lambda: self._done >= want, WAIT_S):
                self._stuck = True
                return False
        return True

    def _from_loop(self) -> bool:
        """A reload here, through the loop's own connection (SQLite, where no WAL
        index header can be read, or before the thread runs); not while the table's
        thread is in the database (it may be stuck there: so would this be)."""
        if self._pg is not None or not self._lock.acquire(blocking=False):
            return False
        try:
            version = self._loop_conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._loop_version:
                return False
            ticket = next(self._tickets)
            snap = load_snapshot(self._loop_conn)
        except Exception as exc:
            self._failed(exc)
            return False
        finally:
            self._lock.release()
        self._loop_version = version
        return self._publish(ticket, snap)

    def _failed(self, exc: Exception) -> None:
        if not self._failing:  # once per outage, not at every look
            log.warning("reading the credential tables failed: %s", exc)
            self._failing = True

    def _publish(self, ticket: int, snap: Snapshot) -> bool:
        """Make `snap` the table's, unless a load that started later (and so read the
        database as new or newer) was published already. Either way the table's
        snapshot is now as new as the database was when this load began: True."""
        with self._publish_lock:
            if ticket < self._published:
                return True
            self._published = ticket
            self.snap = snap
            if self._failing:
                log.warning("the credential tables can be read again")
                self._failing = False
        if self.on_change is not None:
            self.on_change()
        return True

    def _noticed(self, payload: str) -> None:
        self._dirty = True
        self._wake.set()

    def start(self) -> None:
        """Follow the database: from the running event loop's look every `POLL_S`
        (SQLite) or Postgres' notices, with reloads in the table's thread; with no
        loop running, that thread polls by itself."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.Thread(target=self._run, name="front-table", daemon=True)
        self._thread.start()
        if self._loop is not None and self._shm is not None:
            self._loop.call_later(POLL_S, self._tick)

    def _tick(self) -> None:
        """The event loop's look: has anyone committed since the last one?"""
        if self._stop.is_set() or self._loop is None:
            return
        hdr = self.header()
        if hdr != self._seen_hdr:
            self._seen_hdr = hdr
            self._wake.set()
        self._loop.call_later(POLL_S, self._tick)

    def _run(self) -> None:
        if self._pg is not None:
            listener = threading.Thread(
                target=self._pg.listen,
                args=(self._noticed, self._stop.is_set, POLL_S * 25),
                name="front-table-listen",
                daemon=True,
            )
            listener.start()
        polling = self._pg is None and (self._loop is None or self._shm is None)
        while not self._stop.is_set():
            if polling:
                if self._stop.wait(POLL_S):
                    break
            else:
                # Woken by a change; once a second regardless, should a look be lost.
                self._wake.wait(1.0)
                self._wake.clear()
                if self._stop.is_set():
                    break
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with self._lock, contextlib.suppress(Exception):
            self._conn.close()
        if self._shm is not None:
            self._shm.close()

    # -- lookups (the event loop's thread; `snap` is replaced whole, never mutated)
    def account_for_key(self, key: str) -> str | None:
        if not key.startswith("eco_") or len(key) > 200:
            return None
        h = self._hashes.get(key)
        if h is None:
            h = _hash(key)
            if len(self._hashes) >= 4096:
                self._hashes.clear()
            self._hashes[key] = h
        acct = self.snap.keys.get(h)
        if acct is None and self.refresh(from_loop=True):
            acct = self.snap.keys.get(h)
        return acct

    def account_for_session(self, token: str) -> str | None:
        if not token or len(token) > 200:
            return None
        h = _hash(token)
        # A session ends at once when it is ended or its key revoked (in any process
        # that shares the database): look at the database's version on every use
        # (`PRAGMA data_version`, a few microseconds; it reloads only on a change).
        self.refresh(from_loop=True)
        entry = self.snap.sessions.get(h)
        if entry is None or entry[1] <= int(time.time() * 1_000_000):
            return None
        return entry[0]

    def cluster(self, account_id: str, ref: str) -> ClusterInfo | None:
        for _ in range(2):
            snap = self.snap
            info = snap.clusters.get(ref)
            if info is not None and info.account_id == account_id:
                return info
            cid = snap.by_name.get((account_id, ref))
            if cid is not None:
                return snap.clusters[cid]
            if not self.refresh(from_loop=True):
                return None
        return None
