"""The ledger: append-only signed entries that move an account's totals."""

from __future__ import annotations

from typing import Any

from ecocore.billing import LedgerKind, apply_posting
from ecolink.store.database import Database, StoreError
from ecolink.store.records import LedgerEntry

_SELECT_ENTRY = (
    "SELECT id, account_id, cluster_id, at, kind, amount, balance_after, held_after, memo"
    " FROM ledger"
)


class LedgerTable(Database):
    """The `ledger` table (its triggers refuse UPDATE and DELETE). `post` appends
    an entry and moves the account's balance and held totals in the same
    transaction, so the totals are always the sum of the entries."""

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
        # Postgres: the account's row stays locked until the transaction ends, so no
        # other instance posts from the totals read here.
        row = self._conn.execute(
            "SELECT balance, held FROM accounts WHERE id = ?" + self.engine.for_update,
            (account_id,),
        ).fetchone()
        if row is None:
            raise StoreError(f"no account {account_id}")
        balance, held = apply_posting(int(row[0]), int(row[1]), kind, amount)
        if held < 0 or balance - held < 0:
            raise StoreError("the posting would leave the account below zero available")
        entry_id = int(
            self._conn.execute(
                "INSERT INTO ledger (account_id, cluster_id, at, kind, amount, balance_after,"
                " held_after, memo) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (account_id, cluster_id, at, kind, amount, balance, held, memo),
            ).fetchone()[0]
        )
        self._conn.execute(
            "UPDATE accounts SET balance = ?, held = ? WHERE id = ?", (balance, held, account_id)
        )
        self.touched(f"a:{account_id}")
        return LedgerEntry(entry_id, account_id, cluster_id, at, kind, amount, balance, held, memo)

    def ledger(
        self,
        account_id: str,
        *,
        cluster_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[LedgerEntry]:
        """Entries newest first."""
        sql = _SELECT_ENTRY + " WHERE account_id = ?"
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
        sql = _SELECT_ENTRY
        params: list[Any] = []
        if account_id is not None:
            sql += " WHERE account_id = ?"
            params.append(account_id)
        sql += " ORDER BY id"
        return [LedgerEntry(*r) for r in self._conn.execute(sql, params).fetchall()]

    def cluster_ledger_sums(self) -> dict[str, tuple[int, int, int]]:
        """Per cluster, the sums of its holds, hold releases and charges (positive)."""
        sums = self._conn.execute(
            "SELECT cluster_id,"
            " COALESCE(SUM(CASE WHEN kind = 'hold' THEN amount END), 0),"
            " COALESCE(SUM(CASE WHEN kind = 'hold_release' THEN -amount END), 0),"
            " COALESCE(SUM(CASE WHEN kind = 'charge' THEN -amount END), 0)"
            " FROM ledger WHERE cluster_id IS NOT NULL GROUP BY cluster_id"
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in sums}
