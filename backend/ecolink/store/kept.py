"""Records of kept exec sessions, so a restarted backend can report the sessions
that its restart ended, and any instance on a shared database can list every
instance's sessions and reach the one holding a session."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ecolink.store.database import Database, StoreError

_OPEN = "ended_reason IS NULL AND exited = 0"


class KeptSessionsTable(Database):
    """The `kept_sessions` table. A record is a dict with the fields id, cluster_id,
    replica, command (list), tty, started_at, exited, exit_code, ended_reason,
    ended_at and instance_id (the instance holding it; None in records older than
    that column). Its writes join the caller's transaction, or make their own."""

    def save_kept_session(self, rec: dict[str, Any]) -> None:
        with self._maybe_tx():
            self._conn.execute(
                "INSERT INTO kept_sessions (id, cluster_id, replica, command, tty,"
                " started_at, exited, exit_code, ended_reason, ended_at, instance_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET cluster_id = excluded.cluster_id,"
                " replica = excluded.replica, command = excluded.command, tty = excluded.tty,"
                " started_at = excluded.started_at, exited = excluded.exited,"
                " exit_code = excluded.exit_code, ended_reason = excluded.ended_reason,"
                " ended_at = excluded.ended_at, instance_id = excluded.instance_id",
                (
                    rec["id"],
                    rec["cluster_id"],
                    rec["replica"],
                    json.dumps(list(rec["command"])),
                    int(bool(rec.get("tty", True))),
                    int(rec["started_at"]),
                    int(bool(rec.get("exited", False))),
                    rec.get("exit_code"),
                    rec.get("ended_reason"),
                    rec.get("ended_at"),
                    rec.get("instance_id"),
                ),
            )

    def update_kept_session(self, session_id: str, **changes: Any) -> None:
        allowed = {"exited", "exit_code", "ended_reason", "ended_at"}
        bad = set(changes) - allowed
        if bad:
            raise StoreError(f"cannot update {sorted(bad)}")
        if not changes:
            return
        sets = ", ".join(f"{k} = ?" for k in changes)
        values = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        with self._maybe_tx():
            self._conn.execute(
                f"UPDATE kept_sessions SET {sets} WHERE id = ?", (*values, session_id)
            )

    def kept_sessions(self, cluster_id: str) -> list[dict[str, Any]]:
        """The cluster's records, oldest first; each also says when its holder was
        last seen (`holder_seen_at`, None when no instance of that id is registered)
        and where it answers (`holder_address`)."""
        rows = self._conn.execute(
            "SELECT k.id, k.cluster_id, k.replica, k.command, k.tty, k.started_at, k.exited,"
            " k.exit_code, k.ended_reason, k.ended_at, k.instance_id, i.seen_at, i.address"
            " FROM kept_sessions k LEFT JOIN instances i ON i.id = k.instance_id"
            " WHERE k.cluster_id = ? ORDER BY k.started_at",
            (cluster_id,),
        ).fetchall()
        return [
            {
                "id": r[0],
                "cluster_id": r[1],
                "replica": r[2],
                "command": json.loads(r[3]),
                "tty": bool(r[4]),
                "started_at": r[5],
                "exited": bool(r[6]),
                "exit_code": r[7],
                "ended_reason": r[8],
                "ended_at": r[9],
                "instance_id": r[10],
                "holder_seen_at": r[11],
                "holder_address": r[12],
            }
            for r in rows
        ]

    def end_open_kept_sessions(
        self, reason: str, now: int, instance_ids: Sequence[str | None] | None = None
    ) -> int:
        """Mark sessions not yet ended as ended (a backend restart ends them): every
        one, or only those held by `instance_ids` (None there: records that name no
        holder)."""
        where, params = _OPEN, [reason, now]
        if instance_ids is not None:
            named = [i for i in instance_ids if i is not None]
            parts = [f"instance_id IN ({', '.join('?' * len(named))})"] if named else []
            if None in instance_ids:
                parts.append("instance_id IS NULL")
            if not parts:
                return 0
            where += f" AND ({' OR '.join(parts)})"
            params += named
        with self._maybe_tx():
            cur = self._conn.execute(
                f"UPDATE kept_sessions SET exited = 1, ended_reason = ?, ended_at = ? WHERE {where}",
                params,
            )
        return cur.rowcount

    def end_kept_sessions_of_gone_instances(self, reason: str, now: int, seen_after: int) -> int:
        """Mark sessions not yet ended whose holder has not been seen after
        `seen_after` (or is not registered at all) as ended."""
        with self._maybe_tx():
            cur = self._conn.execute(
                "UPDATE kept_sessions SET exited = 1, ended_reason = ?, ended_at = ?"
                f" WHERE {_OPEN} AND instance_id IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM instances i WHERE i.id = kept_sessions.instance_id"
                " AND i.seen_at > ?)",
                (reason, now, seen_after),
            )
        return cur.rowcount

    def end_kept_sessions_at_start(self, now: int, previous: str | None, seen_after: int) -> int:
        """What an instance's start ended. SQLite (one instance per database): every
        open session. Postgres (several share it): only the sessions of this state's
        previous instance (`previous`) and those naming no holder ("backend_restart"),
        and those of instances gone, not seen after `seen_after` ("instance_gone");
        the sessions of the other live instances stay theirs."""
        if self.dialect != "postgresql":
            return self.end_open_kept_sessions("backend_restart", now)
        with self._maybe_tx():
            ended = self.end_open_kept_sessions("backend_restart", now, [previous, None])
            return ended + self.end_kept_sessions_of_gone_instances(
                "instance_gone", now, seen_after
            )
