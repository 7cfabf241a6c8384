"""Versioned schema migrations (Alembic), and the check every open makes.

`migrate(target)` brings a database to `HEAD` (what `ecolink migrate` runs).
`ensure_schema` runs on every open: a database at `HEAD` opens at once, without
loading Alembic; one behind it is migrated (the embedded SQLite default) or refused
with a word on `ecolink migrate` (Postgres, shared by several instances, moves only
when told to); one at a revision this code does not know is refused.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from ecolink.store.database import StoreError
from ecolink.store.engine import Engine, PostgresEngine, SqliteEngine, is_postgres_url
from ecolink.store.schema import SCHEMA_VERSION

REVISIONS = tuple(f"{n:04d}" for n in range(1, SCHEMA_VERSION + 1))
HEAD = REVISIONS[-1]
SCRIPTS = Path(__file__).with_name("migrations")
# Several instances may run `migrate` at once: one does it, the others wait for it.
_PG_MIGRATE_LOCK = 0x6563_6F6C_696E_6B01  # "ecolink" + 1


class SchemaError(StoreError):
    """The database's schema is not one this ecolink can use as it is."""


def current_revision(conn: Any) -> str | None:
    """The revision `conn`'s database is at (None: none yet). A SQLite database made
    before Alembic answers the revision its `PRAGMA user_version` counts."""
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except Exception:
        row = None
    if row is not None:
        return str(row[0])
    if isinstance(conn, sqlite3.Connection):
        legacy = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if legacy:
            return f"{legacy:04d}"
    return None


def _engine_for(target: str) -> Engine:
    if is_postgres_url(target):
        return PostgresEngine(target)
    return SqliteEngine(target, 10_000, "FULL")


def _known_revision(engine: Engine, conn: Any = None) -> str | None:
    """The database's revision (through `conn`, else a connection of its own), refused
    when it is newer than this code."""
    own = conn is None
    if own:
        try:
            conn = engine.connect(reader=False)
        except engine.unavailable_errors as exc:
            raise SchemaError(f"cannot reach the database {engine.label}: {exc}") from exc
    try:
        revision = current_revision(conn)
    finally:
        if own:
            conn.close()
    if revision is not None and revision not in REVISIONS:
        raise SchemaError(
            f"the database {engine.label} has schema revision {revision}, newer than "
            f"this ecolink knows (up to {HEAD}); upgrade ecolink"
        )
    return revision


def ensure_schema(engine: Engine, *, migrate: bool, conn: Any = None) -> None:
    """Check (and, when `migrate`, bring up to `HEAD`) the schema of `engine`'s
    database; `conn`: the connection to use (an in-memory database has only one)."""
    revision = _known_revision(engine, conn)
    if revision == HEAD:
        return
    if not migrate:
        raise SchemaError(
            f"the database {engine.label} is at schema revision {revision or 'none'}; this "
            f"ecolink needs {HEAD}: run `ecolink migrate --database URL` first"
        )
    _upgrade(engine, conn)


def migrate(target: str) -> tuple[str | None, str]:
    """Bring the database `target` (a SQLite path or a `postgresql://` URL) to `HEAD`;
    returns the revisions before and after."""
    engine = _engine_for(target)
    before = _known_revision(engine)
    if before != HEAD:
        _upgrade(engine, None)
    return before, HEAD


def _upgrade_to(target: str, revision: str) -> None:
    """Bring `target` to `revision` only (tests of a migration's steps)."""
    _upgrade(_engine_for(target), None, revision)


def _upgrade(engine: Engine, conn: Any, revision: str = "head") -> None:
    """Run Alembic to `revision` (loaded only here: an up-to-date open never pays for
    it)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.pool import NullPool, StaticPool

    if isinstance(engine, SqliteEngine):
        if conn is not None:  # in memory: this very connection, which stays open
            raw = _Unclosable(conn)
            sa = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
        else:
            sa = create_engine(
                "sqlite://",
                creator=lambda: engine.connect(reader=False),
                poolclass=NullPool,
            )

        # The connections are in autocommit mode: begin for real, so each revision's
        # DDL commits or rolls back whole.
        @event.listens_for(sa, "begin")
        def _begin(sa_conn: Any) -> None:
            sa_conn.exec_driver_sql("BEGIN IMMEDIATE")

    else:
        sa = create_engine(engine.sqlalchemy_url(), poolclass=NullPool)
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    try:
        with sa.connect() as sa_conn:
            if isinstance(engine, PostgresEngine):
                sa_conn.execute(text(f"SELECT pg_advisory_lock({_PG_MIGRATE_LOCK})"))
                sa_conn.commit()
            try:
                legacy = _legacy_revision(sa_conn)
                if legacy is not None:
                    cfg.attributes["connection"] = sa_conn
                    command.stamp(cfg, legacy)
                    sa_conn.commit()
                cfg.attributes["connection"] = sa_conn
                command.upgrade(cfg, revision)
                sa_conn.commit()
            finally:
                if isinstance(engine, PostgresEngine):
                    with contextlib.suppress(Exception):
                        sa_conn.rollback()
                        sa_conn.execute(text(f"SELECT pg_advisory_unlock({_PG_MIGRATE_LOCK})"))
                        sa_conn.commit()
    finally:
        sa.dispose()


def _legacy_revision(sa_conn: Any) -> str | None:
    """A SQLite database from before Alembic: the revision to stamp it with."""
    if sa_conn.dialect.name != "sqlite":
        return None
    from sqlalchemy import inspect, text

    if inspect(sa_conn).has_table("alembic_version"):
        return None
    legacy = int(sa_conn.execute(text("PRAGMA user_version")).scalar() or 0)
    sa_conn.commit()
    return f"{legacy:04d}" if legacy else None


class _Unclosable:
    """An in-memory database's one connection, lent to Alembic, which must not close
    it (that would drop the database)."""

    def __init__(self, conn: Any) -> None:
        object.__setattr__(self, "_conn", conn)

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)
