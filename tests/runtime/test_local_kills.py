"""What the local runtime kills, and how: a replica stopped for growing past the disk
quota stays stopped until it is asked to restart (it is not started again, over
its quota again, and stopped again, killing what ran in it, at every disk check);
what ran in it through exec gets SIGTERM, not an immediate SIGKILL; and a shell on
a terminal is hung up at stop even without a termination grace, instead of
ignoring SIGTERM and being SIGKILLed (exit 137)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from ecocore.clock import SystemClock
from ecolink.runtime.base import STDOUT, ClusterSpec, ExecRequest, ReplicaState
from ecolink.runtime.local import LocalRuntime
from ecolink.telemetry import SyntheticSource

pytestmark = pytest.mark.timeout(60)

CHECK_S = 0.2


class Recorder:
    def __init__(self) -> None:
        self.states: dict[str, list[ReplicaState]] = {}
        self.events: list[tuple[str, str]] = []

    def replicas_changed(self, cluster_id: str, replicas: list[ReplicaState]) -> None:
        self.states[cluster_id] = list(replicas)

    def runtime_event(
        self, cluster_id: str, kind: str, message: str, replica: str | None = None
    ) -> None:
        self.events.append((kind, message))

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        pass


async def until(cond: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_an_over_quota_replica_stays_stopped_until_restarted(tmp_path: Path) -> None:
    runtime = LocalRuntime(
        tmp_path / "state",
        SystemClock(),
        telemetry_source=SyntheticSource(),
        grace_s=0.5,
        termination_grace_s=2.0,
        probe_interval_s=0.1,
        disk_quota_bytes=1 << 20,
        disk_check_interval_s=CHECK_S,
    )
    rec = Recorder()
    await runtime.start(rec, [])
    try:
        spec = ClusterSpec(
            cluster_id="c1",
            account_id="acct",
            name="fill",
            region="local",
            gpu_type="H100-80GB",
            gpu_count=1,
            replicas=1,
            image="x:1",
            startup_command="exec sleep 300",
        )
        await runtime.apply(spec)
        await until(
            lambda: [(r.phase, r.ready) for r in runtime.replicas("c1")] == [("Running", True)],
            what="the replica runs",
        )
        shell = await runtime.exec(
            "c1", "fill-0", ExecRequest(command=("sh",), stdin=True, stdout=True)
        )
        await shell.write(b"echo up\n")
        assert await asyncio.wait_for(shell.read(), 10) == (STDOUT, b"up\n")
        await shell.write(b"head -c 3000000 /dev/zero > big\n")

        def stopped() -> bool:
            return [r.phase for r in runtime.replicas("c1")] == ["Failed"]

        await until(stopped, what="the replica stopped over its quota")
        assert "disk quota" in (runtime.replicas("c1")[0].reason or "")
        # The shell got SIGTERM (143), not SIGKILL (137).
        assert (await asyncio.wait_for(shell.result(), 10)).exit_code == 143
        await shell.kill()
        ready_events = sum(1 for k, _ in rec.events if k == "replica_ready")
        # Many disk checks later: still stopped, never started again.
        for _ in range(int(2.0 / 0.05)):
            await asyncio.sleep(0.05)
            assert stopped(), runtime.replicas("c1")
        assert sum(1 for k, _ in rec.events if k == "replica_ready") == ready_events
        assert sum(1 for k, _ in rec.events if k == "replica_failed") == 1

        # Asked to restart, it starts again (and, its files still there, is stopped again).
        await runtime.restart("c1", "fill-0")
        await until(
            lambda: sum(1 for k, _ in rec.events if k == "replica_failed") == 2,
            what="the restarted replica stopped again",
        )
    finally:
        await runtime.shutdown(stop_replicas=True)


@pytest.mark.parametrize("ignore_sighup", [False, True])
@pytest.mark.parametrize("grace", [0.0, 2.0])
async def test_a_terminal_shell_is_hung_up_whatever_the_grace(
    tmp_path: Path, grace: float, ignore_sighup: bool
) -> None:
    """Also when the backend ignores SIGHUP (started under nohup): children inherit
    that, and the shell must still end at its hangup, not be killed after the grace."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_sighup else signal.SIG_DFL)
    runtime = LocalRuntime(
        tmp_path / "state",
        SystemClock(),
        telemetry_source=SyntheticSource(),
        grace_s=5.0,
        termination_grace_s=grace,
        probe_interval_s=0.1,
    )
    await runtime.start(Recorder(), [])
    try:
        spec = ClusterSpec(
            cluster_id="c1",
            account_id="acct",
            name="web",
            region="local",
            gpu_type="H100-80GB",
            gpu_count=1,
            replicas=1,
            image="x:1",
            startup_command="exec sleep 300",
        )
        await runtime.apply(spec)
        await until(
            lambda: [r.ready for r in runtime.replicas("c1")] == [True], what="the replica runs"
        )
        ex = await runtime.exec(
            "c1",
            "web-0",
            ExecRequest(command=("sh", "-i"), tty=True, stdin=True, width=80, height=24),
        )
        await ex.write(b"echo rea''dy\n")
        got = b""
        while b"ready" not in got:
            got += (await asyncio.wait_for(ex.read(), 10))[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runtime.apply(ClusterSpec(**{**spec.__dict__, "replicas": 0}))
        assert (await asyncio.wait_for(ex.result(), 10)).exit_code == 129  # SIGHUP
        assert loop.time() - started < 4  # not the 5 s kill grace
        await ex.kill()
    finally:
        signal.signal(signal.SIGHUP, before)
        await runtime.shutdown(stop_replicas=True)


async def test_a_restart_returns_once_the_new_run_started_after_the_cluster_grace(
    tmp_path: Path,
) -> None:
    """A replica that ignores SIGTERM sits out its cluster's whole grace (11 s, longer
    than the restart's own 10 s allowance) and is killed; the restart returns
    once the new run has started, not before."""
    runtime = LocalRuntime(
        tmp_path / "state",
        SystemClock(),
        telemetry_source=SyntheticSource(),
        grace_s=0.2,
        probe_interval_s=0.1,
    )
    await runtime.start(Recorder(), [])
    try:
        spec = ClusterSpec(
            cluster_id="c1",
            account_id="acct",
            name="stub",
            region="local",
            gpu_type="H100-80GB",
            gpu_count=1,
            replicas=1,
            image="x:1",
            startup_command="trap '' TERM; exec sleep 300",
            termination_grace_s=11,
        )
        await runtime.apply(spec)
        await until(
            lambda: [r.ready for r in runtime.replicas("c1")] == [True], what="the replica runs"
        )
        first = runtime.replica_pids("c1")["stub-0"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runtime.restart("c1", "stub-0")
        assert loop.time() - started >= 10.5  # the cluster's grace, then SIGKILL
        second = runtime.replica_pids("c1")["stub-0"]
        assert second is not None and second != first
    finally:
        await runtime.shutdown(stop_replicas=True)
