"""Records of kept exec sessions, so a restarted backend can report the sessions
that its restart ended."""

from __future__ import annotations

import json
from typing import Any

from ecolink.store.database import Database, StoreError


class KeptSessionsTable(Database):
    """The `kept_sessions` table. A record is a dict with the fields id, cluster_id,
    replica, command (list), tty, started_at, exited, exit_code, ended_reason,
    ended_at. Its writes join the caller's transaction, or make their own."""

    def save_kept_session(self, rec: dict[str, Any]) -> None:
        with self._maybe_tx():
            self._conn.execute(
                "INSERT INTO kept_sessions (id, cluster_id, replica, command, tty,"
                " started_at, exited, exit_code, ended_reason, ended_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET cluster_id = excluded.cluster_id,"
                " replica = excluded.replica, command = excluded.command, tty = excluded.tty,"
                " started_at = excluded.started_at, exited = excluded.exited,"
                " exit_code = excluded.exit_code, ended_reason = excluded.ended_reason,"
                " ended_at = excluded.ended_at",
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
        rows = self._conn.execute(
            "SELECT id, cluster_id, replica, command, tty, started_at, exited, exit_code,"
            " ended_reason, ended_at FROM kept_sessions WHERE cluster_id = ? ORDER BY started_at",
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
            }
            for r in rows
        ]

    def end_open_kept_sessions(self, reason: str, now: int) -> int:
        """Mark every session not yet ended as ended (a backend restart ends them)."""
        with self._maybe_tx():
            cur = self._conn.execute(
                "UPDATE kept_sessions SET exited = 1, ended_reason = ?, ended_at = ?"
                " WHERE ended_reason IS NULL AND exited = 0",
                (reason, now),
            )
        return cur.rowcount
