"""Console sessions: the browser's cookie sessions, each minted by an API key."""

from __future__ import annotations

import secrets
from typing import Any

from ecolink.store.accounts import AccountsTable
from ecolink.store.database import StoreError
from ecolink.store.records import Account, ConsoleSessionInfo
from ecolink.store.tokens import hash_secret

SESSION_TTL_US = 12 * 3600 * 1_000_000
SESSION_ID_LEN = 12


class ConsoleSessionsTable(AccountsTable):
    """The `console_sessions` table. A session lives `SESSION_TTL_US` at most and only
    while the API key that minted it is not revoked; only its token's hash is kept,
    and its first characters name it in lists and revocations."""

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

    def revoke_console_sessions(
        self,
        *,
        id_prefix: str | None = None,
        account_id: str | None = None,
        key_prefix: str | None = None,
    ) -> int:
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
            "DELETE FROM console_sessions WHERE " + " AND ".join(where), params
        )
        return int(cur.rowcount)

    def delete_console_session(self, token: str) -> None:
        self._write()
        self._conn.execute(
            "DELETE FROM console_sessions WHERE token_hash = ?", (hash_secret(token),)
        )

    def prune_console_sessions(self, now: int) -> None:
        self._write()
        self._conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
