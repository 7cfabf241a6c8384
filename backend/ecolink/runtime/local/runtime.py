"""The local runtime: every replica is a real child process on this machine.

A replica runs its cluster's startup command (`sh -c`), or the built-in demo HTTP
service when there is none, in `replicas/<cluster_id>/<replica>/` under the state dir,
in a process group of its own inside the backend's session (without its terminal:
`proc.replica_group_args`), with `PORT` (a free loopback port of its own: processes cannot
share a port the way pods can, so the cluster's endpoint port maps to it), its index,
name, cluster id, `CUDA_VISIBLE_DEVICES`, `HOME` (the working dir), `ECO_FS_<NAME>`
for each shared filesystem (also linked into the working dir) and a marker variable that every process it
starts inherits. Crashes restart with exponential backoff; output goes to rotated
log files (`logs`); stop/scale/restart/terminate end whole process trees,
double-forked daemons included (`proc`: the backend is a child subreaper, so
orphans come back to it; it polls only the processes it tracks while they die, and
scans all of /proc for the marker once, at the end of a stop, scale-down or terminate).
With `drain_in_background` (as `ecolink serve` runs it) a stop, scale-down or
terminate returns once SIGTERM is sent (after `settle_s` at most): the replicas
drain in the background, listed as `Terminating` until they are gone, and a new
replica of the same index starts only once its predecessor has ended (they share
the name, the working dir and the logs). `shutdown` still waits for every one.

After the backend was killed (SIGKILL), `start()` does not adopt what still runs:
it kills every process that carries this state dir's marker and starts the replicas
the store asks for afresh (restart counts begin again at 0). Their output pipes went
with the old backend, so adopting them would leave them without logs.

The parts: `replica` (the records), `layout` (paths, records on disk, shared
filesystems), `supervisor` (each replica's task, reports), `exec`, `logs`,
`ports` (what a replica listens on), `proc` (process trees), `users` (replicas
under their own uids).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from ecocore.clock import Clock
from ecolink.runtime.base import (
    ClusterSpec,
    ExecRequest,
    ExecStream,
    HostPort,
    PortNotListening,
    ReplicaNotFound,
    ReplicaState,
    ReplicaTelemetry,
    Runtime,
    RuntimeInfo,
    RuntimeListener,
)
from ecolink.runtime.local.exec import spawn_exec
from ecolink.runtime.local.layout import Layout
from ecolink.runtime.local.logs import LogSet, read_logs
from ecolink.runtime.local.ports import Undecided, quick_listener, replica_listener
from ecolink.runtime.local.proc import (
    find_marked,
    free_port,
    kill_tree_sync,
    make_subreaper,
    reap_orphans,
)
from ecolink.runtime.local.replica import GpuAllocator, LocalCluster, NullListener, Replica
from ecolink.runtime.local.supervisor import Supervisor, Timing, waiting_reason
from ecolink.runtime.local.users import (
    ReplicaUsers,
    default_replica_root,
    replica_uids_wanted,
)
from ecolink.telemetry import GpuSource, detect_source

log = logging.getLogger(__name__)


def asked_to_run_again(old: ClusterSpec, new: ClusterSpec) -> bool:
    """Whether `new` asks a cluster the runtime gave up on to run again: it was
    stopped, or what its replicas run changed. A change of the public URL, the
    expiry, the grace or the count is none (only new replicas start)."""
    same_run = dataclasses.replace(
        old,
        replicas=new.replicas,
        endpoint_port=new.endpoint_port,
        expires_at=new.expires_at,
        termination_grace_s=new.termination_grace_s,
    )
    return old.replicas == 0 or same_run != new


class LocalRuntime(Runtime):
    def __init__(
        self,
        state_dir: Path,
        clock: Clock,
        *,
        telemetry_source: GpuSource | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        stable_after_s: float = 10.0,
        give_up_after: int = 8,
        grace_s: float = 5.0,
        termination_grace_s: float = 0.0,
        probe_interval_s: float = 1.0,
        log_max_bytes: int = 8 * 1024 * 1024,
        log_backups: int = 3,
        replica_uids: bool | None = None,
        replica_root: Path | None = None,
        disk_quota_bytes: int | None = None,
        disk_check_interval_s: float = 10.0,
        drain_in_background: bool = False,
        settle_s: float = 1.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.source = telemetry_source if telemetry_source is not None else detect_source()
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        # Replicas under their own uids (None: whenever the backend runs as root).
        if replica_uids is None:
            replica_uids = replica_uids_wanted()
        self.users: ReplicaUsers | None = (
            ReplicaUsers(self.state_dir, replica_root or default_replica_root(self.state_dir))
            if replica_uids
            else None
        )
        self.layout = Layout(self.state_dir, self.users)
        self.disk_quota_bytes = disk_quota_bytes
        self.disk_check_interval_s = disk_check_interval_s
        # Whether stop, scale-down and terminate return once SIGTERM is sent (the
        # replicas drain and are killed in the background, as pods terminate) or
        # only once the replicas are gone.
        self.drain_in_background = drain_in_background
        # In the background mode: how long a stop still waits for replicas that end
        # promptly on SIGTERM, so that it answers with them gone.
        self.settle_s = settle_s
        self._quota_task: asyncio.Task[None] | None = None
        # Marks every process of this state dir: a second backend on another state dir
        # never touches ours.
        self.rid = hashlib.blake2b(
            str(self.state_dir.resolve()).encode(), digest_size=6
        ).hexdigest()
        count = self.source.device_count()
        self.supervisor = Supervisor(
            self.layout,
            Timing(
                backoff_base_s=backoff_base_s,
                backoff_cap_s=backoff_cap_s,
                stable_after_s=stable_after_s,
                give_up_after=give_up_after,
                grace_s=grace_s,
                termination_grace_s=termination_grace_s,
                probe_interval_s=probe_interval_s,
            ),
            GpuAllocator(count),
            self.source.kind,
        )
        self._clusters: dict[str, LocalCluster] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.info = RuntimeInfo(
            name="local",
            telemetry=self.source.kind,
            details={"gpus": "simulated" if count is None else str(count)},
        )

    @property
    def grace_s(self) -> float:
        return self.supervisor.timing.grace_s

    @property
    def termination_grace_s(self) -> float:
        return self.supervisor.timing.termination_grace_s

    @property
    def default_termination_grace_s(self) -> float:
        return self.termination_grace_s

    @property
    def files_root(self) -> Path:
        """Where replicas' own files live: outside the state dir when they run as others."""
        return self.layout.files_root

    def workdir(self, cluster_id: str, replica: str) -> Path:
        """A replica's working dir (its HOME)."""
        return self.layout.workdir(cluster_id, replica)

    def shared_filesystem_dir(self, name: str) -> Path:
        return self.layout.shared_filesystem_dir(name)

    def filesystems(self) -> list[dict[str, str]]:
        """Shared filesystems: the directories under the state dir's `filesystems/`."""
        return self.layout.filesystems()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, listener: RuntimeListener, known: Sequence[ClusterSpec]) -> None:
        sup = self.supervisor
        sup.listener = listener
        if self.users is not None:
            await asyncio.to_thread(self.users.prepare)
        if self.disk_quota_bytes is not None and self._quota_task is None:
            self._quota_task = asyncio.create_task(
                sup.quota_loop(
                    lambda: self._clusters.values(),
                    self.disk_quota_bytes,
                    self.disk_check_interval_s,
                ),
                name="local-quota",
            )
        sup.subreaper = make_subreaper()
        self.info.details["subreaper"] = "yes" if sup.subreaper else "no"
        sup.pump()
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_loop(), name="local-reaper")
        # What an earlier backend left running: kill it all, then start afresh.
        roots: list[int] = []
        replicas_root = self.layout.replicas_root()
        known_ids = {s.cluster_id for s in known}
        if replicas_root.is_dir():
            for d in replicas_root.iterdir():
                roots += self.layout.recorded_roots(d.name)
        prefix = f"{self.rid}."
        killed = await asyncio.to_thread(
            kill_tree_sync, lambda m: m.startswith(prefix), roots, self.grace_s
        )
        if killed:
            log.info("stopped %d process(es) left by an earlier backend", killed)
        if replicas_root.is_dir():
            for d in replicas_root.iterdir():
                if d.name not in known_ids and d.name not in self._clusters:
                    await asyncio.to_thread(shutil.rmtree, d, True)
                    await asyncio.to_thread(shutil.rmtree, self.layout.logs_dir(d.name), True)
        for spec in known:
            await self.apply(spec)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reap_orphans)

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def shutdown(self, stop_replicas: bool) -> None:
        sup = self.supervisor
        clusters = list(self._clusters.values())
        for c in clusters:
            if c.rolling is not None:
                c.rolling.cancel()
        if stop_replicas:
            # Waits for every replica, those draining in the background included.
            await asyncio.gather(
                *(sup.remove(r) for c in clusters for r in list(c.replicas.values())),
                *(t for c in clusters for t in list(c.drains)),
                *(c.ending for c in clusters if c.ending is not None),
                return_exceptions=True,
            )
            for c in clusters:
                c.replicas.clear()
            prefix = f"{self.rid}."
            await sup.sweep(lambda m: m.startswith(prefix))
        else:
            for c in clusters:
                for t in [*c.drains, c.ending]:
                    if t is not None:
                        t.cancel()
                for r in [*c.replicas.values(), *c.draining]:
                    r.abandoned = True
                    if r.task is not None:
                        r.task.cancel()
        await self._cancel(self._reaper)
        self._reaper = None
        await self._cancel(self._quota_task)
        self._quota_task = None
        await sup.stop_pump()
        if sup.subreaper:
            # Orphans from now on are not ours to reap any more.
            make_subreaper(False)
            sup.subreaper = False
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reap_orphans)
        sup.listener = NullListener()

    # ------------------------------------------------------------------ reads
    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        c = self._clusters.get(cluster_id)
        return self.supervisor.states(c) if c else []

    def cluster_ids(self) -> list[str]:
        """The clusters this runtime keeps (running or stopped), for reconciliation;
        not those whose termination still drains."""
        return [cid for cid, c in self._clusters.items() if c.ending is None]

    # ------------------------------------------------------------------ apply
    async def apply(self, spec: ClusterSpec) -> None:
        sup = self.supervisor
        c = self._clusters.get(spec.cluster_id)
        if c is not None and c.ending is not None:
            # Run again while its termination still drains (the undo of a terminate
            # that was not recorded): the replicas start afresh once it has ended.
            await asyncio.shield(c.ending)
            c = self._clusters.get(spec.cluster_id)
        if c is None:
            c = LocalCluster(spec)
            self._clusters[spec.cluster_id] = c
        async with c.lock:
            old = c.spec
            c.spec = spec
            if spec.expires_at:
                await asyncio.to_thread(self.layout.write_expiry, spec.cluster_id, spec.expires_at)
            if spec.replicas > 0 and c.failed_reported and asked_to_run_again(old, spec):
                # Asked to run again after the runtime gave up: start from scratch.
                c.failed_reported = False
                for r in c.replicas.values():
                    r.failures = 0
                    r.want = "restart"
                    r.wake.set()
            gone = [r for i, r in c.replicas.items() if i >= spec.replicas]
            for r in gone:
                del c.replicas[r.index]
            for i in range(spec.replicas):
                if i not in c.replicas:
                    c.replicas[i] = self._new_replica(c, i)
            if old.endpoint_port != spec.endpoint_port:
                for r in c.replicas.values():
                    r.wake.set()  # probe the new port now
            drain = sup.retire(c, gone) if gone else None
            sup.notify(c)
        if drain is not None:
            await self._settle(drain)

    def _new_replica(self, c: LocalCluster, index: int) -> Replica:
        spec = c.spec
        name = f"{spec.name}-{index}"
        workdir = self.layout.workdir(spec.cluster_id, name)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        creds = None
        if self.users is not None:
            creds = self.users.credentials(spec.account_id)
            self.users.own_workdir(workdir, creds)
        for fs in spec.shared_filesystems:
            target = self.layout.shared_filesystem_dir(fs)
            link = workdir / fs
            if not link.is_symlink():
                with contextlib.suppress(FileExistsError):
                    link.symlink_to(target, target_is_directory=True)
                if creds is not None:
                    with contextlib.suppress(OSError):
                        os.lchown(link, creds.uid, creds.gid)
        logs = LogSet(
            self.layout.logs_dir(spec.cluster_id) / name, self.log_max_bytes, self.log_backups
        )
        uid = f"{self.rid}.{spec.cluster_id}.{name}.{secrets.token_hex(4)}"
        r = Replica(
            c, index, uid, free_port(), self.supervisor.gpus.take(spec.gpu_count), workdir, logs
        )
        r.creds = creds
        if any(d.index == index for d in c.draining):
            r.reason = waiting_reason(name)  # until its predecessor has ended
        r.task = asyncio.create_task(self.supervisor.supervise(c, r), name=f"replica-{name}")
        return r

    # ------------------------------------------------------------------ actions
    async def terminate(self, cluster_id: str) -> None:
        sup = self.supervisor
        c = self._clusters.get(cluster_id)
        if c is None:
            await self._end_cluster(cluster_id, None)
            return
        if c.ending is None:
            if c.rolling is not None:
                c.rolling.cancel()
            async with c.lock:
                gone = list(c.replicas.values())
                c.replicas.clear()
                if gone:
                    sup.retire(c, gone)
                c.ending = asyncio.create_task(
                    self._end_cluster(cluster_id, c), name=f"terminate-{cluster_id}"
                )
            sup.notify(c)
        await self._settle(c.ending)

    async def _settle(self, end: asyncio.Task[None]) -> None:
        """Wait for `end`: to its end, or (in the background mode) for `settle_s` at
        most, leaving what still drains to the background."""
        if not self.drain_in_background:
            await asyncio.shield(end)
        elif self.settle_s > 0:
            await asyncio.wait({end}, timeout=self.settle_s)

    async def _end_cluster(self, cluster_id: str, c: LocalCluster | None) -> None:
        """Once its replicas have drained: whatever still carries the cluster's
        marker (belt and braces), its record, working dirs and logs go."""
        sup = self.supervisor
        if c is not None:
            while c.drains:
                await asyncio.gather(*list(c.drains), return_exceptions=True)
        prefix = f"{self.rid}.{cluster_id}."
        await sup.sweep(lambda m: m.startswith(prefix))
        if c is None or self._clusters.get(cluster_id) is c:
            self._clusters.pop(cluster_id, None)
        await asyncio.to_thread(shutil.rmtree, self.layout.workdir(cluster_id), True)
        await asyncio.to_thread(shutil.rmtree, self.layout.logs_dir(cluster_id), True)
        sup.replicas_changed(cluster_id, [])

    async def restart(self, cluster_id: str, replica: str | None = None) -> None:
        c = self._clusters.get(cluster_id)
        if c is None:
            if replica is not None:
                raise ReplicaNotFound(replica)
            return
        if replica is not None:
            r = self._find(c, replica)
            await self._restart_one(r)
            return
        if c.rolling is not None and not c.rolling.done():
            c.rolling.cancel()
        c.rolling = asyncio.create_task(self._rolling(c), name=f"rolling-{cluster_id}")

    async def _restart_one(self, r: Replica) -> None:
        runs = r.runs
        r.want = "restart"
        r.wake.set()
        # Return once the new run is started (or the replica went away).
        deadline = (
            asyncio.get_running_loop().time()
            + self.grace_s
            + 10
            + self.supervisor.termination_grace(r.cluster)
        )
        while r.runs == runs and not r.removed:
            r.changed.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.changed.wait(), min(left, 0.2))

    async def _rolling(self, c: LocalCluster) -> None:
        for index in sorted(c.replicas):
            r = c.replicas.get(index)
            if r is None or r.removed:
                continue
            await self._restart_one(r)
            # The next one only once this one serves again (bounded wait).
            deadline = asyncio.get_running_loop().time() + 60
            while not r.removed and not r.ready and r.phase != "Failed":
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                r.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(r.changed.wait(), min(left, 0.5))

    def _find(self, c: LocalCluster, replica: str) -> Replica:
        for r in c.replicas.values():
            if r.name == replica:
                return r
        raise ReplicaNotFound(replica)

    def _lookup(self, cluster_id: str, replica: str) -> tuple[LocalCluster, Replica]:
        """A replica to read or reach: one still draining too (as a terminating pod's
        logs can be read), when no replica of that name runs again."""
        c = self._clusters.get(cluster_id)
        if c is None:
            raise ReplicaNotFound(replica)
        try:
            return c, self._find(c, replica)
        except ReplicaNotFound:
            for r in reversed(c.draining):
                if r.name == replica:
                    return c, r
            raise

    # ------------------------------------------------------------------ exec, logs, service
    async def exec(self, cluster_id: str, replica: str, request: ExecRequest) -> ExecStream:
        c, r = self._lookup(cluster_id, replica)
        return spawn_exec(request, cwd=r.workdir, env=self.supervisor.env(c, r), creds=r.creds)

    def logs(
        self, cluster_id: str, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]:
        _, r = self._lookup(cluster_id, replica)
        return read_logs(
            r.logs, tail=tail, follow=follow, previous=previous, still_there=lambda: not r.removed
        )

    async def service_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        _, r = self._lookup(cluster_id, replica)
        return HostPort("127.0.0.1", r.port)

    async def expiry_changed(self, cluster_id: str, expires_at: str) -> None:
        c = self._clusters.get(cluster_id)
        if c is not None:
            c.spec = dataclasses.replace(c.spec, expires_at=expires_at)
        await asyncio.to_thread(self.layout.write_expiry, cluster_id, expires_at)

    async def forward_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        # Only a port the replica's own processes listen on (`ports`).
        _, r = self._lookup(cluster_id, replica)
        roots = [r.proc.pid] if r.proc and r.exit and not r.exit.exited else []
        try:
            # The common case on the loop (a thread's hop costs more than the look).
            host = quick_listener(roots, port)
        except Undecided:
            host = await asyncio.to_thread(replica_listener, r.uid, roots, port)
        if host is None:
            raise PortNotListening(f"nothing in {r.name} listens on port {port}")
        return HostPort(host, port)

    async def telemetry(self, cluster_id: str) -> list[ReplicaTelemetry]:
        c = self._clusters.get(cluster_id)
        if c is None:
            return []
        now = self.clock.now()
        rs = [c.replicas[i] for i in sorted(c.replicas)]
        gpus = self.supervisor.gpus

        def read_all() -> list[ReplicaTelemetry]:
            return [
                ReplicaTelemetry(
                    replica=r.name,
                    source=self.source.kind,
                    gpus=self.source.read(
                        f"{cluster_id}/{r.name}",
                        c.spec.gpu_type,
                        r.gpus,
                        active=r.phase == "Running",
                        now=now,
                    ),
                    shared=gpus.shared(r.gpus, c.spec.gpu_count),
                )
                for r in rs
            ]

        if self.source.kind == "simulated":
            return read_all()
        return await asyncio.to_thread(read_all)

    # ------------------------------------------------------------------ introspection (tests)
    def replica_pids(self, cluster_id: str) -> dict[str, int | None]:
        c = self._clusters.get(cluster_id)
        if c is None:
            return {}
        return {
            r.name: (r.proc.pid if r.proc and r.exit and not r.exit.exited else None)
            for r in c.replicas.values()
        }

    def replica_port(self, cluster_id: str, replica: str) -> int:
        return self._lookup(cluster_id, replica)[1].port

    def processes_of(self, cluster_id: str) -> list[int]:
        """Pids of live processes carrying the cluster's marker (tests: no orphans)."""
        prefix = f"{self.rid}.{cluster_id}."
        return [p.pid for p in find_marked(lambda m: m.startswith(prefix))]
