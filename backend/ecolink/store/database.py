"""The database: connections, transactions, the writer thread and the schema check.

One writer, many readers: `tx()` uses the one write connection (behind a lock, so
one transaction at a time in this process); reads outside a transaction use a
connection of their own thread, which WAL lets read while a writer (of this process
or another) holds the write lock. The same holds on Postgres (`engine`), where
another instance's commits are announced by NOTIFY instead of seen in the file. An event loop never calls the store directly:
`run_write` runs a transaction in the single writer thread and `run_read` runs reads
in a small pool, so a locked or slow database delays those calls only; a read it
does not let through in time raises `StoreUnavailable`. `cached_read` keeps the
hottest reads in memory until the next commit (this process's, or another's seen by
a change watch), so they cost no thread hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ecolink.store.engine import Engine, PostgresEngine, SqliteEngine, is_postgres_url
from ecolink.store.errors import StoreBusy, StoreError, StoreUnavailable
from ecolink.store.tokens import new_id
from ecolink.store.walindex import WalIndex

log = logging.getLogger("ecolink.store")

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000
# How much longer than the busy timeout a read may take, queue included, before it
# is answered as unavailable.
READ_GRACE_S = 1.0
# How often the change watch looks for other processes' commits, how long a cached
# read may be served at most, and how many are kept.
WATCH_S = 0.02
CACHE_TTL_S = 1.0
CACHE_MAX = 10_000


class Database:
    """One database (a SQLite file in WAL mode, or Postgres; see `engine`): its write
    connection and single writer thread, its per-thread read connections, `tx()`,
    the schema check on open, and the change watch.

    The table classes of this package build on it; their writes call `_write()`
    first (a write needs a transaction) and read and write through `_conn`."""

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        readers: int = 4,
        migrate: bool = True,
    ) -> None:
        """`path`: a SQLite file, `:memory:`, or a `postgresql://` URL. `migrate`:
        bring the schema up to date on open (the embedded SQLite default); otherwise a
        schema that is not this code's refuses to open (`ecolink migrate` moves it)."""
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.engine: Engine = (
            PostgresEngine(self.path)
            if is_postgres_url(self.path)
            else SqliteEngine(self.path, busy_timeout_ms, synchronous)
        )
        self.dialect = self.engine.dialect
        self._memory = self.engine.memory
        from ecolink.store.migrate import ensure_schema

        if self._memory:  # one connection, which holds the whole database
            self._writer: Any = self._connect(reader=False)
            ensure_schema(self.engine, migrate=migrate, conn=self._writer)
        else:  # migrate (or check) before anything else holds a connection
            ensure_schema(self.engine, migrate=migrate)
            self._writer = self._connect(reader=False)
        self._wlock = threading.Lock()
        self._local = threading.local()
        self._readers: list[Any] = []
        self._readers_lock = threading.Lock()
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="ecolink-db-writer")
        self._read_pool = ThreadPoolExecutor(readers, thread_name_prefix="ecolink-db-reader")
        # Moves on every commit: this process's (in `tx()`) and, seen by the change
        # watch within WATCH_S, any other process's. A cached read is good while it
        # has not moved.
        self._generation = 0
        self._cache: dict[Hashable, tuple[int, float, Any]] = {}
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()
        # SQLite under an event loop: the loop the watch ticks on, the WAL index file
        # it reads, and the last header it read there.
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._shm: WalIndex | None = None
        self._watch_hdr = b""
        # What the open transaction changed ("c:<account>:<cluster>", "a:<account>",
        # "e:<event id>"), announced to the other instances when it commits.
        self._touched: list[str] = []
        self._remote: list[Callable[[list[str]], None]] = []
        self.instance_id = new_id("inst")
        # Postgres: idle connections for account locks, and the threads that wait.
        self._lock_conns: list[Any] = []
        self._lock_pool: ThreadPoolExecutor | None = None

    def _connect(self, *, reader: bool) -> Any:
        try:
            return self.engine.connect(reader=reader)
        except self.engine.unavailable_errors as exc:
            cls = StoreUnavailable if reader else StoreBusy
            raise cls(f"the database cannot be reached: {exc}") from exc

    @property
    def _conn(self) -> Any:
        """The writer inside this thread's transaction, else this thread's reader (an
        in-memory database has one connection only)."""
        if getattr(self._local, "in_tx", False) or self._memory:
            return self._writer
        conn = getattr(self._local, "reader", None)
        if conn is None or not self.engine.usable(conn):
            conn = self._connect(reader=True)
            self._local.reader = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        self._watch_stop.set()
        if self._watch is not None and self.dialect == "sqlite":
            # (A Postgres listener ends by itself within its tick: nobody waits.)
            self._watch.join(timeout=5)
        if self._shm is not None:
            self._shm.close()
        self._write_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        if self._lock_pool is not None:
            self._lock_pool.shutdown(wait=True)
        for conn in self._lock_conns:
            with contextlib.suppress(*self.engine.all_errors):
                conn.close()
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(*self.engine.all_errors):
                    conn.close()
            self._readers.clear()
        with contextlib.suppress(*self.engine.all_errors):
            self._writer.close()

    # -- off the event loop --------------------------------------------------
    async def run_write(self, fn: Callable[[], T]) -> T:
        """Run `fn` inside one transaction, in the writer thread (an in-memory database,
        which has one connection and no lock to wait for, runs it here)."""

        def job() -> T:
            with self.tx():
                return fn()

        if self._memory:
            return job()
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, job)

    def submit_write(
        self, fn: Callable[[], object], what: str, done: Callable[[], None] | None = None
    ) -> None:
        """Queue `fn` as one transaction for the writer thread and return at once (for
        records nobody waits for); a failure is logged. `done` runs after it, in the
        writer thread, whether it committed or not."""

        def job() -> None:
            try:
                with self.tx():
                    fn()
            except Exception:
                log.exception("could not record %s", what)
            finally:
                if done is not None:
                    done()

        if self._memory:
            job()
        else:
            self._write_pool.submit(job)

    async def run_read(self, fn: Callable[[], T]) -> T:
        """Run `fn` (reads only) in a reader thread. A read the database does not let
        through within the busy timeout (another process holds it exclusively, the
        disk stalls), or that waited that long for a reader thread, raises
        `StoreUnavailable`; the event loop never waits for it."""
        if self._memory:
            return fn()
        unavailable = self.engine.unavailable_errors

        def job() -> T:
            try:
                return fn()
            except unavailable as exc:
                raise StoreUnavailable(f"the database cannot be read: {exc}") from exc

        future = asyncio.get_running_loop().run_in_executor(self._read_pool, job)
        try:
            return await asyncio.wait_for(future, self.busy_timeout_ms / 1000 + READ_GRACE_S)
        except TimeoutError:
            raise StoreUnavailable("the database could not be read in time") from None

    async def cached_read(self, key: Hashable, fn: Callable[[], T]) -> T:
        """`run_read(fn)`, served from memory, without leaving the event loop, while no
        commit has happened since it was read (nor more than CACHE_TTL_S passed): the
        hot reads of every request (credentials, a cluster, the list) cost no thread
        hop while the database does not change. Another process's commit is seen
        within WATCH_S, as the fronts see it; this process's at once. `fn`'s value is
        shared by every caller: it must not be changed."""
        self._start_watch()
        generation = self._generation
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == generation and now - hit[1] <= CACHE_TTL_S:
            value: T = hit[2]
            return value
        value = await self.run_read(fn)
        if value is None:
            return value  # nothing found: asked again next time (a key made a moment ago)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        # The generation from before the read: a commit during it makes this a miss.
        self._cache[key] = (generation, now, value)
        return value

    def _start_watch(self) -> None:
        if self._memory:
            return
        if self.dialect == "sqlite" and self._watch is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if self._shm is None and loop is not None:
                self._shm = WalIndex.open(self.path)
            if loop is not None and self._shm is not None:
                # On the event loop that reads the cache, between its callbacks: the
                # WAL index's header (`<db>-shm`, rewritten by every commit; one pread,
                # no lock, so never a wait). A thread's look every WATCH_S took the
                # GIL from a busy loop at every SQLite call: on a front serving a
                # service URL (same process) that cost a third of its requests per
                # second (bench/proxy.py); and SQLite itself on the loop would wait
                # seconds while another process holds the index's read locks.
                if self._watch_loop is not loop:
                    self._watch_loop = loop
                    loop.call_later(WATCH_S, self._watch_tick, loop)
                return
        if self._watch is not None:
            return
        self._watch = threading.Thread(
            target=self._watch_commits, name="ecolink-db-watch", daemon=True
        )
        self._watch.start()

    def _watch_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """SQLite, on the event loop: has anyone committed since the last look?"""
        if self._watch_stop.is_set() or self._watch_loop is not loop or self._shm is None:
            return  # closed, or a later loop took the watch over
        hdr = self._shm.header()
        if not hdr or hdr != self._watch_hdr:  # (b"": cannot tell, so assume it changed)
            self._generation += 1
            self._watch_hdr = hdr
        loop.call_later(WATCH_S, self._watch_tick, loop)

    def on_remote_change(self, callback: Callable[[list[str]], None]) -> None:
        """Call `callback` (in the watch thread) with what another instance's commit
        changed (see `_touched`; an empty list: anything may have changed)."""
        self._remote.append(callback)
        self._start_watch()

    def _watch_commits(self) -> None:
        engine = self.engine
        if isinstance(engine, PostgresEngine):
            engine.listen(self._noticed, self._watch_stop.is_set, WATCH_S * 25)
            return
        # SQLite: `PRAGMA data_version` moves when another connection commits (a few
        # microseconds to ask); each move is a new generation.
        conn = engine.connect(reader=True)
        try:
            last = None
            while not self._watch_stop.wait(WATCH_S):
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except engine.all_errors:
                    self._generation += 1  # cannot tell: assume it changed
                    continue
                if version != last:
                    self._generation += 1
                    last = version
        finally:
            conn.close()

    def _noticed(self, payload: str) -> None:
        """A Postgres notification: "<instance> <item> <item> ...", or "" (the watch
        lost its connection: anything may have changed)."""
        sender, _, rest = payload.partition(" ")
        if payload and sender == self.instance_id:
            return  # our own commit: the generation already moved in `tx()`
        self._generation += 1
        self._tell_remote(rest.split() if payload else [])

    def _tell_remote(self, items: list[str]) -> None:
        for callback in self._remote:
            try:
                callback(items)
            except Exception:
                log.exception("a change listener failed")

    # -- account locks across instances -------------------------------------------
    async def lock_account(self, account_id: str) -> object | None:
        """Postgres: hold the account's advisory lock (one per account across every
        instance on the database) until `unlock_account(handle)`; a lock not granted
        within the lock timeout, or a database out of reach, raises `StoreBusy`.
        SQLite: nothing to do (one process, whose writes are serial); None."""
        if self.dialect != "postgresql":
            return None
        if self._lock_pool is None:
            self._lock_pool = ThreadPoolExecutor(32, thread_name_prefix="ecolink-db-lock")

        def take() -> object:
            # An idle connection may have died with a database that restarted since:
            # such a failure is tried once more on a new connection.
            for fresh in (False, True):
                conn: Any = None if fresh or not self._lock_conns else self._lock_conns.pop()
                try:
                    if conn is None or not self.engine.usable(conn):
                        conn = self.engine.connect(reader=False)
                        conn.execute(f"SET lock_timeout = '{int(self.busy_timeout_ms * 3)}ms'")
                    conn.execute("SELECT pg_advisory_lock(hashtextextended(?, 0))", (account_id,))
                    return (conn, account_id)
                except self.engine.all_errors as exc:
                    if conn is not None:
                        with contextlib.suppress(*self.engine.all_errors):
                            conn.close()
                    if fresh or not isinstance(exc, self.engine.unavailable_errors):
                        raise StoreBusy(f"the account could not be locked: {exc}") from exc
            raise AssertionError("unreachable")

        return await asyncio.get_running_loop().run_in_executor(self._lock_pool, take)

    def unlock_account(self, handle: object | None) -> None:
        """Let go of a lock `lock_account` took (in a lock thread: nobody waits)."""
        if handle is None or self._lock_pool is None:
            return
        assert isinstance(handle, tuple)
        conn: Any = handle[0]
        account_id: str = handle[1]

        def give() -> None:
            try:
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(?, 0))", (account_id,))
            except self.engine.all_errors:
                with contextlib.suppress(*self.engine.all_errors):
                    conn.close()  # a lost session has let go of its locks already
                return
            if len(self._lock_conns) < 32:
                self._lock_conns.append(conn)
            else:
                conn.close()

        self._lock_pool.submit(give)

    # -- schema ------------------------------------------------------------
    def schema_version(self) -> int:
        """The number of the schema revision the database is at (0: none)."""
        from ecolink.store.migrate import current_revision

        return int(current_revision(self._conn) or 0)

    # -- transactions ------------------------------------------------------
    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One write transaction; everything inside commits together or not at all.

        A database that stays locked past the busy timeout, or fails to commit, raises
        `StoreBusy` after rolling back: nothing of the transaction was stored."""
        if getattr(self._local, "in_tx", False):
            raise StoreError("nested transaction")
        with self._wlock:
            unavailable = self.engine.unavailable_errors
            try:
                if not self.engine.usable(self._writer):
                    self._writer = self._connect(reader=False)
                try:
                    self.engine.begin(self._writer)
                except unavailable:
                    if self._memory or self.dialect == "sqlite":
                        raise
                    # The connection died with a database that restarted since: once
                    # more, on a new one (nothing was sent on the old one).
                    with contextlib.suppress(*self.engine.all_errors):
                        self._writer.close()
                    self._writer = self._connect(reader=False)
                    self.engine.begin(self._writer)
            except unavailable as exc:
                raise StoreBusy(f"the database cannot be written: {exc}") from exc
            self._local.in_tx = True
            self._touched = []
            try:
                yield
                self._before_commit()
                if self.dialect == "postgresql":  # (SQLite: nobody else to tell)
                    self._announce()
                self._writer.execute("COMMIT")
                self._generation += 1
            except BaseException as exc:
                self._local.in_tx = False
                self._generation += 1  # whatever failed, cached reads are read again
                with contextlib.suppress(*self.engine.all_errors):
                    self._writer.execute("ROLLBACK")
                if isinstance(exc, unavailable):
                    raise StoreBusy(f"the database cannot be written: {exc}") from exc
                raise
            finally:
                self._local.in_tx = False

    def _before_commit(self) -> None:
        """A seam for tests that make a commit fail."""

    def touched(self, item: str) -> None:
        """Note what this transaction changes, for the other instances' watchers."""
        if self.dialect == "postgresql":
            self._touched.append(item)

    def _announce(self) -> None:
        """Postgres: NOTIFY the other instances of what this transaction changed, in
        the transaction (it is delivered when, and only if, it commits). A payload
        must stay under 8,000 bytes: a long list goes in several."""
        items = list(dict.fromkeys(self._touched))
        chunk: list[str] = []
        size = len(self.instance_id)
        for item in items:
            if size + len(item) + 1 > 7_000 and chunk:
                self.engine.announce(self._writer, " ".join([self.instance_id, *chunk]))
                chunk, size = [], len(self.instance_id)
            chunk.append(item)
            size += len(item) + 1
        if chunk or not items:
            self.engine.announce(self._writer, " ".join([self.instance_id, *chunk]))

    @property
    def in_tx(self) -> bool:
        return bool(getattr(self._local, "in_tx", False))

    def _write(self) -> None:
        if not self.in_tx:
            raise StoreError("writes need a transaction")

    @contextlib.contextmanager
    def _maybe_tx(self) -> Iterator[None]:
        """This thread's transaction if one is open, else a new one."""
        if self.in_tx:
            yield
        else:
            with self.tx():
                yield

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        """A statement that may break a constraint on purpose (and be handled): on
        Postgres a failed statement spoils its whole transaction unless it ran
        inside a savepoint that is rolled back."""
        self._writer.execute("SAVEPOINT attempt")
        try:
            yield
        except BaseException:
            self._writer.execute("ROLLBACK TO SAVEPOINT attempt")
            self._writer.execute("RELEASE SAVEPOINT attempt")
            raise
        self._writer.execute("RELEASE SAVEPOINT attempt")

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return self._conn.execute(sql, params)
