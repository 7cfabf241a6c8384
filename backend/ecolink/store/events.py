"""Cluster events: what happened to a cluster and its replicas, in order."""

from __future__ import annotations

from ecolink.store.database import Database
from ecolink.store.records import Event


class EventsTable(Database):
    """The `events` table: appended in a transaction, read newest `limit` per cluster."""

    def add_event(
        self,
        account_id: str,
        cluster_id: str,
        at: int,
        kind: str,
        message: str,
        replica: str | None = None,
    ) -> Event:
        self._write()
        event_id = int(
            self._conn.execute(
                "INSERT INTO events (account_id, cluster_id, at, kind, message, replica)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (account_id, cluster_id, at, kind, message, replica),
            ).fetchone()[0]
        )
        self.touched(f"e:{event_id}")
        return Event(event_id, account_id, cluster_id, at, kind, message, replica)

    def events_by_id(self, ids: list[int]) -> list[Event]:
        """The events of `ids` that exist, in order."""
        if not ids:
            return []
        rows = self._conn.execute(
            "SELECT id, account_id, cluster_id, at, kind, message, replica FROM events"
            f" WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY id",
            ids,
        ).fetchall()
        return [Event(*r) for r in rows]

    def events(self, cluster_id: str, limit: int = 1000) -> list[Event]:
        """The newest `limit` events, oldest first."""
        rows = self._conn.execute(
            "SELECT id, account_id, cluster_id, at, kind, message, replica FROM events"
            " WHERE cluster_id = ? ORDER BY id DESC LIMIT ?",
            (cluster_id, limit),
        ).fetchall()
        return [Event(*r) for r in reversed(rows)]
