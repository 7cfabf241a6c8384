"""Persistence: one SQLite database (WAL, foreign keys, versioned schema).

Holds accounts, API keys (hashed), console sessions, clusters and their time
segments, the append-only ledger, events, idempotency records and kept shell
session records. Migrations run on open. The calls are synchronous; the service
layer groups each action's writes in one `tx()` so they commit together.

One writer, many readers: `tx()` uses the one write connection (behind a lock, so
one transaction at a time in this process); reads outside a transaction use a
connection of their own thread, which WAL lets read while a writer (of this process
or another) holds the write lock. An event loop never calls the store directly:
`run_write` runs a transaction in the single writer thread and `run_read` runs reads
in a small pool, so a locked or slow database delays those calls only.

Times are integer microseconds since the Unix epoch (UTC); money integer
micro-dollars.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from ecocore.billing import LedgerKind, Segment, apply_posting, segment_start

log = logging.getLogger(__name__)

KEY_PREFIX_LEN = 12  # "eco_" + 8 characters, shown by `keys list`
SESSION_TTL_US = 12 * 3600 * 1_000_000
IDEMPOTENCY_TTL_US = 24 * 3600 * 1_000_000


T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000


class StoreError(Exception):
    pass


class StoreBusy(StoreError):
    """The database could not be written (locked past the busy timeout, or a disk
    error); the transaction was rolled back, so nothing of it was stored."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (exact)."""
    return (when - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@functools.lru_cache(maxsize=65536)
def rfc3339(us: int) -> str:
    """RFC 3339 UTC with microseconds: 2026-01-01T00:00:00.000000Z. (Cached: the same
    few instants of every cluster are formatted again and again.)"""
    d = from_us(us)
    return (f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:"
            f"{d.second:02d}.{d.microsecond:06d}Z")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    created_at: int
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    prefix: str
    account_id: str
    account_name: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class ConsoleSessionInfo:
    id: str  # the first characters of the token's hash: names it, reveals nothing
    account_id: str
    account_name: str
    key_prefix: str
    created_at: int
    expires_at: int


SESSION_ID_LEN = 12


@dataclass(slots=True)
class Cluster:
    id: str
    account_id: str
    name: str
    region: str
    gpu_type: str
    gpu_count: int
    replicas: int
    image: str
    startup_command: str | None
    shared_filesystems: tuple[str, ...]
    rate_per_gpu_hour: int
    status: str
    status_reason: str | None
    created_at: int
    started_at: int | None
    expires_at: int
    duration_mh: int
    endpoint_port: int | None
    suspended: bool
    terminated_at: int | None
    warned: int
    hold_total: int
    released_total: int
    spent_total: int
    last_charge_at: int
    version: int


_CLUSTER_COLUMNS = [f.name for f in fields(Cluster)]


_FS_INDEX = _CLUSTER_COLUMNS.index("shared_filesystems")
_SUSPENDED_INDEX = _CLUSTER_COLUMNS.index("suspended")


def _cluster_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Cluster:
    values = list(row)
    fs = values[_FS_INDEX]
    values[_FS_INDEX] = () if not fs or fs == "[]" else tuple(json.loads(fs))
    values[_SUSPENDED_INDEX] = bool(values[_SUSPENDED_INDEX])
    return Cluster(*values)


def _cluster_to_row(c: Cluster) -> dict[str, Any]:
    d = {name: getattr(c, name) for name in _CLUSTER_COLUMNS}
    d["shared_filesystems"] = json.dumps(list(c.shared_filesystems))
    d["suspended"] = int(c.suspended)
    return d


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    account_id: str
    cluster_id: str | None
    at: int
    kind: LedgerKind
    amount: int
    balance_after: int
    held_after: int
    memo: str


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    account_id: str
    cluster_id: str
    at: int
    kind: str
    message: str
    replica: str | None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    account_id: str
    key: str
    fingerprint: str
    status: int
    content_type: str
    body: bytes
    created_at: int


# --------------------------------------------------------------------------- schema

_MIGRATIONS: list[str] = [
    # 1: the initial schema.
    """
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        balance INTEGER NOT NULL DEFAULT 0,
        held INTEGER NOT NULL DEFAULT 0,
        CHECK (held >= 0)
    );
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        prefix TEXT NOT NULL UNIQUE,
        key_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER,
        last_used_at INTEGER
    );
    CREATE TABLE console_sessions (
        token_hash TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE clusters (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        gpu_type TEXT NOT NULL,
        gpu_count INTEGER NOT NULL,
        replicas INTEGER NOT NULL,
        image TEXT NOT NULL,
        startup_command TEXT,
        shared_filesystems TEXT NOT NULL DEFAULT '[]',
        rate_per_gpu_hour INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending','running','stopping','stopped',
                                               'terminating','terminated','failed')),
        status_reason TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        expires_at INTEGER NOT NULL,
        duration_mh INTEGER NOT NULL,
        endpoint_port INTEGER,
        suspended INTEGER NOT NULL DEFAULT 0,
        terminated_at INTEGER,
        warned INTEGER NOT NULL DEFAULT 0,
        hold_total INTEGER NOT NULL DEFAULT 0,
        released_total INTEGER NOT NULL DEFAULT 0,
        spent_total INTEGER NOT NULL DEFAULT 0,
        last_charge_at INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        CHECK (spent_total + released_total <= hold_total)
    );
    CREATE UNIQUE INDEX clusters_live_name ON clusters(account_id, name)
        WHERE status != 'terminated';
    CREATE INDEX clusters_account ON clusters(account_id, created_at);
    CREATE INDEX clusters_status ON clusters(status);
    CREATE TABLE cluster_segments (
        id INTEGER PRIMARY KEY,
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        start_at INTEGER NOT NULL,
        end_at INTEGER,
        hourly_rate INTEGER NOT NULL,
        CHECK (end_at IS NULL OR end_at >= start_at)
    );
    CREATE INDEX segments_cluster ON cluster_segments(cluster_id);
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        cluster_id TEXT REFERENCES clusters(id),
        at INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('credit','hold','hold_release','charge')),
        amount INTEGER NOT NULL,
        balance_after INTEGER NOT NULL,
        held_after INTEGER NOT NULL,
        memo TEXT NOT NULL DEFAULT '',
        CHECK ((kind = 'hold' AND amount > 0) OR (kind IN ('hold_release','charge') AND amount < 0)
               OR (kind = 'credit' AND amount != 0)),
        CHECK (held_after >= 0 AND balance_after - held_after >= 0)
    );
    CREATE INDEX ledger_account ON ledger(account_id, id);
    CREATE INDEX ledger_cluster ON ledger(cluster_id, id);
    CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        replica TEXT
    );
    CREATE INDEX events_cluster ON events(cluster_id, id);
    CREATE TABLE idempotency (
        account_id TEXT NOT NULL REFERENCES accounts(id),
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, key)
    );
    CREATE INDEX idempotency_created ON idempotency(created_at);
    CREATE TABLE kept_sessions (
        id TEXT PRIMARY KEY,
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        replica TEXT NOT NULL,
        command TEXT NOT NULL,
        tty INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        exited INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        ended_reason TEXT,
        ended_at INTEGER
    );
    CREATE INDEX kept_sessions_cluster ON kept_sessions(cluster_id);
    """,
    # 2: a console session belongs to the API key that minted it and ends with it.
    # Sessions minted before cannot be tied to a key: they end here.
    """
    DELETE FROM console_sessions;
    ALTER TABLE console_sessions ADD COLUMN key_id INTEGER REFERENCES api_keys(id);
    CREATE INDEX console_sessions_key ON console_sessions(key_id);
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return "eco_" + secrets.token_urlsafe(32)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- the store


class Store:
    """The SQLite database of one state directory."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL",
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS, readers: int = 4) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer = self._connect()
        if self.path != ":memory:":
            self._writer.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed ledger entry survives even a power cut, not only a crash.
        self._writer.execute(f"PRAGMA synchronous = {synchronous}")
        self._wlock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="ecolink-db-writer")
        self._read_pool = ThreadPoolExecutor(readers, thread_name_prefix="ecolink-db-reader")
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        """The writer inside this thread's transaction, else this thread's reader (an
        in-memory database has one connection only)."""
        if getattr(self._local, "in_tx", False) or self.path == ":memory:":
            return self._writer
        conn: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.reader = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        self._write_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
        self._writer.close()

    # -- off the event loop --------------------------------------------------
    async def run_write(self, fn: Callable[[], T]) -> T:
        """Run `fn` inside one transaction, in the writer thread (an in-memory database,
        which has one connection and no lock to wait for, runs it here)."""
        def job() -> T:
            with self.tx():
                return fn()
        if self.path == ":memory:":
            return job()
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, job)

    def submit_write(self, fn: Callable[[], object], what: str,
                     done: Callable[[], None] | None = None) -> None:
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
        if self.path == ":memory:":
            job()
        else:
            self._write_pool.submit(job)

    async def run_read(self, fn: Callable[[], T]) -> T:
        """Run `fn` (reads only) in a reader thread."""
        if self.path == ":memory:":
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn)

    # -- schema ------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {version}, newer than this ecolink "
                f"({SCHEMA_VERSION}); upgrade ecolink"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.tx():
                # A second process may have migrated in the meantime.
                if self.schema_version() >= target:
                    continue
                for statement in _split_sql(_MIGRATIONS[target - 1]):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {target}")

    # -- transactions ------------------------------------------------------
    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One write transaction; everything inside commits together or not at all.

        A database that stays locked past the busy timeout, or fails to commit, raises
        `StoreBusy` after rolling back: nothing of the transaction was stored."""
        if getattr(self._local, "in_tx", False):
            raise StoreError("nested transaction")
        with self._wlock:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreBusy(f"the database cannot be written: {exc}") from exc
            self._local.in_tx = True
            try:
                yield
                self._before_commit()
                self._writer.execute("COMMIT")
            except BaseException as exc:
                self._local.in_tx = False
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreBusy(f"the database cannot be written: {exc}") from exc
                raise
            finally:
                self._local.in_tx = False

    def _before_commit(self) -> None:
        """A seam for tests that make a commit fail."""

    @property
    def in_tx(self) -> bool:
        return bool(getattr(self._local, "in_tx", False))

    def _write(self) -> None:
        if not self.in_tx:
            raise StoreError("writes need a transaction")

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    # -- accounts ------------------------------------------------------------
    def create_account(self, name: str, now: int) -> Account:
        self._write()
        acct_id = new_id("acct")
        try:
            self._conn.execute(
                "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)", (acct_id, name, now)
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"an account named {name!r} exists") from exc
        return Account(acct_id, name, now, 0, 0)

    def account(self, account_id: str) -> Account | None:
        row = self._conn.execute(
            "SELECT id, name, created_at, balance, held FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        return Account(*row) if row else None

    def account_by_name(self, name: str) -> Account | None:
        row = self._conn.execute(
            "SELECT id, name, created_at, balance, held FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        return Account(*row) if row else None

    def accounts(self) -> list[Account]:
        rows = self._conn.execute(
            "SELECT id, name, created_at, balance, held FROM accounts ORDER BY name"
        ).fetchall()
        return [Account(*r) for r in rows]

    # -- ledger --------------------------------------------------------------
    def post(
        self,
        account_id: str,
        cluster_id: str | None,
        kind: LedgerKind,
        amount: int,
        memo: str,
        at: int,
    ) -> LedgerEntry:
        """Append one signed ledger entry and move the account's totals with it."""
        self._write()
        row = self._conn.execute(
            "SELECT balance, held FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no account {account_id}")
        balance, held = apply_posting(int(row[0]), int(row[1]), kind, amount)
        if held < 0 or balance - held < 0:
            raise StoreError("the posting would leave the account below zero available")
        cur = self._conn.execute(
            "INSERT INTO ledger (account_id, cluster_id, at, kind, amount, balance_after,"
            " held_after, memo) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (account_id, cluster_id, at, kind, amount, balance, held, memo),
        )
        self._conn.execute(
            "UPDATE accounts SET balance = ?, held = ? WHERE id = ?", (balance, held, account_id)
        )
        entry_id = cur.lastrowid
        assert entry_id is not None
        return LedgerEntry(
            entry_id, account_id, cluster_id, at, kind, amount, balance, held, memo
        )

    def ledger(
        self,
        account_id: str,
        *,
        cluster_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[LedgerEntry]:
        """Entries newest first."""
        sql = (
            "SELECT id, account_id, cluster_id, at, kind, amount, balance_after, held_after, memo"
            " FROM ledger WHERE account_id = ?"
        )
        params: list[Any] = [account_id]
        if cluster_id is not None:
            sql += " AND cluster_id = ?"
            params.append(cluster_id)
        if before is not None:
            sql += " AND id < ?"
            params.append(before)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [LedgerEntry(*r) for r in self._conn.execute(sql, params).fetchall()]

    def ledger_all(self, account_id: str | None = None) -> list[LedgerEntry]:
        """Every entry, oldest first (audits and tests)."""
        sql = (
            "SELECT id, account_id, cluster_id, at, kind, amount, balance_after, held_after, memo"
            " FROM ledger"
        )
        params: list[Any] = []
        if account_id is not None:
            sql += " WHERE account_id = ?"
            params.append(account_id)
        sql += " ORDER BY id"
        return [LedgerEntry(*r) for r in self._conn.execute(sql, params).fetchall()]

    # -- api keys ------------------------------------------------------------
    def create_api_key(self, account_id: str, now: int) -> str:
        """A new key for the account; only its hash is kept, so this is the one
        time it can be shown."""
        self._write()
        for _ in range(10):
            key = new_api_key()
            try:
                self._conn.execute(
                    "INSERT INTO api_keys (account_id, prefix, key_hash, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (account_id, key[:KEY_PREFIX_LEN], hash_secret(key), now),
                )
            except sqlite3.IntegrityError:
                continue  # prefix collision: draw again
            return key
        raise StoreError("could not draw a unique key")

    def account_for_key(self, key: str) -> Account | None:
        found = self.authenticate_key(key)
        return found[1] if found else None

    def authenticate_key(self, key: str) -> tuple[int, Account] | None:
        """The id of the active key `key` and its account, or None."""
        if not key.startswith("eco_") or len(key) > 200:
            return None
        row = self._conn.execute(
            "SELECT account_id, key_hash, id FROM api_keys"
            " WHERE prefix = ? AND revoked_at IS NULL",
            (key[:KEY_PREFIX_LEN],),
        ).fetchone()
        # Hash anyway when the prefix is unknown so both paths cost the same.
        candidate = hash_secret(key)
        stored = row[1] if row else hash_secret("eco_" + "x" * 43)
        if not hmac.compare_digest(candidate, stored) or row is None:
            return None
        acct = self.account(row[0])
        return (int(row[2]), acct) if acct is not None else None

    def api_keys(self) -> list[ApiKeyInfo]:
        rows = self._conn.execute(
            "SELECT k.prefix, k.account_id, a.name, k.created_at, k.revoked_at, k.last_used_at"
            " FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.id"
        ).fetchall()
        return [ApiKeyInfo(*r) for r in rows]

    def revoke_api_keys(self, prefix: str, now: int) -> list[str]:
        """Revoke the keys whose prefix starts with `prefix`; returns their prefixes."""
        self._write()
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._conn.execute(
            "SELECT prefix FROM api_keys WHERE revoked_at IS NULL AND prefix LIKE ? ESCAPE '\\'",
            (like,),
        ).fetchall()
        if not rows and len(prefix) > KEY_PREFIX_LEN:
            rows = self._conn.execute(
                "SELECT prefix FROM api_keys WHERE revoked_at IS NULL AND prefix = ?",
                (prefix[:KEY_PREFIX_LEN],),
            ).fetchall()
        found = [r[0] for r in rows]
        self._conn.executemany(
            "UPDATE api_keys SET revoked_at = ? WHERE prefix = ?", [(now, p) for p in found]
        )
        # The key's console sessions end with it (they would no longer authenticate
        # anyway: a session is checked against its key on every use).
        self._conn.executemany(
            "DELETE FROM console_sessions WHERE key_id IN"
            " (SELECT id FROM api_keys WHERE prefix = ?)", [(p,) for p in found]
        )
        return found

    # -- console sessions ----------------------------------------------------
    def create_console_session(self, account_id: str, now: int, key_id: int) -> tuple[str, int]:
        """A new session of the account, tied to the API key `key_id` that mints it."""
        self._write()
        token = secrets.token_urlsafe(32)
        expires = now + SESSION_TTL_US
        self._conn.execute(
            "INSERT INTO console_sessions (token_hash, account_id, created_at, expires_at,"
            " key_id) VALUES (?, ?, ?, ?, ?)",
            (hash_secret(token), account_id, now, expires, key_id),
        )
        return token, expires

    def account_for_session(self, token: str, now: int) -> Account | None:
        """The session's account while the session lives and the key that minted it
        is not revoked (checked on every use: a revocation in any process that shares
        the database ends the session at once)."""
        if not token or len(token) > 200:
            return None
        row = self._conn.execute(
            "SELECT s.account_id, s.expires_at FROM console_sessions s"
            " JOIN api_keys k ON k.id = s.key_id AND k.revoked_at IS NULL"
            " AND k.account_id = s.account_id WHERE s.token_hash = ?",
            (hash_secret(token),),
        ).fetchone()
        if row is None or row[1] <= now:
            return None
        return self.account(row[0])

    def console_sessions(self, now: int) -> list[ConsoleSessionInfo]:
        """The live console sessions, oldest first."""
        rows = self._conn.execute(
            "SELECT substr(s.token_hash, 1, ?), s.account_id, a.name, k.prefix, s.created_at,"
            " s.expires_at FROM console_sessions s JOIN accounts a ON a.id = s.account_id"
            " JOIN api_keys k ON k.id = s.key_id AND k.revoked_at IS NULL"
            " WHERE s.expires_at > ? ORDER BY s.created_at, s.token_hash",
            (SESSION_ID_LEN, now),
        ).fetchall()
        return [ConsoleSessionInfo(*r) for r in rows]

    def revoke_console_sessions(self, *, id_prefix: str | None = None,
                                account_id: str | None = None,
                                key_prefix: str | None = None) -> int:
        """End the sessions matching every given filter (at least one); their count."""
        self._write()
        where: list[str] = []
        params: list[Any] = []
        if id_prefix is not None:
            like = id_prefix.lower().replace("%", "").replace("_", "") + "%"
            where.append("token_hash LIKE ?")
            params.append(like)
        if account_id is not None:
            where.append("account_id = ?")
            params.append(account_id)
        if key_prefix is not None:
            where.append("key_id IN (SELECT id FROM api_keys WHERE prefix = ?)")
            params.append(key_prefix)
        if not where:
            raise StoreError("say which sessions to end")
        cur = self._conn.execute(
            "DELETE FROM console_sessions WHERE " + " AND ".join(where), params)
        return int(cur.rowcount)

    def delete_console_session(self, token: str) -> None:
        self._write()
        self._conn.execute(
            "DELETE FROM console_sessions WHERE token_hash = ?", (hash_secret(token),)
        )

    def prune_console_sessions(self, now: int) -> None:
        self._write()
        self._conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))

    # -- clusters ------------------------------------------------------------
    def insert_cluster(self, c: Cluster) -> None:
        self._write()
        row = _cluster_to_row(c)
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        self._conn.execute(f"INSERT INTO clusters ({cols}) VALUES ({marks})", row)

    def update_cluster(self, c: Cluster) -> None:
        """Write every field of `c` and bump its version."""
        self._write()
        c.version += 1
        row = _cluster_to_row(c)
        sets = ", ".join(f"{k} = :{k}" for k in row if k != "id")
        self._conn.execute(f"UPDATE clusters SET {sets} WHERE id = :id", row)

    _SELECT_CLUSTER = "SELECT " + ", ".join(_CLUSTER_COLUMNS) + " FROM clusters"

    def cluster(self, cluster_id: str) -> Cluster | None:
        row = self._conn.execute(self._SELECT_CLUSTER + " WHERE id = ?", (cluster_id,)).fetchone()
        return _cluster_from_row(row) if row else None

    def find_cluster(self, account_id: str, ref: str) -> Cluster | None:
        """By id, else by name among the account's clusters that are not terminated
        (else the newest terminated one of that name)."""
        row = self._conn.execute(
            self._SELECT_CLUSTER + " WHERE id = ? AND account_id = ?", (ref, account_id)
        ).fetchone()
        if row is None:
            row = self._conn.execute(
                self._SELECT_CLUSTER + " WHERE account_id = ? AND name = ?"
                " ORDER BY (status != 'terminated') DESC, created_at DESC LIMIT 1",
                (account_id, ref),
            ).fetchone()
        return _cluster_from_row(row) if row else None

    def name_in_use(self, account_id: str, name: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM clusters WHERE account_id = ? AND name = ? AND status != 'terminated'",
            (account_id, name),
        ).fetchone()
        return row is not None

    def list_clusters(
        self,
        account_id: str | None,
        *,
        statuses: Iterable[str] | None = None,
        terminated_since: int | None = None,
    ) -> list[Cluster]:
        """Clusters oldest first; `terminated_since` hides clusters terminated before it."""
        sql = self._SELECT_CLUSTER + " WHERE 1=1"
        params: list[Any] = []
        if account_id is not None:
            sql += " AND account_id = ?"
            params.append(account_id)
        if statuses is not None:
            st = list(statuses)
            sql += f" AND status IN ({', '.join('?' * len(st))})"
            params.extend(st)
        if terminated_since is not None:
            sql += " AND (status != 'terminated' OR terminated_at >= ?)"
            params.append(terminated_since)
        sql += " ORDER BY created_at, id"
        return [_cluster_from_row(r) for r in self._conn.execute(sql, params).fetchall()]

    def deadlines(self, statuses: Iterable[str]) -> list[tuple[str, str, int, int]]:
        """(id, account_id, expires_at, warned) of the clusters in `statuses`: what the
        reaper needs, without reading whole rows."""
        st = list(statuses)
        rows = self._conn.execute(
            "SELECT id, account_id, expires_at, warned FROM clusters"
            f" WHERE status IN ({', '.join('?' * len(st))})",
            st,
        ).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    def gpus_in_use(self, account_id: str, region: str, statuses: Iterable[str],
                    exclude: str | None = None) -> int:
        st = list(statuses)
        row = self._conn.execute(
            "SELECT COALESCE(SUM(gpu_count * replicas), 0) FROM clusters WHERE account_id = ?"
            f" AND region = ? AND status IN ({', '.join('?' * len(st))}) AND id != ?",
            (account_id, region, *st, exclude or ""),
        ).fetchone()
        return int(row[0])

    def latest_time(self) -> int | None:
        """The latest instant the database records (ledger, segments, charges): a
        restarted backend never counts time from before it."""
        row = self._conn.execute(
            "SELECT MAX(COALESCE((SELECT MAX(at) FROM ledger), 0),"
            " COALESCE((SELECT MAX(MAX(start_at, COALESCE(end_at, 0))) FROM cluster_segments), 0),"
            " COALESCE((SELECT MAX(last_charge_at) FROM clusters), 0))"
        ).fetchone()
        return int(row[0]) if row and row[0] else None

    # -- segments ------------------------------------------------------------
    def open_segment(self, cluster_id: str, start: int, hourly_rate: int) -> int:
        """Open a time segment at `start`, or where the previous one ended if that is
        later (see `billing.segment_start`); returns where it starts."""
        self._write()
        start = segment_start(self.segments(cluster_id), start)
        self._conn.execute(
            "INSERT INTO cluster_segments (cluster_id, start_at, hourly_rate) VALUES (?, ?, ?)",
            (cluster_id, start, hourly_rate),
        )
        return start

    def close_segment(self, cluster_id: str, end: int) -> None:
        self._write()
        self._conn.execute(
            "UPDATE cluster_segments SET end_at = MAX(start_at, ?)"
            " WHERE cluster_id = ? AND end_at IS NULL",
            (end, cluster_id),
        )

    def segments(self, cluster_id: str) -> list[Segment]:
        rows = self._conn.execute(
            "SELECT start_at, end_at, hourly_rate FROM cluster_segments WHERE cluster_id = ?"
            " ORDER BY id",
            (cluster_id,),
        ).fetchall()
        return [Segment(*r) for r in rows]

    def has_open_segment(self, cluster_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM cluster_segments WHERE cluster_id = ? AND end_at IS NULL", (cluster_id,)
        ).fetchone()
        return row is not None

    # -- events --------------------------------------------------------------
    def add_event(
        self,
        account_id: str,
        cluster_id: str,
        at: int,
        kind: str,
        message: str,
        replica: str | None = None,
    ) -> Event:
        self._write()
        cur = self._conn.execute(
            "INSERT INTO events (account_id, cluster_id, at, kind, message, replica)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (account_id, cluster_id, at, kind, message, replica),
        )
        assert cur.lastrowid is not None
        return Event(cur.lastrowid, account_id, cluster_id, at, kind, message, replica)

    def events(self, cluster_id: str, limit: int = 1000) -> list[Event]:
        """The newest `limit` events, oldest first."""
        rows = self._conn.execute(
            "SELECT id, account_id, cluster_id, at, kind, message, replica FROM events"
            " WHERE cluster_id = ? ORDER BY id DESC LIMIT ?",
            (cluster_id, limit),
        ).fetchall()
        return [Event(*r) for r in reversed(rows)]

    # -- idempotency ---------------------------------------------------------
    def idempotency(self, account_id: str, key: str, now: int) -> IdempotencyRecord | None:
        row = self._conn.execute(
            "SELECT account_id, key, fingerprint, status, content_type, body, created_at"
            " FROM idempotency WHERE account_id = ? AND key = ? AND created_at > ?",
            (account_id, key, now - IDEMPOTENCY_TTL_US),
        ).fetchone()
        return IdempotencyRecord(*row) if row else None

    def save_idempotency(self, rec: IdempotencyRecord) -> None:
        self._write()
        self._conn.execute(
            "INSERT OR REPLACE INTO idempotency (account_id, key, fingerprint, status,"
            " content_type, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rec.account_id, rec.key, rec.fingerprint, rec.status, rec.content_type, rec.body,
             rec.created_at),
        )

    def prune_idempotency(self, now: int) -> None:
        self._write()
        self._conn.execute(
            "DELETE FROM idempotency WHERE created_at <= ?", (now - IDEMPOTENCY_TTL_US,)
        )

    # -- kept shell sessions -------------------------------------------------
    # Records of kept exec sessions, so a restarted backend can report the sessions
    # that its restart ended. Fields: id, cluster_id, replica, command (list), tty,
    # started_at, exited, exit_code, ended_reason, ended_at.
    def save_kept_session(self, rec: dict[str, Any]) -> None:
        with self._maybe_tx():
            self._conn.execute(
                "INSERT OR REPLACE INTO kept_sessions (id, cluster_id, replica, command, tty,"
                " started_at, exited, exit_code, ended_reason, ended_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec["id"], rec["cluster_id"], rec["replica"], json.dumps(list(rec["command"])),
                    int(bool(rec.get("tty", True))), int(rec["started_at"]),
                    int(bool(rec.get("exited", False))), rec.get("exit_code"),
                    rec.get("ended_reason"), rec.get("ended_at"),
                ),
            )

    def update_kept_session(self, session_id: str, **changes: Any) -> None:
        allowed = {"exited", "exit_code", "ended_reason", "ended_at"}
        bad = set(changes) - allowed
        if bad:
            raise StoreError(f"cannot update {sorted(bad)}")
        if not changes:
            return
        sets = ", ".join(f"{k} = ?" for k in changes)
        values = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        with self._maybe_tx():
            self._conn.execute(
                f"UPDATE kept_sessions SET {sets} WHERE id = ?", (*values, session_id)
            )

    def kept_sessions(self, cluster_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT id, cluster_id, replica, command, tty, started_at, exited, exit_code,"
            " ended_reason, ended_at FROM kept_sessions WHERE cluster_id = ? ORDER BY started_at",
            (cluster_id,),
        ).fetchall()
        return [
            {
                "id": r[0], "cluster_id": r[1], "replica": r[2], "command": json.loads(r[3]),
                "tty": bool(r[4]), "started_at": r[5], "exited": bool(r[6]), "exit_code": r[7],
                "ended_reason": r[8], "ended_at": r[9],
            }
            for r in rows
        ]

    def end_open_kept_sessions(self, reason: str, now: int) -> int:
        """Mark every session not yet ended as ended (a backend restart ends them)."""
        with self._maybe_tx():
            cur = self._conn.execute(
                "UPDATE kept_sessions SET exited = 1, ended_reason = ?, ended_at = ?"
                " WHERE ended_reason IS NULL AND exited = 0",
                (reason, now),
            )
        return cur.rowcount

    @contextlib.contextmanager
    def _maybe_tx(self) -> Iterator[None]:
        if self.in_tx:
            yield
        else:
            with self.tx():
                yield

    # -- checks --------------------------------------------------------------
    def audit(self) -> list[str]:
        """Check the ledger's invariants; returns the problems found (empty: none)."""
        problems: list[str] = []
        for acct in self.accounts():
            bal = held = 0
            for e in self.ledger_all(acct.id):
                bal, held = apply_posting(bal, held, e.kind, e.amount)
                if (bal, held) != (e.balance_after, e.held_after):
                    problems.append(f"ledger entry {e.id}: running totals do not match")
                if bal - held < 0:
                    problems.append(f"ledger entry {e.id}: available below zero")
            if (bal, held) != (acct.balance, acct.held):
                problems.append(f"account {acct.name}: totals differ from the ledger sums")
        sums = self._conn.execute(
            "SELECT cluster_id,"
            " COALESCE(SUM(CASE WHEN kind = 'hold' THEN amount END), 0),"
            " COALESCE(SUM(CASE WHEN kind = 'hold_release' THEN -amount END), 0),"
            " COALESCE(SUM(CASE WHEN kind = 'charge' THEN -amount END), 0)"
            " FROM ledger WHERE cluster_id IS NOT NULL GROUP BY cluster_id"
        ).fetchall()
        by_id = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in sums}
        for c in self.list_clusters(None):
            hold, released, spent = by_id.get(c.id, (0, 0, 0))
            if (hold, released, spent) != (c.hold_total, c.released_total, c.spent_total):
                problems.append(f"cluster {c.id}: totals differ from the ledger")
            if spent > hold:
                problems.append(f"cluster {c.id}: spent more than held")
            if c.status in ("stopped", "terminated", "failed") and hold - released - spent != 0:
                problems.append(f"cluster {c.id}: {c.status} but still holds money")
            if c.status in ("pending", "running") and not c.suspended and not self.has_open_segment(c.id):
                problems.append(f"cluster {c.id}: accrues but has no open time segment")
            if c.status not in ("pending", "running") and self.has_open_segment(c.id):
                problems.append(f"cluster {c.id}: {c.status} but has an open time segment")
        return problems


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (triggers keep their inner `;`)."""
    out: list[str] = []
    buf = ""
    for part in script.split(";"):
        buf += part
        if not buf.strip():
            buf = ""
            continue
        if sqlite3.complete_statement(buf + ";"):
            out.append(buf.strip())
            buf = ""
        else:
            buf += ";"
    return out


