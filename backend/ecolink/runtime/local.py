"""The local runtime: every replica is a real child process on this machine.

A replica runs its cluster's startup command (`sh -c`), or the built-in demo HTTP
service when there is none, in `replicas/<cluster_id>/<replica>/` under the state dir,
in its own session, with `PORT` (a free loopback port of its own: processes cannot
share a port the way pods can, so the cluster's endpoint port maps to it), its index,
name, cluster id, `CUDA_VISIBLE_DEVICES`, `HOME` (the working dir), `ECO_FS_<NAME>`
for each shared filesystem (also linked into the working dir) and a marker variable that every process it
starts inherits. Crashes restart with exponential backoff; output goes to rotated
log files (`local_logs`); stop/scale/restart/terminate end whole process trees,
double-forked daemons included (`local_proc`: the backend is a child subreaper, so
orphans come back to it; it polls only the processes it tracks while they die, and
scans all of /proc for the marker once, at the end of a stop, scale-down or terminate).

After the backend was killed (SIGKILL), `start()` does not adopt what still runs:
it kills every process that carries this state dir's marker and starts the replicas
the store asks for afresh (restart counts begin again at 0). Their output pipes went
with the old backend, so adopting them would leave them without logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Literal

import ecolink
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
from ecolink.runtime.local_exec import spawn_exec
from ecolink.runtime.local_logs import LogPump, LogSet, read_logs
from ecolink.runtime.local_ports import replica_listener
from ecolink.runtime.local_proc import (
    MARKER,
    ChildExit,
    find_marked,
    free_port,
    kill_now_sync,
    kill_tree_sync,
    make_subreaper,
    port_free,
    reap_orphans,
    start_time,
    sweep_sync,
    term_groups_and_wait_sync,
)
from ecolink.runtime.local_users import (
    Credentials,
    ReplicaUsers,
    default_replica_root,
    directory_size,
    popen_credentials,
    replica_uids_wanted,
    searchable_path,
)
from ecolink.telemetry import GpuSource, detect_source

log = logging.getLogger(__name__)

Want = Literal["run", "restart", "remove", "over_quota"]


def _describe_exit(code: int) -> str:
    if code == 127:
        return "exited with code 127 (command not found)"
    if code == 126:
        return "exited with code 126 (command not executable)"
    if code > 128:
        import signal

        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"killed by {name} (exit code {code})"
    return f"exited with code {code}"


def fs_env_name(name: str) -> str:
    return "ECO_FS_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class _NullListener:
    def replicas_changed(self, cluster_id: str, replicas: Sequence[ReplicaState]) -> None:
        pass

    def runtime_event(
        self, cluster_id: str, kind: str, message: str, replica: str | None = None
    ) -> None:
        pass

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        pass


class _GpuAllocator:
    """Hands out physical GPU indices; when there are too few, replicas share."""

    def __init__(self, count: int | None) -> None:
        self.count = count
        self.usage = [0] * (count or 0)

    def take(self, k: int) -> tuple[int, ...]:
        if self.count is None:
            return tuple(range(k))  # simulated: every replica has its own GPUs
        if self.count == 0 or k <= 0:
            return ()
        order = sorted(range(self.count), key=lambda i: (self.usage[i], i))
        chosen = tuple(sorted(order[: min(k, self.count)]))
        for i in chosen:
            self.usage[i] += 1
        return chosen

    def give(self, indices: Sequence[int]) -> None:
        if self.count is None:
            return
        for i in indices:
            self.usage[i] = max(0, self.usage[i] - 1)

    def shared(self, indices: Sequence[int], wanted: int) -> bool:
        if self.count is None:
            return False
        return len(indices) < wanted or any(self.usage[i] > 1 for i in indices)


class _Replica:
    def __init__(self, cluster: _Cluster, index: int, uid: str, port: int,
                 gpus: tuple[int, ...], workdir: Path, logs: LogSet) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"{cluster.spec.name}-{index}"
        self.uid = uid
        self.port = port
        self.gpus = gpus
        self.workdir = workdir
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit: ChildExit | None = None
        self.phase: Literal["Pending", "Running", "Failed"] = "Pending"
        self.ready = False
        self.restarts = 0
        self.reason: str | None = None
        self.failures = 0  # crashes in a row, each after a short run
        self.want: Want = "run"
        self.wake = asyncio.Event()
        self.runs = 0  # increases with each spawn
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.removed = False
        self.abandoned = False
        self.creds: Credentials | None = None  # the uid it runs as (None: the backend's)  # the backend shuts down and leaves the process running

    def state(self) -> ReplicaState:
        return ReplicaState(
            name=self.name,
            index=self.index,
            phase=self.phase,
            ready=self.ready,
            restarts=self.restarts,
            reason=self.reason,
            node="localhost",
        )


class _Cluster:
    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.replicas: dict[int, _Replica] = {}
        self.lock = asyncio.Lock()
        self.rolling: asyncio.Task[None] | None = None
        self.failed_reported = False


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
    ) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.source = telemetry_source if telemetry_source is not None else detect_source()
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stable_after_s = stable_after_s
        self.give_up_after = give_up_after
        self.grace_s = grace_s
        # How long a replica's own process has after SIGTERM to drain or checkpoint
        # (stop, terminate, expiry; `ecolink serve` gives 30 s); what is left after
        # that gets grace_s more, then SIGKILL.
        self.termination_grace_s = termination_grace_s
        self.probe_interval_s = probe_interval_s
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        # Replicas under their own uids (None: whenever the backend runs as root).
        if replica_uids is None:
            replica_uids = replica_uids_wanted()
        self.users: ReplicaUsers | None = (
            ReplicaUsers(self.state_dir, replica_root or default_replica_root(self.state_dir))
            if replica_uids else None)
        # Where replicas' own files live: outside the state dir when they run as others.
        self.files_root = self.users.root if self.users is not None else self.state_dir
        self.disk_quota_bytes = disk_quota_bytes
        self.disk_check_interval_s = disk_check_interval_s
        self._quota_task: asyncio.Task[None] | None = None
        # Marks every process of this state dir: a second backend on another state dir
        # never touches ours.
        self.rid = hashlib.blake2b(
            str(self.state_dir.resolve()).encode(), digest_size=6
        ).hexdigest()
        self._gpus = _GpuAllocator(self.source.device_count())
        self._clusters: dict[str, _Cluster] = {}
        self._listener: RuntimeListener = _NullListener()
        self._pump: LogPump | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._subreaper = False
        self._base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("ECO_", "ECOLINK_"))
        }
        self._pkg_root = str(Path(ecolink.__file__).resolve().parent.parent)
        count = self.source.device_count()
        self.info = RuntimeInfo(
            name="local",
            telemetry=self.source.kind,
            details={"gpus": "simulated" if count is None else str(count)},
        )

    # ------------------------------------------------------------------ paths
    def _workdir(self, cid: str, name: str | None = None) -> Path:
        d = self.files_root / "replicas" / cid
        return d / name if name else d

    def workdir(self, cluster_id: str, replica: str) -> Path:
        """A replica's working dir (its HOME)."""
        return self._workdir(cluster_id, replica)

    def shared_filesystem_dir(self, name: str) -> Path:
        if self.users is not None:
            return self.users.shared_filesystem(name)
        target = self.state_dir / "filesystems" / name
        target.mkdir(parents=True, exist_ok=True)
        return target.resolve()

    def _logs_dir(self, cid: str) -> Path:
        return self.state_dir / "logs" / cid

    def _record_path(self, cid: str) -> Path:
        return self._workdir(cid) / "runtime.json"

    # ------------------------------------------------------------------ lifecycle
    async def start(self, listener: RuntimeListener, known: Sequence[ClusterSpec]) -> None:
        self._listener = listener
        if self.users is not None:
            await asyncio.to_thread(self.users.prepare)
        if self.disk_quota_bytes is not None and self._quota_task is None:
            self._quota_task = asyncio.create_task(self._quota_loop(), name="local-quota")
        self._subreaper = make_subreaper()
        self.info.details["subreaper"] = "yes" if self._subreaper else "no"
        self._ensure_pump()
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_loop(), name="local-reaper")
        # What an earlier backend left running: kill it all, then start afresh.
        roots: list[int] = []
        replicas_root = self.files_root / "replicas"
        known_ids = {s.cluster_id for s in known}
        if replicas_root.is_dir():
            for d in replicas_root.iterdir():
                roots += self._recorded_roots(d.name)
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
                    await asyncio.to_thread(shutil.rmtree, self._logs_dir(d.name), True)
        for spec in known:
            await self.apply(spec)

    def _recorded_roots(self, cid: str) -> list[int]:
        try:
            rec = json.loads(self._record_path(cid).read_text())
        except (OSError, ValueError):
            return []
        out = []
        for r in rec.get("replicas", {}).values():
            pid, st = r.get("pid"), r.get("start_time")
            if isinstance(pid, int) and st is not None and start_time(pid) == st:
                out.append(pid)
        return out

    def _ensure_pump(self) -> LogPump:
        if self._pump is None:
            self._pump = LogPump()
        return self._pump

    async def _quota_loop(self) -> None:
        """Stop any replica whose working dir (its HOME) grew past the disk quota."""
        quota = self.disk_quota_bytes
        assert quota is not None
        while True:
            await asyncio.sleep(self.disk_check_interval_s)
            for c in list(self._clusters.values()):
                for r in list(c.replicas.values()):
                    if r.phase != "Running" or r.want != "run":
                        continue
                    try:
                        used = await asyncio.to_thread(directory_size, r.workdir, quota)
                    except Exception:
                        log.exception("disk check of %s failed", r.name)
                        continue
                    if used > quota and r.want == "run":
                        mib = 1024 * 1024
                        r.reason = (f"stopped: its files grew past the disk quota "
                                    f"({used // mib} MiB used, quota {quota // mib} MiB)")
                        log.warning("replica %s of %s: %s", r.name, c.spec.cluster_id,
                                    r.reason)
                        r.want = "over_quota"
                        r.wake.set()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reap_orphans)

    async def shutdown(self, stop_replicas: bool) -> None:
        clusters = list(self._clusters.values())
        for c in clusters:
            if c.rolling is not None:
                c.rolling.cancel()
        if stop_replicas:
            await asyncio.gather(
                *(self._remove(c, r) for c in clusters for r in list(c.replicas.values())),
                return_exceptions=True,
            )
            for c in clusters:
                c.replicas.clear()
            prefix = f"{self.rid}."
            await self._sweep(lambda m: m.startswith(prefix))
        else:
            for c in clusters:
                for r in c.replicas.values():
                    r.abandoned = True
                    if r.task is not None:
                        r.task.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._quota_task is not None:
            self._quota_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quota_task
            self._quota_task = None
        if self._pump is not None:
            await asyncio.to_thread(self._pump.stop)
            self._pump = None
        if self._subreaper:
            # Orphans from now on are not ours to reap any more.
            make_subreaper(False)
            self._subreaper = False
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reap_orphans)
        self._listener = _NullListener()

    # ------------------------------------------------------------------ reports
    def _notify(self, c: _Cluster) -> None:
        try:
            self._listener.replicas_changed(c.spec.cluster_id, self._states(c))
        except Exception:
            log.exception("replicas_changed listener failed")

    def _event(self, c: _Cluster, kind: str, message: str, replica: str | None = None) -> None:
        try:
            self._listener.runtime_event(c.spec.cluster_id, kind, message, replica)
        except Exception:
            log.exception("runtime_event listener failed")

    def _set(self, r: _Replica, **changes: object) -> None:
        changed = False
        for k, v in changes.items():
            if getattr(r, k) != v:
                setattr(r, k, v)
                changed = True
        if changed and not r.removed:
            r.changed.set()
            self._notify(r.cluster)

    def _states(self, c: _Cluster) -> list[ReplicaState]:
        return [c.replicas[i].state() for i in sorted(c.replicas)]

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        c = self._clusters.get(cluster_id)
        return self._states(c) if c else []

    def cluster_ids(self) -> list[str]:
        """The clusters this runtime keeps (running or stopped), for reconciliation."""
        return list(self._clusters)

    # ------------------------------------------------------------------ apply
    async def apply(self, spec: ClusterSpec) -> None:
        c = self._clusters.get(spec.cluster_id)
        if c is None:
            c = _Cluster(spec)
            self._clusters[spec.cluster_id] = c
        async with c.lock:
            old = c.spec
            c.spec = spec
            if spec.expires_at:
                await asyncio.to_thread(self._write_expiry, spec.cluster_id, spec.expires_at)
            if spec.replicas > 0 and c.failed_reported:
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
            self._notify(c)
            if gone:
                await asyncio.gather(*(self._remove(c, r) for r in gone))
                self._write_record(c)
        if gone:
            uids = {r.uid for r in gone}
            await self._sweep(lambda m: m in uids)

    def _new_replica(self, c: _Cluster, index: int) -> _Replica:
        spec = c.spec
        name = f"{spec.name}-{index}"
        workdir = self._workdir(spec.cluster_id, name)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        creds = None
        if self.users is not None:
            creds = self.users.credentials(spec.account_id)
            self.users.own_workdir(workdir, creds)
        for fs in spec.shared_filesystems:
            target = self.shared_filesystem_dir(fs)
            link = workdir / fs
            if not link.is_symlink():
                with contextlib.suppress(FileExistsError):
                    link.symlink_to(target, target_is_directory=True)
                if creds is not None:
                    with contextlib.suppress(OSError):
                        os.lchown(link, creds.uid, creds.gid)
        logs = LogSet(self._logs_dir(spec.cluster_id) / name, self.log_max_bytes, self.log_backups)
        uid = f"{self.rid}.{spec.cluster_id}.{name}.{secrets.token_hex(4)}"
        r = _Replica(c, index, uid, free_port(), self._gpus.take(spec.gpu_count), workdir, logs)
        r.creds = creds
        r.task = asyncio.create_task(self._supervise(c, r), name=f"replica-{name}")
        return r

    def _env(self, c: _Cluster, r: _Replica) -> dict[str, str]:
        spec = c.spec
        env = dict(self._base_env)
        env.update(
            PORT=str(r.port),
            ECO_REPLICA_INDEX=str(r.index),
            ECO_REPLICA_NAME=r.name,
            ECO_CLUSTER_ID=spec.cluster_id,
            ECO_CLUSTER_NAME=spec.name,
            ECO_GPU_TYPE=spec.gpu_type,
            ECO_GPU_COUNT=str(spec.gpu_count),
            ECO_IMAGE=spec.image,
            ECO_TELEMETRY=self.source.kind,
            CUDA_VISIBLE_DEVICES=",".join(map(str, r.gpus)),
            ECO_EXPIRES_AT=spec.expires_at or "",
            ECO_EXPIRES_AT_FILE=str(self._expiry_path(spec.cluster_id)),
            # The working dir is the replica's home, as a container's is its own:
            # the user's dotfiles (and whatever their login scripts run) stay out.
            HOME=str(r.workdir),
        )
        env[MARKER] = r.uid
        for fs in spec.shared_filesystems:
            env[fs_env_name(fs)] = str(self.shared_filesystem_dir(fs))
        if r.creds is not None:
            env["USER"] = env["LOGNAME"] = f"replica{r.creds.uid}"
            env["PATH"] = searchable_path(env.get("PATH", os.defpath))
        return env

    def _write_record(self, c: _Cluster) -> None:
        rec = {
            "cluster_id": c.spec.cluster_id,
            "replicas": {
                r.name: {
                    "pid": r.proc.pid if r.proc else None,
                    "start_time": start_time(r.proc.pid) if r.proc else None,
                    "uid": r.uid,
                    "port": r.port,
                }
                for r in c.replicas.values()
            },
        }
        path = self._record_path(c.spec.cluster_id)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

    # ------------------------------------------------------------------ supervision
    def _spawn(self, c: _Cluster, r: _Replica) -> None:
        spec = c.spec
        env = self._env(c, r)
        if spec.startup_command:
            argv = ["sh", "-c", spec.startup_command]
        elif self.users is not None:
            argv = self.users.demo_argv()
        else:
            argv = [sys.executable, "-m", "ecolink.demo_service"]
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self._pkg_root, env.get("PYTHONPATH", "")) if p
            )
        if not port_free(r.port):
            r.port = free_port()  # someone took it while the replica was down
            env["PORT"] = str(r.port)
        writer = r.logs.new_run()
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=r.workdir,
                env=env,
                start_new_session=True,
                close_fds=True,
                **popen_credentials(r.creds),
            )
        except BaseException:
            os.close(read_fd)
            writer.close()
            raise
        finally:
            os.close(write_fd)
        r.proc = proc
        r.exit = ChildExit(proc)
        r.runs += 1
        self._ensure_pump().add(read_fd, writer)
        self._write_record(c)

    async def _supervise(self, c: _Cluster, r: _Replica) -> None:
        loop = asyncio.get_running_loop()
        try:
            while r.want != "remove":
                if r.want == "restart":  # asked for by the user: a fresh start
                    r.failures = 0
                    self._set(r, restarts=0, reason=None)
                r.want = "run"
                r.wake.clear()
                try:
                    # Whatever the last run left behind (daemons) goes first.
                    if r.runs:
                        await self._kill_leftovers(r)
                    last = r.logs.writer
                    if last is not None and not last.done.is_set():
                        # Let the last run's output reach its file before it becomes `prev`.
                        await asyncio.to_thread(last.done.wait, 2.0)
                    self._spawn(c, r)
                except OSError as exc:
                    code, started = None, loop.time()
                    desc = f"could not start: {exc}"
                else:
                    started = loop.time()
                    self._set(r, phase="Running", ready=False)
                    code = await self._watch_run(c, r)
                    desc = _describe_exit(code) if code is not None else ""
                if r.want == "remove":
                    break
                if r.want == "restart":
                    continue
                if r.want == "over_quota":
                    # Stopped for filling its disk: not restarted until asked to.
                    await self._kill_leftovers(r)
                    reason = r.reason or "over its disk quota"
                    self._set(r, phase="Failed", ready=False, reason=reason)
                    self._event(c, "replica_failed", f"{r.name} stopped: {reason}", r.name)
                    self._check_cluster_failed(c)
                    await r.wake.wait()
                    continue
                # The process ended on its own: a crash (as for a container, even exit 0).
                await self._kill_leftovers(r)
                if loop.time() - started >= self.stable_after_s:
                    r.failures = 0
                r.failures += 1
                restarts = r.restarts + 1
                self._event(c, "replica_crashed", f"{r.name} {desc} (restart {restarts})", r.name)
                if r.failures >= self.give_up_after:
                    self._set(
                        r,
                        phase="Failed",
                        ready=False,
                        restarts=restarts,
                        reason=f"{desc}; gave up after {r.failures} crashes in a row",
                    )
                    self._event(c, "replica_failed", f"{r.name} {r.reason}", r.name)
                    self._check_cluster_failed(c)
                    await r.wake.wait()
                    continue
                delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (r.failures - 1))
                self._set(
                    r,
                    phase="Pending",
                    ready=False,
                    restarts=restarts,
                    reason=f"CrashLoopBackOff: {desc}; restarting in {delay:g}s",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(r.wake.wait(), delay)
                if r.want == "run":
                    self._set(r, reason=f"last exit: {desc}")
        finally:
            if not r.abandoned:
                await self._end_run(r)

    async def _watch_run(self, c: _Cluster, r: _Replica) -> int | None:
        """Wait for the run to end, probing readiness meanwhile. Kills the run when
        asked to (restart, remove). Returns the exit code."""
        assert r.exit is not None
        exit_fut = r.exit.future()
        delay = 0.05
        while True:
            wake = asyncio.ensure_future(r.wake.wait())
            try:
                await asyncio.wait({exit_fut, wake}, timeout=delay,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
            if exit_fut.done():
                self._set(r, ready=False)
                return exit_fut.result()
            if r.want != "run":
                await self._end_run(r)
                return exit_fut.result() if exit_fut.done() else None
            r.wake.clear()
            await self._probe(c, r)
            delay = min(self.probe_interval_s, delay * 2)

    async def _probe(self, c: _Cluster, r: _Replica) -> None:
        port = c.spec.endpoint_port
        if port is None:
            ready = True
        else:
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", r.port), 1.0)
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
                ready = True
            except (OSError, TimeoutError):
                ready = False
        if r.exit is not None and r.exit.exited:
            return
        was = r.ready
        self._set(r, ready=ready)
        if ready and not was:
            self._event(c, "replica_ready", f"{r.name} is ready", r.name)

    async def _end_run(self, r: _Replica) -> None:
        """End the current run and everything it started (SIGTERM, then SIGKILL)."""
        proc = r.proc
        roots = [proc.pid] if proc is not None and r.exit and not r.exit.exited else []
        uid = r.uid
        if self.termination_grace_s > 0:
            # The replica's own process group and those of what runs in it through
            # exec (shells, kept sessions, copies): SIGTERM, then up to
            # termination_grace_s to drain or checkpoint before anything is killed.
            await asyncio.to_thread(term_groups_and_wait_sync, lambda m: m == uid,
                                    roots[0] if roots else None, self.termination_grace_s)
            # The replica's process may have ended (and its pid been reused) meanwhile.
            roots = [p for p in roots if r.exit is not None and not r.exit.exited]
        # As a subreaper, everything the run started is its descendant or our orphan:
        # no need to scan all of /proc (the stop's last sweep covers the rest).
        await asyncio.to_thread(kill_tree_sync, lambda m: m == uid, roots, self.grace_s,
                                full_scan=not self._subreaper)
        if r.exit is not None:
            try:
                await asyncio.wait_for(r.exit.wait(), 2.0)
            except TimeoutError:  # should not happen after SIGKILL
                log.warning("replica %s did not exit", r.name)

    async def _kill_leftovers(self, r: _Replica) -> None:
        """Kill what an ended run left behind (daemons): as a subreaper, those are our
        orphans, found without a scan of all /proc."""
        uid = r.uid
        await asyncio.to_thread(kill_now_sync, lambda m: m == uid, [],
                                full_scan=not self._subreaper)

    async def _sweep(self, match: Callable[[str], bool]) -> None:
        """The one full /proc scan at the end of a stop or terminate, in a thread."""
        n = await asyncio.to_thread(sweep_sync, match, self.grace_s)
        if n:
            log.info("ended %d escaped process(es)", n)

    async def _remove(self, c: _Cluster, r: _Replica) -> None:
        r.removed = True
        r.want = "remove"
        r.wake.set()
        if r.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await r.task
        self._gpus.give(r.gpus)
        r.gpus = ()

    def _check_cluster_failed(self, c: _Cluster) -> None:
        rs = list(c.replicas.values())
        if rs and all(r.phase == "Failed" for r in rs) and not c.failed_reported:
            c.failed_reported = True
            reasons = sorted({r.reason or "" for r in rs})
            msg = f"every replica failed: {'; '.join(reasons)}"
            try:
                self._listener.cluster_failed(c.spec.cluster_id, msg)
            except Exception:
                log.exception("cluster_failed listener failed")

    # ------------------------------------------------------------------ actions
    async def terminate(self, cluster_id: str) -> None:
        c = self._clusters.get(cluster_id)
        prefix = f"{self.rid}.{cluster_id}."
        if c is not None:
            if c.rolling is not None:
                c.rolling.cancel()
            async with c.lock:
                gone = list(c.replicas.values())
                c.replicas.clear()
                await asyncio.gather(*(self._remove(c, r) for r in gone))
        # Anything that still carries the cluster's marker (belt and braces).
        await self._sweep(lambda m: m.startswith(prefix))
        self._clusters.pop(cluster_id, None)
        await asyncio.to_thread(shutil.rmtree, self._workdir(cluster_id), True)
        await asyncio.to_thread(shutil.rmtree, self._logs_dir(cluster_id), True)
        try:
            self._listener.replicas_changed(cluster_id, [])
        except Exception:
            log.exception("replicas_changed listener failed")

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

    async def _restart_one(self, r: _Replica) -> None:
        runs = r.runs
        r.want = "restart"
        r.wake.set()
        # Return once the new run is started (or the replica went away).
        deadline = asyncio.get_running_loop().time() + self.grace_s + 10
        while r.runs == runs and not r.removed:
            r.changed.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.changed.wait(), min(left, 0.2))

    async def _rolling(self, c: _Cluster) -> None:
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

    def _find(self, c: _Cluster, replica: str) -> _Replica:
        for r in c.replicas.values():
            if r.name == replica:
                return r
        raise ReplicaNotFound(replica)

    def _lookup(self, cluster_id: str, replica: str) -> tuple[_Cluster, _Replica]:
        c = self._clusters.get(cluster_id)
        if c is None:
            raise ReplicaNotFound(replica)
        return c, self._find(c, replica)

    # ------------------------------------------------------------------ exec, logs, service
    async def exec(self, cluster_id: str, replica: str, request: ExecRequest) -> ExecStream:
        c, r = self._lookup(cluster_id, replica)
        env = self._env(c, r)
        return spawn_exec(request, cwd=r.workdir, env=env, creds=r.creds)

    def logs(
        self, cluster_id: str, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]:
        c, r = self._lookup(cluster_id, replica)
        return read_logs(
            r.logs,
            tail=tail,
            follow=follow,
            previous=previous,
            still_there=lambda: not r.removed,
        )

    async def service_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        _, r = self._lookup(cluster_id, replica)
        return HostPort("127.0.0.1", r.port)

    def _expiry_path(self, cid: str) -> Path:
        return self._workdir(cid) / "expires_at"

    def _write_expiry(self, cid: str, expires_at: str) -> None:
        path = self._expiry_path(cid)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(".expires_at.tmp")
        tmp.write_text(expires_at + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, path)  # readers never see a half-written file

    async def expiry_changed(self, cluster_id: str, expires_at: str) -> None:
        c = self._clusters.get(cluster_id)
        if c is not None:
            c.spec = dataclasses.replace(c.spec, expires_at=expires_at)
        await asyncio.to_thread(self._write_expiry, cluster_id, expires_at)

    async def forward_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        # Only a port the replica's own processes listen on (local_ports).
        _, r = self._lookup(cluster_id, replica)
        roots = [r.proc.pid] if r.proc and r.exit and not r.exit.exited else []
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

        def read_all() -> list[ReplicaTelemetry]:
            out = []
            for r in rs:
                gpus = self.source.read(
                    f"{cluster_id}/{r.name}",
                    c.spec.gpu_type,
                    r.gpus,
                    active=r.phase == "Running",
                    now=now,
                )
                out.append(
                    ReplicaTelemetry(
                        replica=r.name,
                        source=self.source.kind,
                        gpus=gpus,
                        shared=self._gpus.shared(r.gpus, c.spec.gpu_count),
                    )
                )
            return out

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
