"""The schema: the migrations in order, each one SQL script per engine.

The Alembic revisions in `migrations/versions` run these (`migrate`): revision
"000N" is `MIGRATIONS[N-1]` on SQLite and `PG_MIGRATIONS[N-1]` on Postgres, the same
tables, columns and rules in each engine's words (Postgres needs BIGINT for
microseconds and micro-dollars, identity columns, BYTEA and a trigger function).
Before Alembic, a SQLite database recorded the number of migrations applied in
`PRAGMA user_version`; such a database is stamped with that revision first. A
migration, once released, never changes: a change of schema is a new one at the end.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
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
    # 3: each cluster's grace between SIGTERM and SIGKILL. Clusters launched before
    # have none (NULL): they keep the backend's default.
    """
    ALTER TABLE clusters ADD COLUMN termination_grace_seconds INTEGER
        CHECK (termination_grace_seconds IS NULL OR termination_grace_seconds >= 0);
    """,
    # 4: the instances serving from this database (several share one on Postgres):
    # where each answers, the catalog it serves, when it was last seen; and which
    # instance holds each kept session.
    """
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        address TEXT,
        catalog TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        seen_at INTEGER NOT NULL
    );
    ALTER TABLE kept_sessions ADD COLUMN instance_id TEXT;
    """,
]

# Postgres, statement by statement (a trigger function's body holds `;`).
PG_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at BIGINT NOT NULL,
            balance BIGINT NOT NULL DEFAULT 0,
            held BIGINT NOT NULL DEFAULT 0,
            CHECK (held >= 0)
        )""",
        """CREATE TABLE api_keys (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(id),
            prefix TEXT NOT NULL UNIQUE,
            key_hash TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT,
            last_used_at BIGINT
        )""",
        """CREATE TABLE console_sessions (
            token_hash TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(id),
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )""",
        """CREATE TABLE clusters (
            id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL,
            region TEXT NOT NULL,
            gpu_type TEXT NOT NULL,
            gpu_count BIGINT NOT NULL,
            replicas BIGINT NOT NULL,
            image TEXT NOT NULL,
            startup_command TEXT,
            shared_filesystems TEXT NOT NULL DEFAULT '[]',
            rate_per_gpu_hour BIGINT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending','running','stopping','stopped',
                                                   'terminating','terminated','failed')),
            status_reason TEXT,
            created_at BIGINT NOT NULL,
            started_at BIGINT,
            expires_at BIGINT NOT NULL,
            duration_mh BIGINT NOT NULL,
            endpoint_port BIGINT,
            suspended BIGINT NOT NULL DEFAULT 0,
            terminated_at BIGINT,
            warned BIGINT NOT NULL DEFAULT 0,
            hold_total BIGINT NOT NULL DEFAULT 0,
            released_total BIGINT NOT NULL DEFAULT 0,
            spent_total BIGINT NOT NULL DEFAULT 0,
            last_charge_at BIGINT NOT NULL,
            version BIGINT NOT NULL DEFAULT 0,
            CHECK (spent_total + released_total <= hold_total)
        )""",
        """CREATE UNIQUE INDEX clusters_live_name ON clusters(account_id, name)
            WHERE status != 'terminated'""",
        "CREATE INDEX clusters_account ON clusters(account_id, created_at)",
        "CREATE INDEX clusters_status ON clusters(status)",
        """CREATE TABLE cluster_segments (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            cluster_id TEXT NOT NULL REFERENCES clusters(id),
            start_at BIGINT NOT NULL,
            end_at BIGINT,
            hourly_rate BIGINT NOT NULL,
            CHECK (end_at IS NULL OR end_at >= start_at)
        )""",
        "CREATE INDEX segments_cluster ON cluster_segments(cluster_id)",
        """CREATE TABLE ledger (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(id),
            cluster_id TEXT REFERENCES clusters(id),
            at BIGINT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('credit','hold','hold_release','charge')),
            amount BIGINT NOT NULL,
            balance_after BIGINT NOT NULL,
            held_after BIGINT NOT NULL,
            memo TEXT NOT NULL DEFAULT '',
            CHECK ((kind = 'hold' AND amount > 0)
                   OR (kind IN ('hold_release','charge') AND amount < 0)
                   OR (kind = 'credit' AND amount != 0)),
            CHECK (held_after >= 0 AND balance_after - held_after >= 0)
        )""",
        "CREATE INDEX ledger_account ON ledger(account_id, id)",
        "CREATE INDEX ledger_cluster ON ledger(cluster_id, id)",
        """CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$""",
        """CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_append_only()""",
        """CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_append_only()""",
        """CREATE TABLE events (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(id),
            cluster_id TEXT NOT NULL REFERENCES clusters(id),
            at BIGINT NOT NULL,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            replica TEXT
        )""",
        "CREATE INDEX events_cluster ON events(cluster_id, id)",
        """CREATE TABLE idempotency (
            account_id TEXT NOT NULL REFERENCES accounts(id),
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            status BIGINT NOT NULL,
            content_type TEXT NOT NULL,
            body BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (account_id, key)
        )""",
        "CREATE INDEX idempotency_created ON idempotency(created_at)",
        """CREATE TABLE kept_sessions (
            id TEXT PRIMARY KEY,
            cluster_id TEXT NOT NULL REFERENCES clusters(id),
            replica TEXT NOT NULL,
            command TEXT NOT NULL,
            tty BIGINT NOT NULL,
            started_at BIGINT NOT NULL,
            exited BIGINT NOT NULL DEFAULT 0,
            exit_code BIGINT,
            ended_reason TEXT,
            ended_at BIGINT
        )""",
        "CREATE INDEX kept_sessions_cluster ON kept_sessions(cluster_id)",
    ],
    [
        "DELETE FROM console_sessions",
        "ALTER TABLE console_sessions ADD COLUMN key_id BIGINT REFERENCES api_keys(id)",
        "CREATE INDEX console_sessions_key ON console_sessions(key_id)",
    ],
    [
        """ALTER TABLE clusters ADD COLUMN termination_grace_seconds BIGINT
            CHECK (termination_grace_seconds IS NULL OR termination_grace_seconds >= 0)""",
    ],
    [
        """CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            address TEXT,
            catalog TEXT NOT NULL,
            version TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            seen_at BIGINT NOT NULL
        )""",
        "ALTER TABLE kept_sessions ADD COLUMN instance_id TEXT",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)
assert len(PG_MIGRATIONS) == SCHEMA_VERSION


def statements(number: int, dialect: str) -> list[str]:
    """Migration `number` (from 1) as statements for `dialect` ("sqlite", "postgresql")."""
    if dialect == "postgresql":
        return list(PG_MIGRATIONS[number - 1])
    if dialect == "sqlite":
        return split_sql(MIGRATIONS[number - 1])
    raise ValueError(f"no schema for {dialect}")


def split_sql(script: str) -> list[str]:
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
