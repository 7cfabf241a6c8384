"""`ecolink export` / `ecolink import`: a SQLite state written by a real `ecolink serve`
moves to Postgres row for row, and a server on the Postgres database answers as the
old one did and hands out new ids; a refused import leaves its target as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ecolink.store import Store
from ecolink.store.transfer import TABLES
from support.e2e_helpers import launch, wait_for

pytestmark = pytest.mark.timeout(240)


def rows_of(target: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of `target`, in key order."""
    store = Store(target, migrate=False)
    try:
        out: dict[str, list[dict[str, Any]]] = {}
        for table, order in TABLES.items():
            cur = store.execute(f"SELECT * FROM {table} ORDER BY {order}")
            columns = [d[0] for d in cur.description]
            out[table] = [
                {
                    c: bytes(v) if isinstance(v, memoryview) else v
                    for c, v in zip(columns, r, strict=True)
                }
                for r in cur.fetchall()
            ]
        return out
    finally:
        store.close()


def audit(target: str) -> list[str]:
    store = Store(target, migrate=False)
    try:
        return store.audit()
    finally:
        store.close()


def test_a_served_sqlite_state_moves_to_postgres(ecolink_server, postgres, tmp_path):
    srv = ecolink_server
    with srv.client() as api:
        stopped = launch(api, "stopped", replicas=2, command="sleep infinity")
        wait_for(api, stopped["id"], lambda c: c["status"] == "running", what="running")
        assert api.post(f"/gpu-clusters/{stopped['id']}/stop").status_code == 200
        r = api.post(
            "/gpu-clusters",
            json={
                "name": "gone",
                "region": "us-east",
                "gpu_type": "H100-80GB",
                "gpu_count": 2,
                "replicas": 2,
                "image": "example/app:1",
                "estimated_duration_hours": 1,
                "startup_command": "sleep infinity",
            },
            headers={"Idempotency-Key": "launch-gone"},
        )
        assert r.status_code == 201, r.text
        gone = r.json()
        wait_for(api, gone["id"], lambda c: c["status"] == "running", what="running")
        assert api.delete(f"/gpu-clusters/{gone['id']}").status_code == 200
        wait_for(api, gone["id"], lambda c: c["status"] == "terminated", what="terminated")
        wait_for(api, stopped["id"], lambda c: c["status"] == "stopped", what="stopped")
        account = api.get("/account").json()
        clusters = api.get("/gpu-clusters").json()
        ledger = api.get("/account/ledger", params={"limit": 500}).json()["entries"]
    srv.stop()

    sqlite = str(srv.state_dir / "ecolink.db")
    before = rows_of(sqlite)
    for table in ("accounts", "api_keys", "clusters", "cluster_segments", "ledger", "events"):
        assert before[table], table
    assert [r["key"] for r in before["idempotency"]] == ["launch-gone"]

    export = tmp_path / "state.jsonl"
    out = srv.cli("export", str(export))
    assert "ledger" in out.stdout
    header = json.loads(export.read_text().splitlines()[0])
    assert header["counts"] == {t: len(rows) for t, rows in before.items()}

    url = postgres.new_database()
    srv.cli("import", "--database", url, str(export))
    assert rows_of(url) == before
    assert audit(url) == []

    # A server on the Postgres database answers as the SQLite one did, to the same key.
    srv.env["ECOLINK_DATABASE_URL"] = url
    srv.start()
    with srv.client() as api:
        assert api.get("/account").json() == account
        assert api.get("/gpu-clusters").json() == clusters
        assert api.get("/account/ledger", params={"limit": 500}).json()["entries"] == ledger

        # New rows get new ids (the identity sequences moved past the imported ones).
        new = launch(api, "after", replicas=2, command="sleep infinity")
        wait_for(api, new["id"], lambda c: c["status"] == "running", what="running")
        assert api.delete(f"/gpu-clusters/{new['id']}").status_code == 200
        wait_for(api, new["id"], lambda c: c["status"] == "terminated", what="terminated")
    srv.stop()
    after = rows_of(url)
    for table in ("ledger", "events", "cluster_segments"):
        old_ids = {r["id"] for r in before[table]}
        new_rows = [r for r in after[table] if r["cluster_id"] == new["id"]]
        assert new_rows, table
        assert min(r["id"] for r in new_rows) > max(old_ids), table
        assert [r for r in after[table] if r["id"] in old_ids] == before[table]
    assert audit(url) == []


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_refused_imports_change_nothing(ecolink_server_factory, postgres, tmp_path):
    srv = ecolink_server_factory(start=False)  # an account, its key, a credit
    export = tmp_path / "state.jsonl"
    srv.cli("export", str(export))
    lines = _lines(export)
    empty = {t: [] for t in TABLES}

    def refused(url: str, text: str, words: str) -> None:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        before = rows_of(url)
        r = srv.cli("import", "--database", url, str(bad), check=False)
        assert r.returncode == 1, r.stdout
        assert words in r.stderr
        assert rows_of(url) == before

    # Another schema revision.
    header = json.loads(lines[0])
    header["schema_revision"] = "0002"
    url = postgres.new_database()
    refused(url, "\n".join([json.dumps(header), *lines[1:]]) + "\n", "schema revision 0002")
    assert rows_of(url) == empty

    # A corrupted line, a line missing, a ledger that fails the audit.
    broken = [*lines[:2], lines[2][: len(lines[2]) // 2], *lines[3:]]
    refused(url, "\n".join(broken) + "\n", "line 3: not JSON")
    refused(url, "\n".join(lines[:-1]) + "\n", "cut short")
    rich = [json.loads(line) for line in lines[1:]]
    for item in rich:
        if item["table"] == "accounts":
            item["row"]["balance"] += 1
    tampered = [lines[0], *(json.dumps(i) for i in rich)]
    refused(url, "\n".join(tampered) + "\n", "fails the audit")
    assert rows_of(url) == empty

    # A database that is not empty: the second import of the same file.
    srv.cli("import", "--database", url, str(export))
    imported = rows_of(url)
    assert imported == rows_of(str(srv.state_dir / "ecolink.db"))
    refused(url, export.read_text(), "is not empty")
    assert rows_of(url) == imported

    # A database not yet migrated is refused with the way out.
    bare = postgres.new_database(migrated=False)
    r = srv.cli("import", "--database", bare, str(export), check=False)
    assert r.returncode == 1
    assert "ecolink migrate" in r.stderr
