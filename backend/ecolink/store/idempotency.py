"""Idempotency records: the answer given to a request key, for its replays."""

from __future__ import annotations

from ecolink.store.database import Database
from ecolink.store.records import IdempotencyRecord

IDEMPOTENCY_TTL_US = 24 * 3600 * 1_000_000


class IdempotencyTable(Database):
    """The `idempotency` table: one record per (account, key), valid
    `IDEMPOTENCY_TTL_US` after it was made; older ones are ignored and pruned."""

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
            "INSERT INTO idempotency (account_id, key, fingerprint, status,"
            " content_type, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (account_id, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " status = excluded.status, content_type = excluded.content_type,"
            " body = excluded.body, created_at = excluded.created_at",
            (
                rec.account_id,
                rec.key,
                rec.fingerprint,
                rec.status,
                rec.content_type,
                rec.body,
                rec.created_at,
            ),
        )

    def prune_idempotency(self, now: int) -> None:
        self._write()
        self._conn.execute(
            "DELETE FROM idempotency WHERE created_at <= ?", (now - IDEMPOTENCY_TTL_US,)
        )
