"""The rows the store hands out: one dataclass per kind of record.

Times are integer microseconds since the Unix epoch (UTC); money integer
micro-dollars. Every record but `Cluster` is frozen; the service layer changes a
`Cluster` inside a transaction and writes it back with `update_cluster`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecocore.billing import LedgerKind


@dataclass(frozen=True, slots=True)
class Account:
    """An account: its money totals (`balance`, of it `held` for clusters)."""

    id: str
    name: str
    created_at: int
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as `keys list` shows it (never the key itself)."""

    prefix: str
    account_id: str
    account_name: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class ConsoleSessionInfo:
    """A live console session as `sessions list` shows it."""

    id: str  # the first characters of the token's hash: names it, reveals nothing
    account_id: str
    account_name: str
    key_prefix: str
    created_at: int
    expires_at: int


@dataclass(slots=True)
class Cluster:
    """A cluster's row: its spec, status, deadlines and money totals; `version`
    counts its updates."""

    id: str
    account_id: str
    name: str
    region: str
    gpu_type: str
    gpu_count: int
    replicas: int
    image: str
    startup_command: str | None
    shared_filesystems: tuple[str, ...]
    rate_per_gpu_hour: int
    status: str
    status_reason: str | None
    created_at: int
    started_at: int | None
    expires_at: int
    duration_mh: int
    endpoint_port: int | None
    suspended: bool
    terminated_at: int | None
    warned: int
    hold_total: int
    released_total: int
    spent_total: int
    last_charge_at: int
    version: int
    # Seconds between SIGTERM and SIGKILL; None: the backend's default.
    termination_grace_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One signed ledger posting, with the account's totals after it."""

    id: int
    account_id: str
    cluster_id: str | None
    at: int
    kind: LedgerKind
    amount: int
    balance_after: int
    held_after: int
    memo: str


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a cluster (or of one of its replicas)."""

    id: int
    account_id: str
    cluster_id: str
    at: int
    kind: str
    message: str
    replica: str | None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The answer given to an account's request key, replayed to a retry."""

    account_id: str
    key: str
    fingerprint: str
    status: int
    content_type: str
    body: bytes
    created_at: int
