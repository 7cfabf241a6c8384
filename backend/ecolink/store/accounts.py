"""Accounts and their API keys (kept as hashes)."""

from __future__ import annotations

import hmac

from ecolink.store.database import Database, StoreError
from ecolink.store.records import Account, ApiKeyInfo
from ecolink.store.tokens import KEY_PREFIX_LEN, hash_secret, new_api_key, new_id


class AccountsTable(Database):
    """The `accounts` and `api_keys` tables: accounts by id or name, new keys (shown
    once, stored hashed), key authentication and revocation. An account's money
    totals move only with the ledger (`LedgerTable.post`)."""

    # -- accounts ------------------------------------------------------------
    def create_account(self, name: str, now: int) -> Account:
        self._write()
        acct_id = new_id("acct")
        try:
            with self._savepoint():
                self._conn.execute(
                    "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
                    (acct_id, name, now),
                )
        except self.engine.integrity_errors as exc:
            raise StoreError(f"an account named {name!r} exists") from exc
        return Account(acct_id, name, now, 0, 0)

    def account(self, account_id: str) -> Account | None:
        row = self._conn.execute(
            "SELECT id, name, created_at, balance, held FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        return Account(*row) if row else None

    def account_by_name(self, name: str) -> Account | None:
        row = self._conn.execute(
            "SELECT id, name, created_at, balance, held FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        return Account(*row) if row else None

    def accounts(self) -> list[Account]:
        rows = self._conn.execute(
            "SELECT id, name, created_at, balance, held FROM accounts ORDER BY name"
        ).fetchall()
        return [Account(*r) for r in rows]

    # -- api keys ------------------------------------------------------------
    def create_api_key(self, account_id: str, now: int) -> str:
        """A new key for the account; only its hash is kept, so this is the one
        time it can be shown."""
        self._write()
        for _ in range(10):
            key = new_api_key()
            try:
                with self._savepoint():
                    self._conn.execute(
                        "INSERT INTO api_keys (account_id, prefix, key_hash, created_at)"
                        " VALUES (?, ?, ?, ?)",
                        (account_id, key[:KEY_PREFIX_LEN], hash_secret(key), now),
                    )
            except self.engine.integrity_errors:
                continue  # prefix collision: draw again
            return key
        raise StoreError("could not draw a unique key")

    def account_for_key(self, key: str) -> Account | None:
        found = self.authenticate_key(key)
        return found[1] if found else None

    def authenticate_key(self, key: str) -> tuple[int, Account] | None:
        """The id of the active key `key` and its account, or None."""
        if not key.startswith("eco_") or len(key) > 200:
            return None
        row = self._conn.execute(
            "SELECT account_id, key_hash, id FROM api_keys WHERE prefix = ? AND revoked_at IS NULL",
            (key[:KEY_PREFIX_LEN],),
        ).fetchone()
        # Hash anyway when the prefix is unknown so both paths cost the same.
        candidate = hash_secret(key)
        stored = row[1] if row else hash_secret("eco_" + "x" * 43)
        if not hmac.compare_digest(candidate, stored) or row is None:
            return None
        acct = self.account(row[0])
        return (int(row[2]), acct) if acct is not None else None

    def api_keys(self) -> list[ApiKeyInfo]:
        rows = self._conn.execute(
            "SELECT k.prefix, k.account_id, a.name, k.created_at, k.revoked_at, k.last_used_at"
            " FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.id"
        ).fetchall()
        return [ApiKeyInfo(*r) for r in rows]

    def revoke_api_keys(self, prefix: str, now: int) -> list[str]:
        """Revoke the keys whose prefix starts with `prefix`; returns their prefixes."""
        self._write()
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._conn.execute(
            "SELECT prefix FROM api_keys WHERE revoked_at IS NULL AND prefix LIKE ? ESCAPE '\\'",
            (like,),
        ).fetchall()
        if not rows and len(prefix) > KEY_PREFIX_LEN:
            rows = self._conn.execute(
                "SELECT prefix FROM api_keys WHERE revoked_at IS NULL AND prefix = ?",
                (prefix[:KEY_PREFIX_LEN],),
            ).fetchall()
        found = [r[0] for r in rows]
        self._conn.executemany(
            "UPDATE api_keys SET revoked_at = ? WHERE prefix = ?", [(now, p) for p in found]
        )
        # The key's console sessions end with it (they would no longer authenticate
        # anyway: a session is checked against its key on every use).
        self._conn.executemany(
            "DELETE FROM console_sessions WHERE key_id IN"
            " (SELECT id FROM api_keys WHERE prefix = ?)",
            [(p,) for p in found],
        )
        return found
