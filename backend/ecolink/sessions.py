"""Kept exec sessions: shells that outlive a dashboard's connection (detach, reattach).

Runtime-agnostic: a session is an `ExecStream` from `Runtime.exec` plus a bounded
history of its output (`keep_bytes`, at least 1 MiB), replayed to every client that
attaches; several clients may be attached at once, all seeing the same output.

Back-pressure without unbounded memory: clients do not have queues of their own,
each is a cursor into the shared history. The session's reader stops (and so makes
the process wait) while a client is about to lose output it has not been sent yet;
if that client does not catch up within `slow_grace_s`, it is dropped (closed with
code 4008), never the others, and nothing a client keeping up has not seen is lost.

Records go to the store (`kept_sessions`) so a restarted backend reports the sessions
its restart ended (`ended_reason` "backend_restart"); without a store, a small JSON
file in the state dir does the same. Each record names the instance holding it:
instances sharing a database list each other's sessions, reach them through their
holder, and report those of an instance gone as ended ("instance_gone"); a start
ends only the sessions of this state dir's previous run (`HOLDER_FILE`).

Bounded per cluster: at most `max_live` (32) sessions still running (one more is
refused with 409 conflict), and of the ended ones only the newest `keep_ended` (32)
are kept in memory and listed; older ones are forgotten.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import secrets
import shlex
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ecocore.clock import Clock
from ecolink.errors import Conflict
from ecolink.runtime.base import (
    ExecRequest,
    ExecResult,
    ExecStream,
    ReplicaNotFound,
    Runtime,
)
from ecolink.store.instances import ALIVE_US

log = logging.getLogger(__name__)

# At least the last MiB is always replayable: whole chunks leave the history, so
# keep one chunk and its overhead more than that.
DEFAULT_KEEP_BYTES = 1024 * 1024 + 2 * 64 * 1024
FRAME_MAX = 64 * 1024
# WebSocket close code for a client dropped because it fell too far behind.
CLOSE_TOO_SLOW = 4008
MAX_LIVE_SESSIONS = 32  # per cluster
KEEP_ENDED_SESSIONS = 32  # per cluster
# The state dir's record of the instance it last served as.
HOLDER_FILE = "sessions.holder"
# Why a session held by an instance that is gone is reported ended.
INSTANCE_GONE = "instance_gone"


def _us(when: datetime) -> int:
    from ecolink.store import to_us

    return to_us(when)


def _rfc3339_us(us: int) -> str:
    from ecolink.store import rfc3339

    return rfc3339(us)


class SessionNotFound(Exception):
    pass


@dataclass(eq=False)
class Client:
    """One attached connection: a cursor (an absolute output offset) into the history."""

    cursor: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False


# Each kept chunk also counts this much towards the budget, so tiny writes cannot
# pile up a huge number of chunk objects.
CHUNK_OVERHEAD = 64


class Session:
    def __init__(
        self,
        manager: SessionManager,
        sid: str,
        cluster_id: str,
        replica: str,
        command: list[str],
        tty: bool,
        started_us: int,
        stream: ExecStream,
    ) -> None:
        self.manager = manager
        self.id = sid
        self.cluster_id = cluster_id
        self.replica = replica
        self.command = command
        self.tty = tty
        self.started_us = started_us
        self.stream = stream
        # History: [start offset, channel, data] chunks, oldest first, from index `head`
        # on (a list with a moving head: O(1) access, amortised O(1) removal).
        self.chunks: list[tuple[int, int, bytearray]] = []
        self.head = 0
        self.kept = 0  # budget used by chunks[head:]
        self.end = 0  # absolute offset after the newest byte
        self.clients: set[Client] = set()
        self.progress = asyncio.Event()  # a client advanced its cursor
        self.exited = False
        self.exit_code: int | None = None
        self.result: ExecResult | None = None
        self.ended_reason: str | None = None
        self.done = asyncio.Event()  # output complete and result known
        self.task: asyncio.Task[None] | None = None

    # -- producing
    @property
    def start(self) -> int:
        """Offset of the oldest byte still kept."""
        return self.chunks[self.head][0] if self.head < len(self.chunks) else self.end

    async def pump(self) -> None:
        try:
            while True:
                frame = await self.stream.read()
                if frame is None:
                    break
                await self._append(*frame)
            self.result = await self.stream.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the runtime lost the process
            log.warning("session %s lost its stream: %s", self.id, exc)
            self.result = ExecResult(exit_code=None, message=str(exc))
        finally:
            with contextlib.suppress(Exception):
                await self.stream.kill()
            if self.result is None:
                self.result = ExecResult(exit_code=None, message="the session was ended")
            self.exited = True
            self.exit_code = self.result.exit_code
            if self.ended_reason is None:
                self.ended_reason = "exited"
            self.done.set()
            for c in list(self.clients):
                c.wake.set()
            self.manager._persist_end(self)
            self.manager._forget_old(self.cluster_id)

    async def _append(self, channel: int, data: bytes) -> None:
        keep = self.manager.keep_bytes
        need = len(data) + CHUNK_OVERHEAD
        # Before dropping old output, make sure no attached client still needs it.
        while self.kept + need > keep and self.head < len(self.chunks) - 1:
            first_start, _, first = self.chunks[self.head]
            first_end = first_start + len(first)
            behind = [c for c in self.clients if not c.dropped and c.cursor < first_end]
            if behind:
                self.progress.clear()
                try:
                    await asyncio.wait_for(self.progress.wait(), self.manager.slow_grace_s)
                except TimeoutError:
                    for c in behind:
                        if c.cursor < first_end:
                            c.dropped = True
                            c.wake.set()
                continue
            self.kept -= len(first) + CHUNK_OVERHEAD
            self.head += 1
            if self.head > 1024 and self.head * 2 > len(self.chunks):
                del self.chunks[: self.head]
                self.head = 0
        last = self.chunks[-1] if self.head < len(self.chunks) else None
        if last is not None and last[1] == channel and len(last[2]) + len(data) <= FRAME_MAX:
            last[2].extend(data)  # coalesce: clients read by offset, so this is safe
            self.kept += len(data)
        else:
            self.chunks.append((self.end, channel, bytearray(data)))
            self.kept += need
        self.end += len(data)
        for c in self.clients:
            c.wake.set()

    # -- consuming
    def attach(self) -> Client:
        c = Client(cursor=self.start)
        self.clients.add(c)
        return c

    def detach(self, c: Client) -> None:
        self.clients.discard(c)
        self.progress.set()

    def _chunk_at(self, offset: int) -> int:
        lo, hi = self.head, len(self.chunks) - 1
        while lo < hi:  # the last chunk starting at or before offset
            mid = (lo + hi + 1) // 2
            if self.chunks[mid][0] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo

    async def frames(self, c: Client) -> AsyncIterator[tuple[int, bytes]]:
        """Output frames for one client: the kept history, then live output, until
        the session's output is complete. Raises `ClientTooSlow` if dropped."""
        while True:
            if c.dropped or c.cursor < self.start:
                c.dropped = True
                raise ClientTooSlow()
            if c.cursor < self.end:
                i = self._chunk_at(c.cursor)
                begin, channel, data = self.chunks[i]
                piece = bytes(data[c.cursor - begin : c.cursor - begin + FRAME_MAX])
                c.cursor += len(piece)
                self.progress.set()
                yield channel, piece
                continue
            if self.done.is_set():
                return
            c.wake.clear()
            if c.cursor < self.end or self.done.is_set() or c.dropped:
                continue
            await c.wake.wait()

    # -- input
    async def write(self, data: bytes) -> None:
        if not self.exited:
            await self.stream.write(data)

    async def resize(self, width: int, height: int) -> None:
        if not self.exited:
            await self.stream.resize(width, height)

    async def close_stdin(self) -> None:
        if not self.exited:
            await self.stream.close_stdin()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cluster_id": self.cluster_id,
            "replica": self.replica,
            "command": list(self.command),
            "tty": self.tty,
            "started_at": _rfc3339_us(self.started_us),
            "exited": self.exited,
            "exit_code": self.exit_code,
            "ended_reason": self.ended_reason,
            "attached": sum(1 for c in self.clients if not c.dropped),
            "instance": self.manager.instance_id,
        }


