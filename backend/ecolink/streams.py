"""The read and stream use cases of a cluster: replica logs, exec, the service URL's
targets, port-forward, kept shell sessions and console sessions.

The routes parse, call one of these and shape the answer; none of them reaches the
runtime or the store itself. A route finds the caller's cluster first (404 before
anything else is checked, as api.md orders the checks) and hands it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ecolink.errors import InvalidField, NotFound
from ecolink.runtime.base import (
    ExecRequest,
    ExecStream,
    HostPort,
    ReplicaNotFound,
    ReplicaState,
    Runtime,
    RuntimeUnavailable,
)
from ecolink.service import ClusterService
from ecolink.sessions import Session, SessionManager, SessionNotFound
from ecolink.store import Account, Cluster, Event, LedgerEntry, Store

# How long a port-forward waits for the replica's port to accept.
FORWARD_CONNECT_TIMEOUT_S = 10.0
FORWARD_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServiceTargets:
    """The ready replicas behind a cluster's service URL, the next in turn first."""

    cluster_id: str
    targets: list[HostPort]


@dataclass(frozen=True, slots=True)
class HeldElsewhere:
    """A kept session that another live instance holds: attach there."""

    instance_id: str
    address: str


@dataclass(slots=True)
class Forward:
    """One port-forward connection to a replica's port."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    runtime: Runtime

    def refused(self) -> str | None:
        """Why the replica's side refused the connection (nothing listens), where the
        runtime learns that only after connecting (kubernetes); None otherwise."""
        sockname = self.writer.get_extra_info("sockname")
        if not isinstance(sockname, tuple):
            return None
        return self.runtime.forward_refusal((str(sockname[0]), int(sockname[1])))


class ClusterStreams:
    """Reads and streams of an account's clusters, over the service, the runtime, the
    store and the kept-session manager."""

    def __init__(
        self,
        service: ClusterService,
        runtime: Runtime,
        store: Store,
        sessions: SessionManager | None,
    ) -> None:
        self.service = service
        self.runtime = runtime
        self.store = store
        self.sessions = sessions
        self._turns: dict[str, itertools.count[int]] = {}

    # -- reads, off the event loop ----------------------------------------------
    # Each runs in one of the store's reader threads (`Store.run_read`): a locked or
    # slow database delays that request only, and answers 503 `store_unavailable`
    # once the busy timeout has passed.
    # The two hottest, a cluster and the list, are served from memory while the
    # database has not changed (`Store.cached_read`); what they hand out is shared
    # and never changed.
    async def cluster(self, account_id: str, ref: str) -> Cluster:
        """The account's cluster by id or name (404 otherwise)."""
        service = self.service
        return await self.store.cached_read(
            ("cluster", account_id, ref), lambda: service.get_cluster(account_id, ref)
        )

    async def list_clusters(
        self, account_id: str, statuses: Sequence[str] | None = None
    ) -> list[Cluster]:
        service = self.service
        key = ("list", account_id, tuple(statuses) if statuses is not None else None)
        return await self.store.cached_read(
            key, lambda: service.list_clusters(account_id, statuses)
        )

    async def account(self, account_id: str) -> Account:
        service = self.service
        return await self.store.run_read(lambda: service.account(account_id))

    async def ledger(
        self, account_id: str, *, cluster_ref: str | None, limit: int, before: int | None
    ) -> list[LedgerEntry]:
        """The account's ledger, newest first; only one cluster's entries when
        `cluster_ref` names one (404 on `cluster_id` when it names none of the account's)."""
        service = self.service

        def read() -> list[LedgerEntry]:
            cluster_id = None
            if cluster_ref:
                try:
                    cluster_id = service.get_cluster(account_id, cluster_ref).id
                except NotFound as exc:
                    raise NotFound(exc.message, field="cluster_id") from None
            return service.ledger(account_id, cluster_id=cluster_id, limit=limit, before=before)

        return await self.store.run_read(read)

    async def events(self, cluster_id: str) -> list[Event]:
        service = self.service
        return await self.store.run_read(lambda: service.events(cluster_id))

    # -- logs and exec ----------------------------------------------------------
    def replica_logs(
        self, cluster: Cluster, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]:
        """The replica's output. An unknown replica is refused here, before anything
        is sent (a runtime whose logs() only fails once iterated must not turn that
        into a broken 200)."""
        if replica not in {r.name for r in self.runtime.replicas(cluster.id)}:
            raise ReplicaNotFound(replica)
        source = self.runtime.logs(cluster.id, replica, tail=tail, follow=follow, previous=previous)
        return _closing(source)

    async def open_exec(self, cluster: Cluster, replica: str, request: ExecRequest) -> ExecStream:
        """Start one command in the replica (FileNotFoundError/PermissionError when the
        program is missing or cannot run)."""
        return await self.runtime.exec(cluster.id, replica, request)

    # -- the service URL ---------------------------------------------------------
    async def service_targets(self, account_id: str, ref: str) -> ServiceTargets:
        """The cluster's ready replicas' addresses, starting at the next in turn
        (round-robin): 404 without an endpoint, 503 without a reachable replica."""
        cluster = await self.cluster(account_id, ref)
        if cluster.status == "terminated" or cluster.endpoint_port is None:
            raise NotFound("the cluster has no service endpoint")
        ready = self.ready_replicas(cluster.id)
        if not ready:
            raise RuntimeUnavailable("no ready replica behind the service URL")
        start = self._next_turn(cluster.id) % len(ready)
        found = await self.replica_targets(
            cluster.id, ready[start:] + ready[:start], cluster.endpoint_port
        )
        out = [target for _, target in found]
        if not out:
            raise RuntimeUnavailable("no ready replica behind the service URL")
        return ServiceTargets(cluster.id, out)

    def ready_replicas(self, cluster_id: str) -> list[ReplicaState]:
        """The cluster's ready replicas in index order (RuntimeUnavailable when the
        runtime cannot be reached)."""
        return sorted(
            (r for r in self.runtime.replicas(cluster_id) if r.ready), key=lambda r: r.index
        )

    async def replica_targets(
        self, cluster_id: str, replicas: Sequence[ReplicaState], port: int
    ) -> list[tuple[str, HostPort]]:
        """(replica name, address that reaches `port` of it), in the order given;
        replicas the runtime cannot reach now are left out."""
        out = []
        for r in replicas:
            try:
                out.append((r.name, await self.runtime.service_target(cluster_id, r.name, port)))
            except (ReplicaNotFound, RuntimeUnavailable):
                continue
        return out

    def _next_turn(self, cluster_id: str) -> int:
        turn = self._turns.get(cluster_id)
        if turn is None:
            turn = self._turns[cluster_id] = itertools.count()
        return next(turn)

    # -- port-forward --------------------------------------------------------------
    async def open_forward(self, cluster: Cluster, replica: str, port: int) -> Forward:
        """A TCP connection to `port` of the replica. Raises PortNotListening where
        the runtime can tell nothing listens, ConnectionRefusedError, TimeoutError or
        OSError when the port cannot be reached."""
        target = await self.runtime.forward_target(cluster.id, replica, port)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, limit=FORWARD_CHUNK),
            FORWARD_CONNECT_TIMEOUT_S,
        )
        return Forward(reader, writer, self.runtime)

    # -- kept shell sessions ---------------------------------------------------------
    def _manager(self) -> SessionManager:
        if self.sessions is None:
            raise RuntimeUnavailable("kept sessions are not available")
        return self.sessions

    async def create_session(
        self,
        cluster: Cluster,
        replica: str,
        command: Sequence[str] | str | None,
        *,
        tty: bool,
        width: int,
        height: int,
    ) -> Session:
        sm = self._manager()
        try:
            return await sm.create(cluster.id, replica, command, tty, width=width, height=height)
        except (FileNotFoundError, PermissionError) as exc:
            raise InvalidField(
                f"command: cannot run {exc.filename or 'it'}: {exc.strerror}", "command"
            ) from None

    async def _records(self, sm: SessionManager, cluster: Cluster) -> list[dict[str, Any]] | None:
        """The cluster's kept-session records, read in a reader thread of the store."""
        return await self.store.run_read(lambda: sm.records(cluster.id))

    async def list_sessions(self, cluster: Cluster) -> list[dict[str, Any]]:
        sm = self._manager()
        return sm.list(cluster.id, await self._records(sm, cluster))

    async def end_session(
        self, cluster: Cluster, sid: str, *, forwarded: bool = False
    ) -> dict[str, Any] | HeldElsewhere:
        """End a kept session; one that ended before (a backend restart, its instance
        gone) is answered as it is; one that another live instance holds is ended
        there (503 when that instance cannot be told; see `live_session`)."""
        sm = self._manager()
        try:
            s = await sm.end(cluster.id, sid, "deleted")
        except SessionNotFound:
            recs = await self._records(sm, cluster)
            held = sm.record(cluster.id, sid, recs)
            if held is not None and sm.held_elsewhere(held):
                return self._holder(sid, held, forwarded)
            rec = sm.known(cluster.id, sid, recs)
            if rec is None:
                raise NotFound(f"no session {sid!r}", "sid") from None
            return rec
        return s.as_json()

    @staticmethod
    def _holder(sid: str, rec: dict[str, Any], forwarded: bool) -> HeldElsewhere:
        address = rec.get("holder_address")
        if forwarded or not address:
            raise RuntimeUnavailable(
                f"session {sid!r} is held by instance {rec['instance_id']}, "
                + (
                    "and this request was passed on by another instance already"
                    if forwarded
                    else "which has no address to reach it at"
                )
            )
        return HeldElsewhere(str(rec["instance_id"]), str(address))

    async def live_session(
        self, cluster: Cluster, sid: str, *, forwarded: bool = False
    ) -> Session | HeldElsewhere:
        """A session still running, to attach to: this instance's own, or where another
        live instance holds it, that instance (503 when it cannot be told; 404 saying
        why when the session ended, its holder gone included). `forwarded`: the
        request came from another instance already, and is never passed on again."""
        sm = self._manager()
        try:
            return sm.get(cluster.id, sid)
        except SessionNotFound:
            pass
        recs = await self._records(sm, cluster)
        rec = sm.record(cluster.id, sid, recs)
        if rec is not None and sm.held_elsewhere(rec):
            return self._holder(sid, rec, forwarded)
        known = sm.known(cluster.id, sid, recs) if rec is None else rec
        why = f" (ended: {known['ended_reason']})" if known and known["ended_reason"] else ""
        raise NotFound(f"no live session {sid!r}{why}", "sid") from None

    # -- console sessions (the eco_session cookie) -----------------------------------
    async def open_console_session(self, account_id: str, key_id: int) -> tuple[str, int]:
        """A new console session of the account: its token and when it expires."""
        now = self.service.now()
        store = self.store
        # Written by the store's writer thread, never on the event loop.
        return await store.run_write(lambda: store.create_console_session(account_id, now, key_id))

    async def end_console_session(self, account_id: str, token: str) -> None:
        """End the session of `token` if it is the account's (a key ends its own
        account's session, never another's)."""
        store = self.store
        now = self.service.now()
        owner = await store.run_read(lambda: store.account_for_session(token, now))
        if owner is not None and owner.id == account_id:
            await store.run_write(lambda: store.delete_console_session(token))

    # -- what the watch feed reads ------------------------------------------------------
    def owned_cluster(self, account_id: str, cluster_id: str) -> Cluster | None:
        """The cluster by id if it is the account's, else None (no error)."""
        c = self.store.cluster(cluster_id)
        return c if c is not None and c.account_id == account_id else None

    def find_cluster(self, account_id: str, ref: str) -> Cluster | None:
        return self.store.find_cluster(account_id, ref)

    def cluster_by_id(self, cluster_id: str) -> Cluster | None:
        return self.store.cluster(cluster_id)

    def account_or_none(self, account_id: str) -> Account | None:
        return self.store.account(account_id)


async def _closing(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`source`, closed when the reader stops early (the client went away)."""
    try:
        async for chunk in source:
            yield chunk
    finally:
        if isinstance(source, AsyncGenerator):
            with contextlib.suppress(Exception):
                await source.aclose()
