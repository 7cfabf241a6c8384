"""Persistence: one SQLite database (WAL, foreign keys, versioned schema).

Holds accounts, API keys (hashed), console sessions, clusters and their time
segments, the append-only ledger, events, idempotency records and kept shell
session records. Migrations run on open. The calls are synchronous; the service
layer groups each action's writes in one `tx()` so they commit together.

The package: `database` (connections, `tx()`, the writer thread, migrations),
`schema` (the migrations), one module per group of tables (`accounts`, `console`,
`clusters`, `ledger`, `events`, `idempotency`, `kept`), `records` (the rows handed
out), `times` (instants) and `facade` (`Store`, made of every table class).

Times are integer microseconds since the Unix epoch (UTC); money integer
micro-dollars.
"""

from __future__ import annotations

from ecolink.store.console import SESSION_ID_LEN, SESSION_TTL_US
from ecolink.store.database import (
    BUSY_TIMEOUT_MS,
    Database,
    StoreBusy,
    StoreError,
    StoreUnavailable,
)
from ecolink.store.facade import Store
from ecolink.store.idempotency import IDEMPOTENCY_TTL_US
from ecolink.store.records import (
    Account,
    ApiKeyInfo,
    Cluster,
    ConsoleSessionInfo,
    Event,
    IdempotencyRecord,
    LedgerEntry,
)
from ecolink.store.schema import SCHEMA_VERSION
from ecolink.store.times import from_us, rfc3339, to_us
from ecolink.store.tokens import KEY_PREFIX_LEN, hash_secret, new_api_key, new_id

__all__ = [
    "BUSY_TIMEOUT_MS",
    "IDEMPOTENCY_TTL_US",
    "KEY_PREFIX_LEN",
    "SCHEMA_VERSION",
    "SESSION_ID_LEN",
    "SESSION_TTL_US",
    "Account",
    "ApiKeyInfo",
    "Cluster",
    "ConsoleSessionInfo",
    "Database",
    "Event",
    "IdempotencyRecord",
    "LedgerEntry",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "from_us",
    "hash_secret",
    "new_api_key",
    "new_id",
    "rfc3339",
    "to_us",
]
