"""Clusters and their billed time segments."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from ecocore.billing import Segment, segment_start
from ecolink.store.database import Database
from ecolink.store.records import Cluster

CLUSTER_COLUMNS = [f.name for f in fields(Cluster)]

_FS_INDEX = CLUSTER_COLUMNS.index("shared_filesystems")
_SUSPENDED_INDEX = CLUSTER_COLUMNS.index("suspended")


def cluster_from_row(row: tuple[Any, ...]) -> Cluster:
    values = list(row)
    fs = values[_FS_INDEX]
    values[_FS_INDEX] = () if not fs or fs == "[]" else tuple(json.loads(fs))
    values[_SUSPENDED_INDEX] = bool(values[_SUSPENDED_INDEX])
    return Cluster(*values)


def cluster_to_row(c: Cluster) -> dict[str, Any]:
    d = {name: getattr(c, name) for name in CLUSTER_COLUMNS}
    d["shared_filesystems"] = json.dumps(list(c.shared_filesystems))
    d["suspended"] = int(c.suspended)
    return d


class ClustersTable(Database):
    """The `clusters` and `cluster_segments` tables: a cluster's row (written whole,
    its version bumped on each update), the lookups the service and the reaper make,
    and the time segments billing counts (at most one open per cluster)."""

    _SELECT_CLUSTER = "SELECT " + ", ".join(CLUSTER_COLUMNS) + " FROM clusters"

    def insert_cluster(self, c: Cluster) -> None:
        self._write()
        row = cluster_to_row(c)
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        self._conn.execute(f"INSERT INTO clusters ({cols}) VALUES ({marks})", row)
        self.touched(f"c:{c.account_id}:{c.id}")

    def update_cluster(self, c: Cluster) -> None:
        """Write every field of `c` and bump its version."""
        self._write()
        c.version += 1
        row = cluster_to_row(c)
        sets = ", ".join(f"{k} = :{k}" for k in row if k != "id")
        self._conn.execute(f"UPDATE clusters SET {sets} WHERE id = :id", row)
        self.touched(f"c:{c.account_id}:{c.id}")

    def cluster(self, cluster_id: str) -> Cluster | None:
        row = self._conn.execute(self._SELECT_CLUSTER + " WHERE id = ?", (cluster_id,)).fetchone()
        return cluster_from_row(row) if row else None

    def find_cluster(self, account_id: str, ref: str) -> Cluster | None:
        """By id, else by name among the account's clusters that are not terminated
        (else the newest terminated one of that name)."""
        row = self._conn.execute(
            self._SELECT_CLUSTER + " WHERE id = ? AND account_id = ?", (ref, account_id)
        ).fetchone()
        if row is None:
            row = self._conn.execute(
                self._SELECT_CLUSTER + " WHERE account_id = ? AND name = ?"
                " ORDER BY (status != 'terminated') DESC, created_at DESC LIMIT 1",
                (account_id, ref),
            ).fetchone()
        return cluster_from_row(row) if row else None

    def name_in_use(self, account_id: str, name: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM clusters WHERE account_id = ? AND name = ? AND status != 'terminated'",
            (account_id, name),
        ).fetchone()
        return row is not None

    def list_clusters(
        self,
        account_id: str | None,
        *,
        statuses: Iterable[str] | None = None,
        terminated_since: int | None = None,
    ) -> list[Cluster]:
        """Clusters oldest first; `terminated_since` hides clusters terminated before it."""
        sql = self._SELECT_CLUSTER + " WHERE 1=1"
        params: list[Any] = []
        if account_id is not None:
            sql += " AND account_id = ?"
            params.append(account_id)
        if statuses is not None:
            st = list(statuses)
            sql += f" AND status IN ({', '.join('?' * len(st))})"
            params.extend(st)
        if terminated_since is not None:
            sql += " AND (status != 'terminated' OR terminated_at >= ?)"
            params.append(terminated_since)
        sql += " ORDER BY created_at, id"
        return [cluster_from_row(r) for r in self._conn.execute(sql, params).fetchall()]

    def deadlines(self, statuses: Iterable[str]) -> list[tuple[str, str, int, int]]:
        """(id, account_id, expires_at, warned) of the clusters in `statuses`: what the
        reaper needs, without reading whole rows."""
        st = list(statuses)
        rows = self._conn.execute(
            "SELECT id, account_id, expires_at, warned FROM clusters"
            f" WHERE status IN ({', '.join('?' * len(st))})",
            st,
        ).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    def gpus_in_use(
        self, account_id: str, region: str, statuses: Iterable[str], exclude: str | None = None
    ) -> int:
        st = list(statuses)
        row = self._conn.execute(
            "SELECT COALESCE(SUM(gpu_count * replicas), 0) FROM clusters WHERE account_id = ?"
            f" AND region = ? AND status IN ({', '.join('?' * len(st))}) AND id != ?",
            (account_id, region, *st, exclude or ""),
        ).fetchone()
        return int(row[0])

    def latest_time(self) -> int | None:
        """The latest instant the database records (ledger, segments, charges): a
        restarted backend never counts time from before it."""
        row = self._conn.execute(
            "SELECT (SELECT MAX(at) FROM ledger), (SELECT MAX(start_at) FROM cluster_segments),"
            " (SELECT MAX(end_at) FROM cluster_segments),"
            " (SELECT MAX(last_charge_at) FROM clusters)"
        ).fetchone()
        latest = max((int(v) for v in row if v is not None), default=0)
        return latest or None

    # -- segments ------------------------------------------------------------
    def open_segment(self, cluster_id: str, start: int, hourly_rate: int) -> int:
        """Open a time segment at `start`, or where the previous one ended if that is
        later (see `billing.segment_start`); returns where it starts."""
        self._write()
        start = segment_start(self.segments(cluster_id), start)
        self._conn.execute(
            "INSERT INTO cluster_segments (cluster_id, start_at, hourly_rate) VALUES (?, ?, ?)",
            (cluster_id, start, hourly_rate),
        )
        return start

    def close_segment(self, cluster_id: str, end: int) -> None:
        self._write()
        self._conn.execute(
            "UPDATE cluster_segments SET end_at = CASE WHEN start_at > ? THEN start_at ELSE ? END"
            " WHERE cluster_id = ? AND end_at IS NULL",
            (end, end, cluster_id),
        )

    def segments(self, cluster_id: str) -> list[Segment]:
        rows = self._conn.execute(
            "SELECT start_at, end_at, hourly_rate FROM cluster_segments WHERE cluster_id = ?"
            " ORDER BY id",
            (cluster_id,),
        ).fetchall()
        return [Segment(*r) for r in rows]

    def has_open_segment(self, cluster_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM cluster_segments WHERE cluster_id = ? AND end_at IS NULL", (cluster_id,)
        ).fetchone()
        return row is not None
