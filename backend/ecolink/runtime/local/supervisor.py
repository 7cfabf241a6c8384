"""Supervision of the local runtime's replicas: each replica is one task that
starts its process, probes readiness, restarts it after a crash with exponential
backoff (CrashLoopBackOff), gives up after too many crashes in a row, and ends
whole process trees (double-forked daemons included) when asked to.

The supervisor also reports: every change of a replica goes to the
`RuntimeListener` as `replicas_changed`, every crash, failure and readiness as a
runtime event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ecolink
from ecolink.runtime.base import ReplicaState, RuntimeListener
from ecolink.runtime.local.layout import Layout
from ecolink.runtime.local.logs import LogPump
from ecolink.runtime.local.proc import (
    MARKER,
    ChildExit,
    free_port,
    kill_now_sync,
    kill_tree_sync,
    normal_scheduling,
    port_free,
    replica_group_args,
    sweep_sync,
    term_groups_and_wait_sync,
)
from ecolink.runtime.local.replica import (
    GpuAllocator,
    LocalCluster,
    NullListener,
    Replica,
    describe_exit,
    fs_env_name,
)
from ecolink.runtime.local.users import directory_size, popen_credentials, searchable_path

log = logging.getLogger(__name__)


def waiting_reason(name: str) -> str:
    """Why a replica has not started: its predecessor of the same name still drains."""
    return f"waiting for the previous {name} to end"


@dataclass(frozen=True)
class Timing:
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    # A run that lasted this long resets the count of crashes in a row.
    stable_after_s: float = 10.0
    give_up_after: int = 8
    # Without a termination grace: after SIGTERM, this long until SIGKILL.
    grace_s: float = 5.0
    # How long a replica's own process has after SIGTERM to drain or checkpoint
    # (stop, terminate, expiry; `ecolink serve` gives 30 s).
    termination_grace_s: float = 0.0
    probe_interval_s: float = 1.0


class Supervisor:
    def __init__(
        self, layout: Layout, timing: Timing, gpus: GpuAllocator, telemetry_kind: str
    ) -> None:
        self.layout = layout
        self.timing = timing
        self.gpus = gpus
        self.telemetry_kind = telemetry_kind
        self.listener: RuntimeListener = NullListener()
        self.subreaper = False
        self._pump: LogPump | None = None
        self._base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("ECO_", "ECOLINK_"))
        }
        self._pkg_root = str(Path(ecolink.__file__).resolve().parent.parent)

    # ------------------------------------------------------------------ reports
    def states(self, c: LocalCluster) -> list[ReplicaState]:
        """The replicas, then those still draining (as Kubernetes lists a
        terminating pod until it is gone) whose index has no replica again."""
        out = [c.replicas[i].state() for i in sorted(c.replicas)]
        shown = set(c.replicas)
        for r in c.draining:
            if r.index not in shown:
                shown.add(r.index)
                out.append(r.state())
        return out

    def notify(self, c: LocalCluster) -> None:
        self.replicas_changed(c.spec.cluster_id, self.states(c))

    def replicas_changed(self, cluster_id: str, states: list[ReplicaState]) -> None:
        try:
            self.listener.replicas_changed(cluster_id, states)
        except Exception:
            log.exception("replicas_changed listener failed")

    def event(self, c: LocalCluster, kind: str, message: str, replica: str | None = None) -> None:
        try:
            self.listener.runtime_event(c.spec.cluster_id, kind, message, replica)
        except Exception:
            log.exception("runtime_event listener failed")

    def set(self, r: Replica, **changes: object) -> None:
        changed = False
        for k, v in changes.items():
            if getattr(r, k) != v:
                setattr(r, k, v)
                changed = True
        if changed and not r.removed:
            r.changed.set()
            self.notify(r.cluster)

    def check_cluster_failed(self, c: LocalCluster) -> None:
        rs = list(c.replicas.values())
        if rs and all(r.phase == "Failed" for r in rs) and not c.failed_reported:
            c.failed_reported = True
            reasons = sorted({r.reason or "" for r in rs})
            msg = f"every replica failed: {'; '.join(reasons)}"
            try:
                self.listener.cluster_failed(c.spec.cluster_id, msg)
            except Exception:
                log.exception("cluster_failed listener failed")

    # ------------------------------------------------------------------ log pump
    def pump(self) -> LogPump:
        if self._pump is None:
            self._pump = LogPump()
        return self._pump

    async def stop_pump(self) -> None:
        if self._pump is not None:
            await asyncio.to_thread(self._pump.stop)
            self._pump = None

    # ------------------------------------------------------------------ processes
    def env(self, c: LocalCluster, r: Replica) -> dict[str, str]:
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
            ECO_TELEMETRY=self.telemetry_kind,
            CUDA_VISIBLE_DEVICES=",".join(map(str, r.gpus)),
            ECO_EXPIRES_AT=spec.expires_at or "",
            ECO_EXPIRES_AT_FILE=str(self.layout.expiry_path(spec.cluster_id)),
            # The working dir is the replica's home, as a container's is its own:
            # the user's dotfiles (and whatever their login scripts run) stay out.
            HOME=str(r.workdir),
        )
        env[MARKER] = r.uid
        for fs in spec.shared_filesystems:
            env[fs_env_name(fs)] = str(self.layout.shared_filesystem_dir(fs))
        if r.creds is not None:
            env["USER"] = env["LOGNAME"] = f"replica{r.creds.uid}"
            env["PATH"] = searchable_path(env.get("PATH", os.defpath))
        return env

    def _spawn(self, c: LocalCluster, r: Replica) -> None:
        spec = c.spec
        env = self.env(c, r)
        users = self.layout.users
        if spec.startup_command:
            argv = ["sh", "-c", spec.startup_command]
        elif users is not None:
            argv = users.demo_argv()
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
                close_fds=True,
                **replica_group_args(),
                **popen_credentials(r.creds),
            )
        except BaseException:
            os.close(read_fd)
            writer.close()
            raise
        finally:
            os.close(write_fd)
        normal_scheduling(proc.pid)
        r.proc = proc
        r.exit = ChildExit(proc)
        r.runs += 1
        self.pump().add(read_fd, writer)
        self.layout.write_record(c)

    # ------------------------------------------------------------------ supervision
    async def supervise(self, c: LocalCluster, r: Replica) -> None:
        loop = asyncio.get_running_loop()
        t = self.timing
        try:
            await self._after_previous(c, r)
            while r.want != "remove":
                if r.want == "restart":  # asked for by the user: a fresh start
                    r.failures = 0
                    self.set(r, restarts=0, reason=None)
                r.want = "run"
                r.wake.clear()
                try:
                    # Whatever the last run left behind (daemons) goes first.
                    if r.runs:
                        await self.kill_leftovers(r)
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
                    self.set(r, phase="Running", ready=False)
                    code = await self._watch_run(c, r)
                    desc = describe_exit(code) if code is not None else ""
                if r.wants("remove"):
                    break
                if r.wants("restart"):
                    continue
                if r.wants("over_quota"):
                    # Stopped for filling its disk: not restarted until asked to.
                    await self.kill_leftovers(r)
                    reason = r.reason or "over its disk quota"
                    self.set(r, phase="Failed", ready=False, reason=reason)
                    self.event(c, "replica_failed", f"{r.name} stopped: {reason}", r.name)
                    self.check_cluster_failed(c)
                    # The wake that asked for this stop is still set: waiting on it
                    # alone restarted the replica at once, over its quota again and
                    # stopped again (killing what ran in it) at every disk check.
                    # Only a restart or a removal ends the wait (a probe's wake does not).
                    while r.wants("over_quota"):
                        r.wake.clear()
                        await r.wake.wait()
                    continue
                # The process ended on its own: a crash (as for a container, even exit 0).
                await self.kill_leftovers(r)
                if loop.time() - started >= t.stable_after_s:
                    r.failures = 0
                r.failures += 1
                restarts = r.restarts + 1
                self.event(c, "replica_crashed", f"{r.name} {desc} (restart {restarts})", r.name)
                if r.failures >= t.give_up_after:
                    self.set(
                        r,
                        phase="Failed",
                        ready=False,
                        restarts=restarts,
                        reason=f"{desc}; gave up after {r.failures} crashes in a row",
                    )
                    self.event(c, "replica_failed", f"{r.name} {r.reason}", r.name)
                    self.check_cluster_failed(c)
                    # Given up: only a restart or a removal starts it again, not a
                    # wake that asks for a probe (an endpoint change).
                    while r.wants("run"):
                        r.wake.clear()
                        await r.wake.wait()
                    continue
                delay = min(t.backoff_cap_s, t.backoff_base_s * 2 ** (r.failures - 1))
                self.set(
                    r,
                    phase="Pending",
                    ready=False,
                    restarts=restarts,
                    reason=f"CrashLoopBackOff: {desc}; restarting in {delay:g}s",
                )
                # The back-off runs its course unless a restart or removal is asked for.
                deadline = loop.time() + delay
                while r.wants("run") and (left := deadline - loop.time()) > 0:
                    r.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(r.wake.wait(), left)
                if r.want == "run":
                    self.set(r, reason=f"last exit: {desc}")
        finally:
            if not r.abandoned:
                await self._end_run(r)

    async def _after_previous(self, c: LocalCluster, r: Replica) -> None:
        """A replica whose index still has a draining predecessor (a resume or a
        scale-up during a stop's grace) starts once that one has ended: they share
        the working dir, the logs and the name."""
        waiting = waiting_reason(r.name)
        while r.want != "remove":
            before = [
                d.task
                for d in c.draining
                if d.index == r.index and d is not r and d.task is not None and not d.task.done()
            ]
            if not before:
                break
            self.set(r, reason=waiting)
            wake = asyncio.ensure_future(r.wake.wait())
            try:
                await asyncio.wait({*before, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
            if r.want == "run":
                r.wake.clear()
        if r.reason == waiting:
            self.set(r, reason=None)

    def retire(self, c: LocalCluster, gone: list[Replica]) -> asyncio.Task[None]:
        """Take `gone` out of service: each gets SIGTERM now and is killed after the
        cluster's termination grace, in the background. Meanwhile they are listed as
        draining (not ready, reason `Terminating`); once all are gone the cluster's
        replicas are reported again. Returns the task that ends them."""
        for r in gone:
            r.want = "remove"
            r.wake.set()
            r.ready = False
            r.reason = "Terminating"
            c.draining.append(r)
        task = asyncio.create_task(self._drain(c, gone), name=f"drain-{c.spec.cluster_id}")
        c.drains.add(task)
        task.add_done_callback(c.drains.discard)
        return task

    async def _drain(self, c: LocalCluster, gone: list[Replica]) -> None:
        try:
            await asyncio.gather(*(self.remove(r) for r in gone))
            if c.ending is None:
                self.layout.write_record(c)
                uids = {r.uid for r in gone}
                await self.sweep(lambda m: m in uids)
        finally:
            for r in gone:
                with contextlib.suppress(ValueError):
                    c.draining.remove(r)
        if c.ending is None:  # a terminated cluster's end reports it gone
            self.notify(c)

    async def _watch_run(self, c: LocalCluster, r: Replica) -> int | None:
        """Wait for the run to end, probing readiness meanwhile. Kills the run when
        asked to (restart, remove). Returns the exit code."""
        assert r.exit is not None
        exit_fut = r.exit.future()
        delay = 0.05
        while True:
            wake = asyncio.ensure_future(r.wake.wait())
            waits: set[asyncio.Future[Any]] = {exit_fut, wake}
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
            if exit_fut.done():
                self.set(r, ready=False)
                return exit_fut.result()
            if r.want != "run":
                await self._end_run(r)
                return exit_fut.result() if exit_fut.done() else None
            r.wake.clear()
            await self._probe(c, r)
            delay = min(self.timing.probe_interval_s, delay * 2)

    async def _probe(self, c: LocalCluster, r: Replica) -> None:
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
        self.set(r, ready=ready)
        if ready and not was:
            self.event(c, "replica_ready", f"{r.name} is ready", r.name)

    def termination_grace(self, c: LocalCluster) -> float:
        """The cluster's own grace between SIGTERM and SIGKILL, else the default."""
        own = c.spec.termination_grace_s
        return self.timing.termination_grace_s if own is None else own

    async def _end_run(self, r: Replica) -> None:
        """End the current run and everything it started (SIGTERM, then SIGKILL)."""
        proc = r.proc
        roots = [proc.pid] if proc is not None and r.exit and not r.exit.exited else []
        uid = r.uid
        t = self.timing
        termination_grace_s = self.termination_grace(r.cluster)
        kill_grace_s = t.grace_s
        # The replica's own process group and those of what runs in it through exec
        # (shells, kept sessions, copies): SIGTERM (and a terminal's hangup), then up
        # to termination_grace_s to drain or checkpoint before anything is killed.
        # Even without a grace: a shell on a terminal ignores SIGTERM, and without
        # its hangup it would sit out the kill grace and end SIGKILLed (137).
        await asyncio.to_thread(
            term_groups_and_wait_sync,
            lambda m: m == uid,
            roots[0] if roots else None,
            termination_grace_s,
        )
        # The replica's process may have ended (and its pid been reused) meanwhile.
        roots = [p for p in roots if r.exit is not None and not r.exit.exited]
        if termination_grace_s > 0:
            # The grace is over: what is left is killed now (as a container's
            # processes are), not given a second SIGTERM and another wait.
            kill_grace_s = 0.0
        # As a subreaper, everything the run started is its descendant or our orphan:
        # no need to scan all of /proc (the stop's last sweep covers the rest).
        await asyncio.to_thread(
            kill_tree_sync, lambda m: m == uid, roots, kill_grace_s, full_scan=not self.subreaper
        )
        if r.exit is not None:
            try:
                await asyncio.wait_for(r.exit.wait(), 2.0)
            except TimeoutError:  # should not happen after SIGKILL
                log.warning("replica %s did not exit", r.name)

    async def kill_leftovers(self, r: Replica) -> None:
        """Kill what an ended run left behind (daemons): as a subreaper, those are our
        orphans, found without a scan of all /proc."""
        uid = r.uid
        await asyncio.to_thread(kill_now_sync, lambda m: m == uid, [], full_scan=not self.subreaper)

    async def sweep(self, match: Callable[[str], bool]) -> None:
        """The one full /proc scan at the end of a stop or terminate, in a thread."""
        n = await asyncio.to_thread(sweep_sync, match, self.timing.grace_s)
        if n:
            log.info("ended %d escaped process(es)", n)

    async def remove(self, r: Replica) -> None:
        r.removed = True
        r.want = "remove"
        r.wake.set()
        if r.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await r.task
        self.gpus.give(r.gpus)
        r.gpus = ()

    async def quota_loop(
        self, clusters: Callable[[], Iterable[LocalCluster]], quota: int, interval_s: float
    ) -> None:
        """Stop any replica whose working dir (its HOME) grew past the disk quota."""
        while True:
            await asyncio.sleep(interval_s)
            for c in list(clusters()):
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
                        r.reason = (
                            f"stopped: its files grew past the disk quota "
                            f"({used // mib} MiB used, quota {quota // mib} MiB)"
                        )
                        log.warning("replica %s of %s: %s", r.name, c.spec.cluster_id, r.reason)
                        r.want = "over_quota"
                        r.wake.set()
