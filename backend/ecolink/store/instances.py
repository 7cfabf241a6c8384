"""The instances serving from this database: one row each, seen again every few
seconds while it runs. Several instances share a Postgres database; they must serve
the same catalog (prices and budgets), and a kept session is reached through the
instance that holds it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ecolink.store.database import Database


def _alive_us() -> int:
    """15 s, or `ECOLINK_INSTANCE_ALIVE_S` seconds (at least 1) where set."""
    raw = os.environ.get("ECOLINK_INSTANCE_ALIVE_S", "").strip()
    try:
        seconds = float(raw) if raw else 15.0
    except ValueError:
        seconds = 15.0
    return int(max(1.0, seconds) * 1_000_000)


# How long an instance not seen counts as gone, and how often a live one says so
# (three times within that bound).
ALIVE_US = _alive_us()
HEARTBEAT_S = min(5.0, ALIVE_US / 3_000_000)
# Instances register one at a time (Postgres: this transaction-scoped advisory lock).
_REGISTER_LOCK = 0x6563_6F6C_696E_6B02


@dataclass(frozen=True)
class Instance:
    id: str
    address: str | None
    catalog: str
    version: str
    started_at: int
    seen_at: int

    def alive(self, now: int) -> bool:
        return self.seen_at > now - ALIVE_US


_SELECT = "SELECT id, address, catalog, version, started_at, seen_at FROM instances"


class InstancesTable(Database):
    def register_instance(
        self, instance_id: str, catalog: str, version: str, now: int
    ) -> list[Instance]:
        """Record this instance, unless a live one serves another catalog: then
        nothing is written and those instances are returned."""
        self._write()
        if self.dialect == "postgresql":
            self._conn.execute("SELECT pg_advisory_xact_lock(?)", (_REGISTER_LOCK,))
        else:  # one instance per SQLite file (its state directory's lock): earlier rows
            self._conn.execute("DELETE FROM instances")  # are of processes gone
        others = [i for i in self.instances() if i.alive(now) and i.id != instance_id]
        differ = [i for i in others if i.catalog != catalog]
        if differ:
            return differ
        self._conn.execute("DELETE FROM instances WHERE seen_at <= ?", (now - ALIVE_US,))
        self._conn.execute(
            "INSERT INTO instances (id, address, catalog, version, started_at, seen_at)"
            " VALUES (?, NULL, ?, ?, ?, ?)",
            (instance_id, catalog, version, now, now),
        )
        return []

    def instance_seen(self, instance_id: str, now: int, address: str | None = None) -> None:
        self._write()
        if address is None:
            self._conn.execute("UPDATE instances SET seen_at = ? WHERE id = ?", (now, instance_id))
        else:
            self._conn.execute(
                "UPDATE instances SET seen_at = ?, address = ? WHERE id = ?",
                (now, address, instance_id),
            )

    def remove_instance(self, instance_id: str) -> None:
        self._write()
        self._conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,))

    def instances(self) -> list[Instance]:
        rows = self._conn.execute(_SELECT + " ORDER BY started_at, id").fetchall()
        return [Instance(*r) for r in rows]

    def instance(self, instance_id: str) -> Instance | None:
        row = self._conn.execute(_SELECT + " WHERE id = ?", (instance_id,)).fetchone()
        return Instance(*row) if row else None
