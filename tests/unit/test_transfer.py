"""The export is one snapshot on each engine: rows committed while it is read are
not in it, and its counts match its rows; bytes survive the JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecolink.store import IdempotencyRecord, Store
from ecolink.store.transfer import export_lines, import_rows, read_export

NOW = 1_700_000_000_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres").new_database())
    return str(tmp_path / "e.db")


def test_export_is_one_snapshot_while_another_process_writes(db: str) -> None:
    store = Store(db)
    other = Store(db)  # a server writing while the export runs
    try:
        with store.tx():
            acct = store.create_account("a", NOW)
            store.post(acct.id, None, "credit", 5_000_000, "first", NOW)
            store.save_idempotency(
                IdempotencyRecord(acct.id, "k", "fp", 201, "application/json", b"\x00\xff{}", NOW)
            )
        lines = export_lines(store)
        header = json.loads(next(lines))  # the read transaction is open from here
        with other.tx():
            other.post(acct.id, None, "credit", 7_000_000, "during", NOW + 1)
            other.create_account("b", NOW + 1)
        rest = list(lines)
    finally:
        other.close()
        store.close()
    assert header["counts"]["accounts"] == 1
    assert header["counts"]["ledger"] == 1
    parsed, rows = read_export([json.dumps(header), *rest])
    assert [r["name"] for r in rows["accounts"]] == ["a"]
    assert rows["accounts"][0]["balance"] == 5_000_000
    assert [r["memo"] for r in rows["ledger"]] == ["first"]
    assert rows["idempotency"][0]["body"] == b"\x00\xff{}"
    assert parsed["counts"] == {t: len(r) for t, r in rows.items()}


def test_import_round_trip_keeps_bytes_and_ids(db: str, tmp_path: Path) -> None:
    src = Store(tmp_path / "src.db")
    try:
        with src.tx():
            acct = src.create_account("a", NOW)
            src.post(acct.id, None, "credit", 5_000_000, "first", NOW)
            src.save_idempotency(
                IdempotencyRecord(acct.id, "k", "fp", 201, "application/json", b"\x00\xff", NOW)
            )
        _, rows = read_export(list(export_lines(src)))
    finally:
        src.close()
    dst = Store(db)
    try:
        import_rows(dst, rows)
        moved = dst.account(acct.id)
        assert moved is not None and moved.balance == 5_000_000
        record = dst.idempotency(acct.id, "k", NOW)
        assert record is not None and record.body == b"\x00\xff"
        assert [e.id for e in dst.ledger_all(acct.id)] == [1]
        with dst.tx():
            second = dst.post(acct.id, None, "credit", 1_000_000, "next", NOW + 1)
        assert second.id == 2
        assert dst.audit() == []
    finally:
        dst.close()
