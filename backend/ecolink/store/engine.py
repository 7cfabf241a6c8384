"""The two database engines the store runs on, behind one interface.

The table classes write their SQL once, in the subset SQLite and Postgres share,
with `?` and `:name` parameters; `SqliteEngine` hands it to `sqlite3` as it is and
`PostgresEngine` to psycopg 3, its parameters spelled `%s` and `%(name)s` (once per
statement, then cached). What differs is here: how to connect, how a write
transaction starts, how another process's commit is noticed, and which errors mean
what.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from ecolink.store.errors import StoreBusy, StoreUnavailable

if TYPE_CHECKING:
    import psycopg

# How long a Postgres connection attempt may take, and a statement at most.
PG_CONNECT_TIMEOUT_S = 3
# The channel every commit is announced on.
CHANNEL = "ecolink_changes"


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ...) -> Any: ...

    def executemany(self, sql: str, seq: Sequence[Any]) -> Any: ...

    def close(self) -> None: ...


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


class SqliteEngine:
    """One SQLite file (WAL, foreign keys), or `:memory:` (one connection only)."""

    dialect = "sqlite"
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    # Locked past the busy timeout, a disk error: the database is unavailable.
    unavailable_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
    all_errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    for_update = ""

    def __init__(self, path: str, busy_timeout_ms: int, synchronous: str) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self.memory = path == ":memory:"

    @property
    def label(self) -> str:
        return self.path

    def connect(self, *, reader: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if reader:
            conn.execute("PRAGMA query_only = ON")
        else:
            if not self.memory:
                conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed ledger entry survives even a power cut, not only a crash.
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    @staticmethod
    def usable(conn: Any) -> bool:
        return True

    @staticmethod
    def begin(conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    @staticmethod
    def announce(conn: Any, payload: str) -> None:
        """Nothing to do: other processes see a commit by `PRAGMA data_version`."""

    def sqlalchemy_url(self) -> str:
        return "sqlite:///" + self.path


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """`?` → `%s`, `:name` → `%(name)s` and `%` → `%%`, outside quoted strings."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            j = sql.index("'", i + 1)
            while j + 1 < n and sql[j + 1] == "'":  # '' inside a string
                j = sql.index("'", j + 2)
            out.append(sql[i : j + 1].replace("%", "%%"))
            i = j + 1
            continue
        if ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        elif ch == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            if i > 0 and sql[i - 1] == ":":  # a `::type` cast
                out.append(ch)
            else:
                m = re.match(r"[A-Za-z_]\w*", sql[i + 1 :])
                assert m is not None
                out.append(f"%({m.group(0)})s")
                i += 1 + len(m.group(0))
                continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


class PgConnection:
    """A psycopg connection that takes the store's SQL (see `to_pyformat`).

    A server out of reach raises `StoreUnavailable` (a reader) or `StoreBusy` (the
    writer). A reader whose connection died (the server restarted since its last
    use) connects again and asks once more: a read changes nothing."""

    def __init__(self, raw: psycopg.Connection[Any], engine: PostgresEngine, reader: bool) -> None:
        self.raw = raw
        self.engine = engine
        self.reader = reader

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        import psycopg

        query = to_pyformat(sql)
        for again in (False, True):
            try:
                if not params:
                    return self.raw.execute(query)  # type: ignore[arg-type]
                return self.raw.execute(query, params)  # type: ignore[arg-type]
            except psycopg.OperationalError as exc:
                dead = self.raw.closed or self.raw.broken
                if self.reader and dead and not again:
                    try:
                        self.raw = self.engine.raw_connect(reader=True)
                    except psycopg.OperationalError as exc2:
                        raise StoreUnavailable(f"the database cannot be read: {exc2}") from exc2
                    continue
                if self.reader:
                    raise StoreUnavailable(f"the database cannot be read: {exc}") from exc
                raise StoreBusy(f"the database cannot be written: {exc}") from exc
        raise AssertionError("unreachable")

    def executemany(self, sql: str, seq: Sequence[Any]) -> Any:
        cur = self.raw.cursor()
        if seq:
            cur.executemany(to_pyformat(sql), seq)  # type: ignore[arg-type]
        return cur

    def close(self) -> None:
        self.raw.close()


class PostgresEngine:
    """A Postgres database named by a `postgresql://` URL (psycopg 3)."""

    dialect = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.memory = False
        self.integrity_errors: tuple[type[Exception], ...] = (psycopg.IntegrityError,)
        # The server gone, a broken connection, a timeout: unavailable for now.
        self.unavailable_errors: tuple[type[Exception], ...] = (
            psycopg.OperationalError,
            StoreBusy,
        )
        self.all_errors: tuple[type[Exception], ...] = (psycopg.Error, StoreBusy)

    @property
    def label(self) -> str:
        return redact(self.url)

    def connect(self, *, reader: bool) -> PgConnection:
        return PgConnection(self.raw_connect(reader=reader), self, reader)

    def raw_connect(self, *, reader: bool) -> psycopg.Connection[Any]:
        import psycopg

        raw = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=PG_CONNECT_TIMEOUT_S,
            application_name="ecolink",
        )
        if reader:
            raw.execute("SET default_transaction_read_only = on")
        return raw

    @staticmethod
    def usable(conn: Any) -> bool:
        raw = conn.raw
        return not (raw.closed or raw.broken)

    @staticmethod
    def begin(conn: Any) -> None:
        conn.execute("BEGIN")

    @staticmethod
    def announce(conn: Any, payload: str) -> None:
        """Tell every instance listening, once this transaction commits."""
        conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))

    def sqlalchemy_url(self) -> str:
        return self.url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
            "postgres://", "postgresql+psycopg://", 1
        )

    def listen(
        self, on_notify: Callable[[str], None], stop: Callable[[], bool], tick_s: float
    ) -> None:
        """Deliver every notification on `CHANNEL` to `on_notify` until `stop()`; while
        the server cannot be reached, `on_notify("")` every `tick_s` (anything may have
        changed) and connect again."""
        import time

        import psycopg

        while not stop():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")  # type: ignore[arg-type]
                    on_notify("")  # missed while not listening
                    while not stop():
                        for note in conn.notifies(timeout=tick_s):
                            on_notify(note.payload)
            except psycopg.Error:
                on_notify("")
                time.sleep(tick_s)


Engine = SqliteEngine | PostgresEngine
