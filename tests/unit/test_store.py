"""The store, on SQLite and on Postgres (the same tests): schema and migrations, WAL and foreign keys, the append-only
ledger and its constraints, hashed API keys, console sessions, idempotency records,
kept-session records."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ecolink.store import (
    SCHEMA_VERSION,
    SESSION_TTL_US,
    Cluster,
    IdempotencyRecord,
    Store,
    StoreError,
    from_us,
    hash_secret,
    rfc3339,
    to_us,
)
from ecolink.store.migrate import HEAD
from ecolink.store.schema import statements

NOW = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


TABLES = (
    "accounts",
    "api_keys",
    "console_sessions",
    "clusters",
    "cluster_segments",
    "ledger",
    "events",
    "idempotency",
    "kept_sessions",
)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database of each engine: a SQLite file, or a migrated Postgres database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres").new_database())
    return str(tmp_path / "e.db")


def _cluster(
    store: Store, account_id: str, cid: str = "gc_1", name: str = "demo", status: str = "running"
) -> Cluster:
    c = Cluster(
        id=cid,
        account_id=account_id,
        name=name,
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=2,
        image="img",
        startup_command=None,
        shared_filesystems=("w",),
        rate_per_gpu_hour=2_500_000,
        status=status,
        status_reason=None,
        created_at=NOW,
        started_at=None,
        expires_at=NOW + 3_600_000_000,
        duration_mh=1_000_000,
        endpoint_port=None,
        suspended=False,
        terminated_at=None,
        warned=0,
        hold_total=0,
        released_total=0,
        spent_total=0,
        last_charge_at=NOW,
        version=0,
    )
    with store.tx():
        store.insert_cluster(c)
    return c


def test_schema_is_versioned_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.db")
    assert store.schema_version() == SCHEMA_VERSION
    assert store.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(sqlite3.IntegrityError), store.tx():
        store.execute(
            "INSERT INTO api_keys (account_id, prefix, key_hash, created_at) VALUES (?,?,?,?)",
            ("acct_missing", "eco_x", "h", NOW),
        )
    store.close()


def test_migrations_run_on_open_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    sqlite3.connect(path).close()  # an empty database: version 0
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    tables = {r[0] for r in store.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(TABLES) <= tables
    store.close()
    Store(path).close()  # opening again migrates nothing and keeps the data
    raw = sqlite3.connect(path)
    raw.execute("UPDATE alembic_version SET version_num = '9999'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_a_database_from_before_alembic_is_stamped_and_brought_up_to_date(
    tmp_path: Path,
) -> None:
    """A SQLite file that counted its migrations in `PRAGMA user_version` (revision 2
    here) keeps its data and gets the missing revision, recorded by Alembic."""
    path = tmp_path / "e.db"
    raw = sqlite3.connect(path, isolation_level=None)
    for number in (1, 2):
        for statement in statements(number, "sqlite"):
            raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    raw.execute("INSERT INTO accounts (id, name, created_at) VALUES ('acct_old', 'old', 1)")
    raw.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD
    assert store.account_by_name("old") is not None
    columns = {r[1] for r in store.execute("PRAGMA table_info(clusters)")}
    assert "termination_grace_seconds" in columns
    store.close()


def test_ledger_is_append_only_and_moves_the_account(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
        e1 = store.post(a.id, None, "credit", 100, "credit", NOW)
        e2 = store.post(a.id, None, "hold", 30, "hold", NOW)
        e3 = store.post(a.id, None, "charge", -10, "charge", NOW)
        e4 = store.post(a.id, None, "hold_release", -20, "release", NOW)
    assert e1.id < e2.id < e3.id < e4.id
    assert (e4.balance_after, e4.held_after) == (90, 0)
    acct = store.account(a.id)
    assert acct is not None and (acct.balance, acct.held, acct.available) == (90, 0, 90)
    with pytest.raises(store.engine.all_errors, match="append-only"), store.tx():
        store.execute("UPDATE ledger SET amount = 1 WHERE id = ?", (e1.id,))
    with pytest.raises(store.engine.all_errors, match="append-only"), store.tx():
        store.execute("DELETE FROM ledger")
    assert len(store.ledger_all()) == 4
    assert store.audit() == []


def test_postings_that_would_make_available_negative_are_refused(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
        store.post(a.id, None, "credit", 100, "credit", NOW)
    with pytest.raises(StoreError), store.tx():
        store.post(a.id, None, "hold", 101, "too much", NOW)
    with pytest.raises(store.engine.integrity_errors), store.tx():
        store.execute(
            "INSERT INTO ledger (account_id, at, kind, amount, balance_after,"
            " held_after) VALUES (?, ?, 'charge', 5, 0, 0)",
            (a.id, NOW),
        )
    # A failed transaction leaves nothing behind.
    assert [e.kind for e in store.ledger_all()] == ["credit"]
    with pytest.raises(StoreError, match="transaction"):
        store.post(a.id, None, "credit", 1, "outside a transaction", NOW)


def test_ledger_pages_newest_first_by_cluster(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
        store.post(a.id, None, "credit", 1000, "c", NOW)
    _cluster(store, a.id, "gc_1")
    _cluster(store, a.id, "gc_2", name="other")
    with store.tx():
        for i in range(5):
            store.post(a.id, "gc_1" if i % 2 == 0 else "gc_2", "hold", 10 + i, "h", NOW + i)
    page = store.ledger(a.id, limit=2)
    assert [e.amount for e in page] == [14, 13]
    older = store.ledger(a.id, limit=10, before=page[-1].id)
    assert [e.amount for e in older] == [12, 11, 10, 1000]
    assert [e.amount for e in store.ledger(a.id, cluster_id="gc_2")] == [13, 11]


def test_api_keys_are_stored_hashed_and_revocable(db: str) -> None:
    path = db
    store = Store(path)
    with store.tx():
        a = store.create_account("alice", NOW)
        key = store.create_api_key(a.id, NOW)
    assert key.startswith("eco_") and len(key) > 40
    acct = store.account_for_key(key)
    assert acct is not None and acct.id == a.id
    assert store.account_for_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.account_for_key("eco_" + "x" * 43) is None
    assert store.account_for_key("not-a-key") is None
    every_row = repr([store.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES])
    assert key not in every_row and hash_secret(key) in every_row
    store.close()
    if not db.startswith("postgresql://"):  # nor anywhere in the file and its WAL
        files = Path(db).parent.iterdir()
        raw = b"".join(p.read_bytes() for p in files if p.name.startswith("e.db"))
        assert key.encode() not in raw
        assert hash_secret(key).encode() in raw
    store = Store(path)
    with store.tx():
        revoked = store.revoke_api_keys(key[:12], NOW)
    assert revoked == [key[:12]]
    assert store.account_for_key(key) is None
    info = store.api_keys()[0]
    assert info.revoked_at == NOW and info.account_name == "alice"


def test_console_sessions_expire_after_12_hours(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
        key = store.create_api_key(a.id, NOW)
    found = store.authenticate_key(key)
    assert found is not None and found[1].id == a.id
    with store.tx():
        token, expires = store.create_console_session(a.id, NOW, found[0])
    assert expires - NOW == SESSION_TTL_US == 12 * 3600 * 1_000_000
    assert store.account_for_session(token, NOW + 1) is not None
    assert store.account_for_session(token, expires) is None
    assert store.account_for_session("wrong", NOW) is None
    with store.tx():
        store.delete_console_session(token)
    assert store.account_for_session(token, NOW + 1) is None


def test_console_sessions_end_with_the_key_that_minted_them(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
        key, other = store.create_api_key(a.id, NOW), store.create_api_key(a.id, NOW)
    kid = store.authenticate_key(key)
    oid = store.authenticate_key(other)
    assert kid is not None and oid is not None
    with store.tx():
        t1, _ = store.create_console_session(a.id, NOW, kid[0])
        t2, _ = store.create_console_session(a.id, NOW, kid[0])
        t3, _ = store.create_console_session(a.id, NOW, oid[0])
    listed = store.console_sessions(NOW + 1)
    assert [s.key_prefix for s in listed].count(key[:12]) == 2 and len(listed) == 3
    assert all(s.account_name == "alice" and len(s.id) == 12 for s in listed)
    # Revoking in another connection (another process) ends them on next use.
    second = Store(db)
    with second.tx():
        second.revoke_api_keys(key[:12], NOW)
    second.close()
    assert store.account_for_session(t1, NOW + 1) is None
    assert store.account_for_session(t2, NOW + 1) is None
    assert store.account_for_session(t3, NOW + 1) is not None
    assert [s.key_prefix for s in store.console_sessions(NOW + 1)] == [other[:12]]
    only = store.console_sessions(NOW + 1)[0]
    with store.tx():
        assert store.revoke_console_sessions(id_prefix=only.id[:8]) == 1
    assert store.account_for_session(t3, NOW + 1) is None


def test_idempotency_records_are_per_account_and_kept_24_hours(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
        b = store.create_account("bob", NOW)
        store.save_idempotency(
            IdempotencyRecord(a.id, "k", "fp", 201, "application/json", b"{}", NOW)
        )
    assert store.idempotency(a.id, "k", NOW + 1) is not None
    assert store.idempotency(b.id, "k", NOW + 1) is None
    day = 24 * 3600 * 1_000_000
    assert store.idempotency(a.id, "k", NOW + day) is None
    with store.tx():
        store.prune_idempotency(NOW + day)
    assert store.execute("SELECT COUNT(*) FROM idempotency").fetchone()[0] == 0


def test_names_are_unique_among_clusters_not_terminated(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
    c = _cluster(store, a.id, "gc_1")
    with pytest.raises(store.engine.integrity_errors):
        _cluster(store, a.id, "gc_2")
    c.status = "terminated"
    with store.tx():
        store.update_cluster(c)
    _cluster(store, a.id, "gc_2")
    found = store.find_cluster(a.id, "demo")
    assert found is not None and found.id == "gc_2"
    old = store.find_cluster(a.id, "gc_1")
    assert old is not None and old.shared_filesystems == ("w",) and old.version == 1


def test_kept_session_records_end_on_restart(db: str) -> None:
    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
    _cluster(store, a.id)
    store.save_kept_session(
        {
            "id": "s1",
            "cluster_id": "gc_1",
            "replica": "demo-0",
            "command": ["bash"],
            "tty": True,
            "started_at": NOW,
        }
    )
    store.save_kept_session(
        {
            "id": "s2",
            "cluster_id": "gc_1",
            "replica": "demo-1",
            "command": ["sh", "-c", "exit 3"],
            "tty": False,
            "started_at": NOW + 1,
        }
    )
    store.update_kept_session(
        "s2", exited=True, exit_code=3, ended_reason="exited", ended_at=NOW + 2
    )
    assert store.end_open_kept_sessions("backend_restart", NOW + 5) == 1
    recs = {r["id"]: r for r in store.kept_sessions("gc_1")}
    assert recs["s1"]["ended_reason"] == "backend_restart" and recs["s1"]["exited"]
    assert recs["s2"]["ended_reason"] == "exited" and recs["s2"]["exit_code"] == 3
    assert recs["s1"]["command"] == ["bash"]


def test_a_start_ends_only_the_kept_sessions_of_its_previous_run_and_of_gone_instances(
    db: str,
) -> None:
    """SQLite (one instance a database): a start ends every open session. Postgres
    (shared): only those of this state's previous run, those naming no holder, and
    those of instances gone; a live instance's sessions stay open."""
    from ecolink.store.instances import ALIVE_US

    store = Store(db)
    with store.tx():
        a = store.create_account("alice", NOW)
    _cluster(store, a.id)
    with store.tx():
        assert store.register_instance("inst_live", "cat", "1", NOW) == []
    if store.dialect == "postgresql":
        with store.tx():
            assert store.register_instance("inst_prev", "cat", "1", NOW) == []
            assert store.register_instance("inst_stale", "cat", "1", NOW - ALIVE_US - 1) == []
            store.instance_seen("inst_live", NOW, "http://10.0.0.1:8000")
    holders = {
        "s_live": "inst_live",
        "s_stale": "inst_stale",
        "s_prev": "inst_prev",
        "s_none": None,
        "s_unknown": "inst_unknown",
    }
    for i, (sid, holder) in enumerate(holders.items()):
        store.save_kept_session(
            {
                "id": sid,
                "cluster_id": "gc_1",
                "replica": "demo-0",
                "command": ["bash"],
                "started_at": NOW + i,
                "instance_id": holder,
            }
        )
    recs = {r["id"]: r for r in store.kept_sessions("gc_1")}
    assert {sid: r["instance_id"] for sid, r in recs.items()} == holders
    assert recs["s_unknown"]["holder_seen_at"] is None
    if store.dialect == "postgresql":  # a row not seen for too long: gone as well
        assert recs["s_stale"]["holder_seen_at"] == NOW - ALIVE_US - 1
    assert recs["s_live"]["holder_seen_at"] == NOW
    with store.tx():
        ended = store.end_kept_sessions_at_start(NOW + 5, "inst_prev", NOW + 5 - ALIVE_US)
    reasons = {r["id"]: r["ended_reason"] for r in store.kept_sessions("gc_1")}
    if store.dialect == "postgresql":
        assert recs["s_live"]["holder_address"] == "http://10.0.0.1:8000"
        assert ended == 4
        assert reasons == {
            "s_live": None,
            "s_stale": "instance_gone",
            "s_prev": "backend_restart",
            "s_none": "backend_restart",
            "s_unknown": "instance_gone",
        }
    else:
        assert ended == 5
        assert set(reasons.values()) == {"backend_restart"}
    store.close()


def test_time_helpers_are_exact() -> None:
    assert to_us(from_us(NOW + 123_457)) == NOW + 123_457
    assert rfc3339(NOW + 5) == "2026-01-01T00:00:00.000005Z"