class ClientTooSlow(Exception):
    """The client fell further behind than the kept history."""


def normalize_command(command: Sequence[str] | str | None) -> list[str]:
    """A string runs as `sh -c`; None or empty: a login shell (the runtime's choice)."""
    if command is None:
        return []
    if isinstance(command, str):
        return ["sh", "-c", command] if command.strip() else []
    return [str(x) for x in command]


class SessionManager:
    """All kept sessions of this backend."""

    def __init__(
        self,
        runtime: Runtime,
        clock: Clock,
        *,
        store: Any = None,
        state_dir: Path | None = None,
        keep_bytes: int = DEFAULT_KEEP_BYTES,
        slow_grace_s: float = 2.0,
        max_live: int = MAX_LIVE_SESSIONS,
        keep_ended: int = KEEP_ENDED_SESSIONS,
    ) -> None:
        self.runtime = runtime
        self.clock = clock
        self.store = store
        self.keep_bytes = max(keep_bytes, FRAME_MAX)
        self.slow_grace_s = slow_grace_s
        self.max_live = max_live
        self.keep_ended = keep_ended
        # Creations under way per cluster (between the limit check and the runtime's
        # answer), so that concurrent requests cannot overshoot the limit.
        self._starting: dict[str, int] = {}
        self._state_dir = Path(state_dir) if state_dir else None
        self._file = (Path(state_dir) / "sessions.json") if (state_dir and store is None) else None
        self._sessions: dict[str, Session] = {}
        # Ends of sessions on their way to the store: session id -> record changes.
        self._ending: dict[str, dict[str, Any]] = {}
        # The instance holding this manager's sessions (its row among the instances
        # serving from the store's database).
        self.instance_id: str | None = getattr(store, "instance_id", None)
        # Since when this instance's own heartbeats have all been recorded (None: they
        # fail now); until then, others' missing heartbeats may be the database's
        # absence, not theirs. Set by whoever runs the heartbeats (presence).
        self.steady_since: Callable[[], int | None] = lambda: 0
        # Whatever was open when the last backend stopped ended with it.
        self._end_open_records("backend_restart")

    # -- records
    def _end_open_records(self, reason: str) -> None:
        now = _us(self.clock.now())
        if self.store is not None:
            previous = self._previous_holder()
            self.store.end_kept_sessions_at_start(now, previous, now - ALIVE_US)
            return
        recs = self._file_records()
        changed = False
        for r in recs:
            if not r.get("exited") and r.get("ended_reason") is None:
                r.update(exited=True, ended_reason=reason, ended_at=now)
                changed = True
        if changed:
            self._write_file(recs)

    def _previous_holder(self) -> str | None:
        """The instance this state directory served as before (its sessions ended
        with it), recorded in the state dir; this instance's id takes its place."""
        if self._state_dir is None or self.instance_id is None:
            return None
        path = self._state_dir / HOLDER_FILE
        previous = None
        with contextlib.suppress(OSError):
            previous = path.read_text().strip() or None
        with contextlib.suppress(OSError):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(self.instance_id + "\n")
            os.replace(tmp, path)
        return previous

    def _file_records(self) -> list[dict[str, Any]]:
        if self._file is None:
            return []
        try:
            data = json.loads(self._file.read_text())
            return data if isinstance(data, list) else []
        except (OSError, ValueError):
            return []

    def _write_file(self, recs: list[dict[str, Any]]) -> None:
        if self._file is None:
            return
        tmp = self._file.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(recs[-1000:]))
            os.replace(tmp, self._file)

    async def _persist_new(self, s: Session) -> None:
        rec = {
            "id": s.id,
            "cluster_id": s.cluster_id,
            "replica": s.replica,
            "command": s.command,
            "tty": s.tty,
            "started_at": s.started_us,
            "exited": False,
            "exit_code": None,
            "ended_reason": None,
            "ended_at": None,
            "instance_id": self.instance_id,
        }
        try:
            if self.store is not None:
                # Written by the store's writer thread: a locked database delays this
                # session's start, never the event loop.
                store = self.store
                await store.run_write(lambda: store.save_kept_session(rec))
            else:
                recs = self._file_records()
                recs.append(rec)
                self._write_file(recs)
        except Exception:
            log.exception("could not record session %s", s.id)

    def _persist_end(self, s: Session) -> None:
        now = _us(self.clock.now())
        changes = dict(
            exited=True, exit_code=s.exit_code, ended_reason=s.ended_reason, ended_at=now
        )
        try:
            if self.store is not None:
                store = self.store
                # Listed from here until the record has it.
                self._ending[s.id] = changes
                store.submit_write(
                    lambda: store.update_kept_session(s.id, **changes),
                    f"the end of session {s.id}",
                    done=lambda: self._ending.pop(s.id, None),
                )
            else:
                recs = self._file_records()
                for r in recs:
                    if r.get("id") == s.id:
                        r.update(changes)
                self._write_file(recs)
        except Exception:
            log.exception("could not record the end of session %s", s.id)

    # -- use
    async def create(
        self,
        cluster_id: str,
        replica: str,
        command: Sequence[str] | str | None,
        tty: bool = True,
        width: int = 80,
        height: int = 24,
    ) -> Session:
        argv = normalize_command(command)
        req = ExecRequest(
            command=tuple(argv),
            stdin=True,
            stdout=True,
            stderr=not tty,
            tty=tty,
            width=width,
            height=height,
        )
        live = self.live_count(cluster_id) + self._starting.get(cluster_id, 0)
        if live >= self.max_live:
            # An unknown replica is a 404 first, as api.md orders the checks.
            if replica not in {r.name for r in self.runtime.replicas(cluster_id)}:
                raise ReplicaNotFound(replica)
            raise Conflict(
                f"the cluster already has {self.max_live} live sessions, the most allowed; "
                "end one (DELETE .../sessions/{sid}) before starting another"
            )
        self._starting[cluster_id] = self._starting.get(cluster_id, 0) + 1
        try:
            stream = await self.runtime.exec(cluster_id, replica, req)
        finally:
            left = self._starting.pop(cluster_id, 1) - 1
            if left:
                self._starting[cluster_id] = left
        sid = "ses_" + secrets.token_hex(8)
        s = Session(
            self,
            sid,
            cluster_id,
            replica,
            argv or ["(login shell)"],
            tty,
            _us(self.clock.now()),
            stream,
        )
        self._sessions[sid] = s
        await self._persist_new(s)
        s.task = asyncio.create_task(s.pump(), name=f"session-{sid}")
        return s

    def live_count(self, cluster_id: str) -> int:
        return sum(
            1 for s in self._sessions.values() if s.cluster_id == cluster_id and not s.exited
        )

    def _forget_old(self, cluster_id: str) -> None:
        """Keep only the newest `keep_ended` ended sessions of a cluster in memory."""
        ended = sorted(
            (s for s in self._sessions.values() if s.cluster_id == cluster_id and s.exited),
            key=lambda s: s.started_us,
        )
        for s in ended[: max(0, len(ended) - self.keep_ended)]:
            self._sessions.pop(s.id, None)

    def get(self, cluster_id: str, sid: str) -> Session:
        s = self._sessions.get(sid)
        if s is None or s.cluster_id != cluster_id:
            raise SessionNotFound(sid)
        return s

    def records(self, cluster_id: str) -> list[dict[str, Any]] | None:
        """The store's records of the cluster's sessions (a store read: for a reader
        thread); None without a store."""
        if self.store is None:
            return None
        recs: list[dict[str, Any]] = self.store.kept_sessions(cluster_id)
        return recs

    def list(
        self, cluster_id: str, stored: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The cluster's sessions, live and ended; `stored`: its `records()`, read
        already (else read here)."""
        live = {sid: s for sid, s in self._sessions.items() if s.cluster_id == cluster_id}
        out: list[dict[str, Any]] = []
        if self.store is not None:
            recs = stored if stored is not None else self.store.kept_sessions(cluster_id)
            for r in recs:
                r.update(self._ending.get(r["id"], {}))
            self._settle_gone(recs)
        else:
            recs = [r for r in self._file_records() if r.get("cluster_id") == cluster_id]
        seen = set()
        for r in recs:
            s = live.get(r["id"])
            if s is not None:
                out.append(s.as_json())
            else:
                out.append(
                    {
                        "id": r["id"],
                        "cluster_id": r["cluster_id"],
                        "replica": r["replica"],
                        "command": list(r["command"]),
                        "tty": bool(r["tty"]),
                        "started_at": _rfc3339_us(int(r["started_at"])),
                        "exited": bool(r["exited"]),
                        "exit_code": r["exit_code"],
                        "ended_reason": r["ended_reason"],
                        "attached": 0,
                        "instance": r.get("instance_id"),
                    }
                )
            seen.add(r["id"])
        for sid, s in live.items():
            if sid not in seen:
                out.append(s.as_json())
        # Ended sessions beyond the newest `keep_ended` are forgotten.
        ended = [r for r in out if r["exited"] or r["ended_reason"] is not None]
        if len(ended) > self.keep_ended:
            ended.sort(key=lambda r: r["started_at"])  # fixed-width RFC 3339: sortable
            drop = {r["id"] for r in ended[: len(ended) - self.keep_ended]}
            out = [r for r in out if r["id"] not in drop]
        return out

    def held_elsewhere(self, r: dict[str, Any]) -> bool:
        """Whether a record is of a session still open that another instance holds."""
        return (
            not r["exited"]
            and r["ended_reason"] is None
            and r.get("instance_id") is not None
            and r.get("instance_id") != self.instance_id
            and r["id"] not in self._sessions
        )

    def _settle_gone(self, recs: builtins.list[dict[str, Any]]) -> None:
        """Records of open sessions whose holder is gone (not seen for `ALIVE_US`, or
        no longer registered) say they ended, here and, soon after, in the store."""
        now = _us(self.clock.now())
        since = self.steady_since()
        if since is None or since > now - ALIVE_US:
            return  # this instance cannot tell yet
        gone: set[str] = set()
        for r in recs:
            if not self.held_elsewhere(r):
                continue
            seen = r.get("holder_seen_at")
            if seen is not None and seen > now - ALIVE_US:
                continue
            r.update(exited=True, ended_reason=INSTANCE_GONE, ended_at=now)
            gone.add(str(r["instance_id"]))
        if gone and self.store is not None:
            store = self.store
            holders = sorted(gone)
            # Only records still open: an end recorded meanwhile is kept as it is.
            store.submit_write(
                lambda: store.end_open_kept_sessions(INSTANCE_GONE, now, holders),
                f"the end of the sessions of instances gone ({', '.join(holders)})",
            )

    def record(
        self, cluster_id: str, sid: str, stored: builtins.list[dict[str, Any]] | None
    ) -> dict[str, Any] | None:
        """The store's record of a session (its holder gone settled), None if none."""
        if self.store is None:
            return None
        recs = stored if stored is not None else self.store.kept_sessions(cluster_id)
        for r in recs:
            if r["id"] == sid:
                r.update(self._ending.get(sid, {}))
                self._settle_gone([r])
                return r
        return None

    def known(
        self, cluster_id: str, sid: str, stored: builtins.list[dict[str, Any]] | None = None
    ) -> dict[str, Any] | None:
        for r in self.list(cluster_id, stored):
            if r["id"] == sid:
                return r
        return None

    async def end(self, cluster_id: str, sid: str, reason: str = "deleted") -> Session:
        s = self.get(cluster_id, sid)
        await self._end(s, reason)
        # Deleted: no more attaching; its record stays listed as ended.
        self._sessions.pop(sid, None)
        return s

    async def _end(self, s: Session, reason: str) -> None:
        if not s.exited:
            s.ended_reason = reason
            with contextlib.suppress(Exception):
                await s.stream.kill()
        if s.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(s.task), 5)
            except (TimeoutError, Exception):
                s.task.cancel()

    async def end_all(self, reason: str = "backend_restart") -> None:
        await asyncio.gather(
            *(self._end(s, reason) for s in list(self._sessions.values())), return_exceptions=True
        )


def describe(command: Sequence[str]) -> str:
    return shlex.join(command)
