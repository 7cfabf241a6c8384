"""Leadership by a Postgres session-level advisory lock.

The lock is held by a connection of its own (autocommit, never used for anything
else): Postgres releases it when that session ends, however the holder ends (a
SIGKILL closes the socket and the server lets go at once; a lost node is noticed by
the TCP keepalives this connection asks the server for, in about 11 s). A follower
tries `pg_try_advisory_lock` again every `retry_s`. A leader watches its connection
between checks (a server that ends the session is noticed at once), runs a query
every `check_s` with a `check_timeout_s` limit (a silent network is noticed within
that), and steps down the moment either fails, then tries to connect again as a
follower.

The lock is per database: instances that share a database share the leadership.
The URL must reach Postgres itself or a session-mode pooler; a transaction-mode
pooler (PgBouncer's default) cannot hold a session lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import psycopg

from ecolink.leadership.base import Leadership

log = logging.getLogger("ecolink.leadership")

# The lock's key: a fixed 64-bit number of our own (the first 8 bytes of a hash of
# its name), so that it meets no other application's advisory locks.
LEADER_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"ecolink: the leader of the periodic work").digest()[:8], "big", signed=True
)

# Asked of the server for this session: notice a vanished client within about 11 s
# (the lock then frees), and never end this idle session on its own.
SESSION_SETTINGS = (
    ("tcp_keepalives_idle", "5"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
    ("idle_session_timeout", "0"),
    ("application_name", "ecolink-leader"),
)


def _where(url: str) -> str:
    """host:port/database of a URL, without its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


class AdvisoryLockLeadership(Leadership):
    kind: ClassVar[str] = "postgres"

    def __init__(
        self,
        url: str,
        *,
        identity: str | None = None,
        key: int = LEADER_LOCK_KEY,
        retry_s: float = 1.0,
        check_s: float = 1.0,
        check_timeout_s: float = 3.0,
        connect_timeout_s: int = 5,
    ) -> None:
        super().__init__(identity)
        self.url = url
        self.key = key
        self.retry_s = retry_s
        self.check_s = check_s
        self.check_timeout_s = check_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # When the connection was last known to hold the lock (monotonic seconds).
        self._held_at = 0.0

    def describe(self) -> str:
        return f"Postgres advisory lock {self.key} on {_where(self.url)}"

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lock's session (tests end it to cut the lock)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def confirm(self) -> bool:
        if not self._leading:
            return False
        conn = self._conn
        lost = conn is None or conn.closed or conn.broken
        stale = time.monotonic() - self._held_at > self.check_s + self.check_timeout_s
        if lost or stale:
            self._set(False, "the lock's connection is lost" if lost else "the lock is unconfirmed")
            await self._drop()
            return False
        return True

    def _pause(self) -> float:
        # A leader's round waits on its connection itself (see `_round`).
        return 0.0 if self._leading else self.retry_s

    async def _round(self) -> None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                await self._drop()
                self._conn = await self._connect()
            if not self._leading:
                await self._try_lock()
            else:
                await self._watch()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            # asyncio.TimeoutError is TimeoutError (Python >= 3.11).
            self._set(False, f"the lock's connection is lost: {_first_line(exc)}")
            await self._drop()
            raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            connect_timeout=self.connect_timeout_s,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        try:
            for name, value in SESSION_SETTINGS:
                try:
                    await conn.execute("SELECT set_config(%s, %s, false)", (name, value))
                except psycopg.OperationalError:
                    raise
                except psycopg.DatabaseError as exc:
                    # An older server without the setting, or one that does not let
                    # it be changed: the lock works without it.
                    log.info("leader election: %s not set: %s", name, _first_line(exc))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _try_lock(self) -> None:
        conn = self._conn
        assert conn is not None
        cur = await asyncio.wait_for(
            conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)), self.check_timeout_s
        )
        row = await cur.fetchone()
        if row is not None and row[0]:
            self._held_at = time.monotonic()
            self._set(True, f"took the lock on session {conn.info.backend_pid}")

    async def _watch(self) -> None:
        """Wait `check_s` on the connection (a session the server ends raises at
        once), then check it still answers and still holds the lock."""
        conn = self._conn
        assert conn is not None
        began = time.monotonic()
        async for _ in conn.notifies(timeout=self.check_s):
            pass
        rest = self.check_s - (time.monotonic() - began)
        if rest > 0:
            await asyncio.sleep(rest)
        cur = await asyncio.wait_for(
            conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND objsubid = 1"
                " AND classid = ((%s::bigint >> 32) & 4294967295)::bigint::oid"
                " AND objid = (%s::bigint & 4294967295)::bigint::oid",
                (self.key, self.key),
            ),
            self.check_timeout_s,
        )
        row = await cur.fetchone()
        if row is None or not row[0]:
            self._set(False, "the session no longer holds the lock")
            await self._drop()
            return
        self._held_at = time.monotonic()

    async def _release(self, was_leading: bool) -> None:
        # Closing the session releases its lock.
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
