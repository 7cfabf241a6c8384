"""The local runtime with real processes: start, crash and backoff, scale, stop,
resume, restarts, terminate (no orphans), logs, shared filesystems, exec, GPUs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from ecocore.clock import SystemClock
from ecolink.runtime.base import (
    STDERR,
    STDOUT,
    ClusterSpec,
    ExecRequest,
    GpuReading,
    ReplicaNotFound,
    ReplicaState,
)
from ecolink.runtime.local import LocalRuntime
from ecolink.runtime.local.proc import proc_info
from ecolink.telemetry import GpuSource, SyntheticSource

pytestmark = pytest.mark.timeout(60)


class Recorder:
    def __init__(self) -> None:
        self.states: dict[str, list[ReplicaState]] = {}
        self.events: list[tuple[str, str, str, str | None]] = []
        self.failed: list[tuple[str, str]] = []

    def replicas_changed(self, cluster_id, replicas):
        self.states[cluster_id] = list(replicas)

    def runtime_event(self, cluster_id, kind, message, replica=None):
        self.events.append((cluster_id, kind, message, replica))

    def cluster_failed(self, cluster_id, message):
        self.failed.append((cluster_id, message))


def spec(cid: str = "c1", name: str = "web", replicas: int = 2, **kw) -> ClusterSpec:
    base = dict(
        cluster_id=cid,
        account_id="acct",
        name=name,
        region="local",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=replicas,
        image="example/app:1",
    )
    base.update(kw)
    return ClusterSpec(**base)


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[tuple[LocalRuntime, Recorder]]:
    runtime = LocalRuntime(
        tmp_path / "state",
        SystemClock(),
        telemetry_source=SyntheticSource(7),
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
        stable_after_s=5,
        give_up_after=4,
        grace_s=1.0,
        probe_interval_s=0.2,
    )
    rec = Recorder()
    await runtime.start(rec, [])
    yield runtime, rec
    await runtime.shutdown(stop_replicas=True)


async def until(cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


def running(runtime: LocalRuntime, cid: str, n: int) -> Callable[[], bool]:
    def check() -> bool:
        rs = runtime.replicas(cid)
        return len(rs) == n and all(r.phase == "Running" and r.ready for r in rs)

    return check


def pid_alive(pid: int) -> bool:
    info = proc_info(pid)
    return info is not None and info.state != "Z"


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


async def run_exec(runtime, cid, replica, req) -> tuple[bytes, bytes, int | None]:
    ex = await runtime.exec(cid, replica, req)
    out, err = b"", b""
    while (frame := await ex.read()) is not None:
        ch, data = frame
        if ch == STDOUT:
            out += data
        elif ch == STDERR:
            err += data
    res = await ex.result()
    await ex.kill()
    return out, err, res.exit_code


async def test_replicas_run_with_their_environment(rt, tmp_path):
    runtime, rec = rt
    cmd = 'echo "$PORT $ECO_REPLICA_INDEX $ECO_REPLICA_NAME $ECO_CLUSTER_ID $HOME" > info; exec sleep 300'
    await runtime.apply(spec(startup_command=cmd))
    await until(running(runtime, "c1", 2), what="2 running")
    assert [r.name for r in rec.states["c1"]] == ["web-0", "web-1"]
    ports = set()
    for i in range(2):
        info = runtime.workdir("c1", f"web-{i}") / "info"
        await until(lambda info=info: info.exists() and info.read_text().strip(), what="info")
        port, index, name, cid, home = info.read_text().split()
        assert (index, name, cid) == (str(i), f"web-{i}", "c1")
        assert home == str(info.parent)  # its working dir is its home
        assert int(port) == runtime.replica_port("c1", f"web-{i}")
        ports.add(port)
    assert len(ports) == 2  # each replica its own port
    assert ("c1", "replica_ready", "web-0 is ready", "web-0") in rec.events


async def test_demo_service_answers_and_ready_needs_tcp(rt):
    runtime, _ = rt
    await runtime.apply(spec(endpoint_port=8080, gpu_count=2))
    await until(running(runtime, "c1", 2), what="demo service ready")
    target = await runtime.service_target("c1", "web-1", 8080)
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(
            f"http://{target.host}:{target.port}/hello?x=1", timeout=5
        ).read()
    )
    info = json.loads(body)
    assert info["replica"] == "web-1" and info["cluster_id"] == "c1"
    assert info["path"] == "/hello" and info["query"] == "x=1"
    assert info["gpus"] == ["0", "1"]


async def test_ready_follows_the_endpoint_port(rt):
    runtime, rec = rt
    # Listens on nothing: with an endpoint it never becomes ready, without one it is.
    await runtime.apply(spec(startup_command="exec sleep 300", endpoint_port=9000))
    await until(
        lambda: (
            len(runtime.replicas("c1")) == 2
            and all(r.phase == "Running" for r in runtime.replicas("c1"))
        )
    )
    await asyncio.sleep(0.5)
    assert not any(r.ready for r in runtime.replicas("c1"))
    await runtime.apply(spec(startup_command="exec sleep 300", endpoint_port=None))
    await until(running(runtime, "c1", 2), what="ready without endpoint")


async def test_crash_restarts_with_backoff_then_gives_up(rt):
    runtime, rec = rt
    await runtime.apply(spec(startup_command="echo starting; exit 3"))
    await until(lambda: any(r.restarts >= 2 for r in runtime.replicas("c1")), what="restarts")
    r0 = runtime.replicas("c1")[0]
    assert "exited with code 3" in (r0.reason or "")
    crashed = [e for e in rec.events if e[1] == "replica_crashed"]
    assert crashed and "exited with code 3" in crashed[0][2]
    # give_up_after=4: both replicas end Failed and the cluster is reported failed.
    await until(lambda: all(r.phase == "Failed" for r in runtime.replicas("c1")), what="failed")
    assert all(r.restarts == 4 for r in runtime.replicas("c1"))
    assert rec.failed and rec.failed[0][0] == "c1"
    assert any(e[1] == "replica_failed" for e in rec.events)
    # Opening the public URL is not asking it to run again.
    runs = [r.runs for r in runtime._clusters["c1"].replicas.values()]
    await runtime.apply(spec(startup_command="echo starting; exit 3", endpoint_port=9000))
    await asyncio.sleep(0.3)
    assert [r.runs for r in runtime._clusters["c1"].replicas.values()] == runs
    assert all(r.phase == "Failed" for r in runtime.replicas("c1"))
    # Asked to run again, it starts afresh.
    await runtime.apply(spec(startup_command="exec sleep 300"))
    await until(running(runtime, "c1", 2), what="running again")


async def test_a_replica_that_gave_up_stays_down_across_endpoint_changes(rt):
    runtime, rec = rt
    # web-0 crashes at once, web-1 runs: web-0 gives up while the cluster runs on.
    crashy = '[ "$ECO_REPLICA_INDEX" = 0 ] && exit 3; exec sleep 300'
    base = spec(startup_command=crashy)
    await runtime.apply(base)
    await until(
        lambda: [r.phase for r in runtime.replicas("c1")] == ["Failed", "Running"],
        what="web-0 gave up",
    )
    assert not rec.failed
    web0 = runtime._clusters["c1"].replicas[0]
    runs = web0.runs
    # Opening, moving and closing the public URL is no reason to start it again;
    # nor is an extend.
    for port in (9000, 9001, None):
        await runtime.apply(replace(base, endpoint_port=port))
        await asyncio.sleep(0.3)
    await runtime.apply(replace(base, expires_at="2030-01-01T00:00:00Z"))
    await asyncio.sleep(0.3)
    assert web0.runs == runs
    r0 = runtime.replicas("c1")[0]
    assert r0.phase == "Failed" and "gave up after 4 crashes" in (r0.reason or "")
    # A restart asked for does start it again, from a fresh count.
    await runtime.restart("c1", "web-0")
    assert web0.runs == runs + 1


async def test_an_endpoint_change_does_not_cut_a_crash_backoff(tmp_path):
    runtime = LocalRuntime(
        tmp_path,
        SystemClock(),
        telemetry_source=SyntheticSource(),
        backoff_base_s=5.0,
        backoff_cap_s=5.0,
        give_up_after=100,
    )
    await runtime.start(Recorder(), [])
    try:
        base = spec(replicas=1, startup_command="exit 1")
        await runtime.apply(base)
        c = runtime._clusters["c1"]
        await until(lambda: "restarting in 5s" in (runtime.replicas("c1")[0].reason or ""))
        runs = c.replicas[0].runs
        await runtime.apply(replace(base, endpoint_port=9000))
        await asyncio.sleep(0.5)
        assert c.replicas[0].runs == runs
    finally:
        await runtime.shutdown(stop_replicas=True)


async def test_command_not_found_is_a_clear_reason(rt):
    runtime, _ = rt
    await runtime.apply(spec(startup_command="no-such-command-here --flag"))
    await until(lambda: all(r.restarts >= 2 for r in runtime.replicas("c1")))
    assert "command not found" in (runtime.replicas("c1")[0].reason or "")
    # Between runs the current log is the run that crashed; previous the one before.
    for previous in (False, True):
        logs = await collect(
            runtime.logs("c1", "web-0", tail=None, follow=False, previous=previous)
        )
        assert b"no-such-command-here" in logs


async def test_backoff_grows(tmp_path):
    runtime = LocalRuntime(
        tmp_path,
        SystemClock(),
        telemetry_source=SyntheticSource(),
        backoff_base_s=0.2,
        backoff_cap_s=0.4,
        give_up_after=100,
    )
    await runtime.start(Recorder(), [])
    try:
        await runtime.apply(spec(replicas=1, startup_command="exit 1"))
        reasons = set()
        loop = asyncio.get_running_loop()
        end = loop.time() + 3
        while loop.time() < end:
            for r in runtime.replicas("c1"):
                if r.reason and "restarting in" in r.reason:
                    reasons.add(r.reason.rsplit("restarting in ", 1)[1])
            await asyncio.sleep(0.01)
        assert {"0.2s", "0.4s"} <= reasons
        assert "0.8s" not in reasons  # capped
    finally:
        await runtime.shutdown(stop_replicas=True)


async def test_scale_up_and_down_acts_on_processes(rt):
    runtime, rec = rt
    s = spec(startup_command="exec sleep 300")
    await runtime.apply(s)
    await until(running(runtime, "c1", 2))
    await runtime.apply(replace(s, replicas=4))
    await until(running(runtime, "c1", 4))
    pids = runtime.replica_pids("c1")
    assert len({p for p in pids.values() if p}) == 4
    await runtime.apply(replace(s, replicas=1))
    assert [r.name for r in runtime.replicas("c1")] == ["web-0"]
    for name in ("web-1", "web-2", "web-3"):
        assert not pid_alive(pids[name])
    assert pid_alive(pids["web-0"])
    assert [r.name for r in rec.states["c1"]] == ["web-0"]


async def test_stop_and_resume(rt):
    runtime, _ = rt
    s = spec(startup_command="echo run; exec sleep 300")
    await runtime.apply(s)
    await until(running(runtime, "c1", 2))
    pids = runtime.replica_pids("c1")
    await runtime.apply(replace(s, replicas=0))
    assert runtime.replicas("c1") == []
    assert not any(pid_alive(p) for p in pids.values() if p)
    assert runtime.processes_of("c1") == []
    await runtime.apply(s)
    await until(running(runtime, "c1", 2))
    assert set(runtime.replica_pids("c1").values()).isdisjoint(pids.values())


async def test_rolling_restart_one_at_a_time(rt):
    runtime, _ = rt
    s = spec(replicas=3, endpoint_port=8080)  # the demo service: ready when it listens
    await runtime.apply(s)
    await until(running(runtime, "c1", 3))
    before = runtime.replica_pids("c1")
    seen_not_ready: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen_not_ready.append(sum(not r.ready for r in runtime.replicas("c1")))
            await asyncio.sleep(0.005)

    w = asyncio.create_task(watch())
    await runtime.restart("c1")

    def all_new() -> bool:
        now = runtime.replica_pids("c1")
        return all(now[n] and now[n] != before[n] for n in before) and running(runtime, "c1", 3)()

    await until(all_new, timeout=20, what="all replicas restarted")
    done.set()
    await w
    assert max(seen_not_ready) == 1  # never two down at once
    assert all(not pid_alive(p) for p in before.values() if p)


async def test_restart_one_replica(rt):
    runtime, _ = rt
    await runtime.apply(spec(startup_command="exec sleep 300"))
    await until(running(runtime, "c1", 2))
    before = runtime.replica_pids("c1")
    await runtime.restart("c1", "web-1")
    after = runtime.replica_pids("c1")
    assert after["web-0"] == before["web-0"]
    assert after["web-1"] != before["web-1"] and after["web-1"]
    assert not pid_alive(before["web-1"])
    with pytest.raises(ReplicaNotFound):
        await runtime.restart("c1", "web-9")


DAEMONS = (
    # A grandchild in the background, a double-forked daemon in its own session that
    # ignores SIGTERM, and a foreground loop that ignores SIGTERM too.
    "sleep 301 & echo $! > bg.pid; "
    'sh -c \'setsid sh -c "trap \\"\\" TERM; echo \\$\\$ > daemon.pid; exec sleep 302" &\' ; '
    "trap '' TERM; while true; do sleep 0.2; done"
)


async def test_terminate_leaves_nothing_running(rt, tmp_path):
    runtime, rec = rt
    await runtime.apply(spec(startup_command=DAEMONS))
    await until(running(runtime, "c1", 2))
    wd = runtime.workdir("c1", "web-0")
    await until(
        lambda: (
            (wd / "daemon.pid").exists()
            and (wd / "bg.pid").exists()
            and (wd / "daemon.pid").read_text().strip()
        ),
        what="daemons",
    )
    daemon = int((wd / "daemon.pid").read_text())
    bg = int((wd / "bg.pid").read_text())
    assert pid_alive(daemon) and pid_alive(bg)
    # The daemon left the replica's session: only the marker finds it.
    assert proc_info(daemon).sid != runtime.replica_pids("c1")["web-0"]
    assert len(runtime.processes_of("c1")) >= 6
    await runtime.terminate("c1")
    assert not pid_alive(daemon) and not pid_alive(bg)
    assert runtime.processes_of("c1") == []
    assert runtime.replicas("c1") == []
    assert not (runtime.files_root / "replicas" / "c1").exists()
    assert rec.states["c1"] == []


async def test_scale_down_scans_all_of_proc_once(rt, tmp_path, monkeypatch):
    # Replicas that ignore SIGTERM (daemons included) keep the stop waiting for the whole
    # grace period: the wait polls the tracked processes only, and all of /proc is
    # scanned once, at the end, however long the wait.
    import ecolink.runtime.local.proc as local_proc

    runtime, _ = rt
    s = spec(replicas=4, startup_command=DAEMONS)
    await runtime.apply(s)
    await until(running(runtime, "c1", 4))
    wds = [runtime.files_root / "replicas" / "c1" / f"web-{i}" for i in (1, 2, 3)]
    await until(
        lambda: all(
            (w / "daemon.pid").exists() and (w / "daemon.pid").read_text().strip() for w in wds
        ),
        what="daemons",
    )
    daemons = [int((w / "daemon.pid").read_text()) for w in wds]
    scans = []
    real = local_proc.find_marked
    monkeypatch.setattr(
        local_proc, "find_marked", lambda *a, **kw: scans.append(1) or real(*a, **kw)
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await runtime.apply(replace(s, replicas=1))
    took = loop.time() - t0
    monkeypatch.undo()
    assert took >= runtime.grace_s  # TERM was ignored: the grace period was waited out
    assert len(scans) == 1
    assert not any(pid_alive(d) for d in daemons)
    left = set(runtime.processes_of("c1"))
    assert left and all(local_proc.marker_of(p).split(".")[2] == "web-0" for p in left)


async def test_crash_kills_what_the_run_left(rt, tmp_path):
    runtime, _ = rt
    cmd = "sh -c 'setsid sleep 303 & echo $! > d.pid'; sleep 0.3; exit 1"
    await runtime.apply(spec(replicas=1, startup_command=cmd))
    wd = runtime.workdir("c1", "web-0")
    await until(lambda: (wd / "d.pid").exists() and (wd / "d.pid").read_text().strip())
    first = int((wd / "d.pid").read_text())
    await until(lambda: runtime.replicas("c1")[0].restarts >= 1)
    await until(lambda: not pid_alive(first), what="leftover daemon killed on crash")


async def test_log_rotation_and_tail(tmp_path):
    runtime = LocalRuntime(
        tmp_path,
        SystemClock(),
        telemetry_source=SyntheticSource(),
        log_max_bytes=20_000,
        log_backups=2,
    )
    await runtime.start(Recorder(), [])
    try:
        cmd = "i=0; while [ $i -lt 10000 ]; do echo line-$i; i=$((i+1)); done; echo done; exec sleep 300"
        await runtime.apply(spec(replicas=1, startup_command=cmd))
        logdir = tmp_path / "logs" / "c1"

        async def tail1() -> bytes:
            return await collect(runtime.logs("c1", "web-0", tail=1, follow=False, previous=False))

        await until(lambda: (logdir / "web-0.log").exists())
        for _ in range(200):
            if await tail1() == b"done\n":
                break
            await asyncio.sleep(0.05)
        assert await tail1() == b"done\n"
        names = sorted(p.name for p in logdir.iterdir())
        assert names == ["web-0.log", "web-0.log.1", "web-0.log.2"]
        for p in logdir.iterdir():
            assert p.stat().st_size <= 20_000
        tail = await collect(runtime.logs("c1", "web-0", tail=3, follow=False, previous=False))
        assert tail == b"line-9998\nline-9999\ndone\n"
        # Without tail: everything still kept, oldest first, no gaps.
        whole = await collect(runtime.logs("c1", "web-0", tail=None, follow=False, previous=False))
        lines = whole.decode().split()
        assert lines[-1] == "done"
        if not lines[0].startswith("line-"):
            lines = lines[1:]  # the oldest kept part may begin inside a line
        first = int(lines[0].split("-")[1])
        assert lines[:-1] == [f"line-{i}" for i in range(first, 10000)]
        # The oldest output was dropped, at least two full parts are kept.
        assert 0 < first < 10000 - 2 * 20_000 // 11
    finally:
        await runtime.shutdown(stop_replicas=True)


async def test_logs_follow_and_previous(rt, tmp_path):
    runtime, _ = rt
    # Each run prints its number, then ticks; a run ends after a while.
    cmd = (
        'n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo "run $n"; '
        'for i in 1 2 3 4 5 6; do echo "tick $n.$i"; sleep 0.1; done; exit 1'
    )
    await runtime.apply(spec(replicas=1, startup_command=cmd))
    await until(lambda: runtime.replicas("c1") and runtime.replicas("c1")[0].phase == "Running")
    got = b""

    async def follow() -> None:
        nonlocal got
        async for chunk in runtime.logs("c1", "web-0", tail=None, follow=True, previous=False):
            got += chunk
            if b"tick 1.4" in got:
                return

    await asyncio.wait_for(follow(), 10)
    assert got.startswith(b"run 1\ntick 1.1\n")
    await until(lambda: runtime.replicas("c1")[0].restarts >= 1)
    await until(lambda: runtime.replicas("c1")[0].phase == "Running")
    await asyncio.sleep(0.15)
    prev = await collect(runtime.logs("c1", "web-0", tail=None, follow=False, previous=True))
    cur = await collect(runtime.logs("c1", "web-0", tail=None, follow=False, previous=False))
    assert prev.startswith(b"run 1\n") and b"tick 1.6" in prev
    assert cur.startswith(b"run 2\n")


async def test_follow_ends_when_replica_goes(rt):
    runtime, _ = rt
    s = spec(replicas=1, startup_command="echo hello; exec sleep 300")
    await runtime.apply(s)
    await until(running(runtime, "c1", 1))
    it = runtime.logs("c1", "web-0", tail=None, follow=True, previous=False)
    first = await asyncio.wait_for(it.__anext__(), 5)
    assert first == b"hello\n"
    await runtime.apply(replace(s, replicas=0))
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(it.__anext__(), 5)
    with pytest.raises(ReplicaNotFound):
        runtime.logs("c1", "web-0", tail=None, follow=False, previous=False)


async def test_flood_is_bounded(tmp_path):
    runtime = LocalRuntime(
        tmp_path,
        SystemClock(),
        telemetry_source=SyntheticSource(),
        log_max_bytes=100_000,
        log_backups=1,
    )
    await runtime.start(Recorder(), [])
    try:
        await runtime.apply(spec(replicas=1, startup_command="exec yes flood"))
        await until(lambda: (tmp_path / "logs" / "c1" / "web-0.log.1").exists(), what="rotation")
        for _ in range(10):
            await asyncio.sleep(0.1)
            total = 0
            for p in (tmp_path / "logs" / "c1").iterdir():
                with contextlib.suppress(FileNotFoundError):  # rotated meanwhile
                    total += p.stat().st_size
            assert total <= 200_000
        assert runtime.replicas("c1")[0].phase == "Running"
        # It did flood: the files were rotated, and still hold output.
        tail = await collect(runtime.logs("c1", "web-0", tail=1, follow=False, previous=False))
        assert set(tail) <= set(b"flood\n")  # (the newest line may be half written)
    finally:
        await runtime.shutdown(stop_replicas=True)


async def test_shared_filesystem(rt, tmp_path):
    runtime, _ = rt
    cmd = 'echo "$ECO_REPLICA_NAME" > "$ECO_FS_MODEL_WEIGHTS/$ECO_REPLICA_NAME"; exec sleep 300'
    await runtime.apply(spec(startup_command=cmd, shared_filesystems=("model-weights",)))
    await until(running(runtime, "c1", 2))
    fs = tmp_path / "state" / "filesystems" / "model-weights"
    await until(lambda: (fs / "web-0").exists() and (fs / "web-1").exists())
    for name in ("web-0", "web-1"):
        link = runtime.files_root / "replicas" / "c1" / name / "model-weights"
        assert link.is_symlink()
        assert sorted(p.name for p in link.iterdir()) == ["web-0", "web-1"]


async def test_exec_pipes_tty_and_exit_codes(rt):
    runtime, _ = rt
    await runtime.apply(spec(startup_command="exec sleep 300"))
    await until(running(runtime, "c1", 2))
    out, err, code = await run_exec(
        runtime,
        "c1",
        "web-1",
        ExecRequest(
            command=("sh", "-c", "echo out; echo err >&2; pwd; echo $ECO_REPLICA_NAME; exit 7")
        ),
    )
    assert out.split() == [b"out", str(runtime.workdir("c1", "web-1")).encode(), b"web-1"]
    assert err == b"err\n" and code == 7
    out, err, code = await run_exec(
        runtime,
        "c1",
        "web-0",
        ExecRequest(
            command=("sh", "-c", "stty size; echo err >&2"), tty=True, width=123, height=45
        ),
    )
    assert out == b"45 123\r\nerr\r\n" and err == b"" and code == 0
    # stdin, closed: cat ends.
    ex = await runtime.exec("c1", "web-0", ExecRequest(command=("cat",), stdin=True))
    await ex.write(b"abc")
    await ex.close_stdin()
    assert await ex.read() == (STDOUT, b"abc")
    assert await ex.read() is None
    assert (await ex.result()).exit_code == 0
    await ex.kill()
    with pytest.raises(ReplicaNotFound):
        await runtime.exec("c1", "web-7", ExecRequest(command=("true",)))


async def test_exec_processes_get_the_termination_grace_at_stop(tmp_path):
    """A process started through exec (a shell, a kept session, a copy) gets SIGTERM
    with the replica and the configured termination grace, not the short kill grace,
    even when the replica's own process ends at once."""
    runtime = LocalRuntime(
        tmp_path / "state",
        SystemClock(),
        telemetry_source=SyntheticSource(),
        grace_s=0.3,
        termination_grace_s=6.0,
    )
    await runtime.start(Recorder(), [])
    try:
        await runtime.apply(spec(replicas=1, startup_command="exec sleep 300"))
        await until(running(runtime, "c1", 1))
        # Drains for 1.5 s after SIGTERM, then exits 7 (SIGKILL would make it 137);
        # the drain ignores TERM so that its own `sleep` is not ended early.
        ex = await runtime.exec(
            "c1",
            "web-0",
            ExecRequest(
                command=(
                    "sh",
                    "-c",
                    "trap 'trap \"\" TERM; sleep 1.5; exit 7' TERM; echo go; "
                    "while :; do sleep 0.05; done",
                ),
                stdout=True,
            ),
        )
        assert await asyncio.wait_for(ex.read(), 10) == (STDOUT, b"go\n")
        await runtime.apply(spec(replicas=0, startup_command="exec sleep 300"))
        assert (await asyncio.wait_for(ex.result(), 15)).exit_code == 7
        await ex.kill()
    finally:
        await runtime.shutdown(stop_replicas=True)


async def test_a_terminal_shell_is_hung_up_at_stop(tmp_path):
    """An interactive shell (exec with a terminal) ignores SIGTERM: at stop it gets
    its terminal's hangup and ends at once instead of holding the stop for the
    whole termination grace and being killed."""
    runtime = LocalRuntime(
        tmp_path / "state",
        SystemClock(),
        telemetry_source=SyntheticSource(),
        grace_s=0.3,
        termination_grace_s=20.0,
    )
    await runtime.start(Recorder(), [])
    try:
        await runtime.apply(spec(replicas=1, startup_command="exec sleep 300"))
        await until(running(runtime, "c1", 1))
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
        await runtime.apply(spec(replicas=0, startup_command="exec sleep 300"))
        assert loop.time() - started < 10
        assert (await asyncio.wait_for(ex.result(), 5)).exit_code == 129  # SIGHUP
        await ex.kill()
    finally:
        await runtime.shutdown(stop_replicas=True)


async def test_exec_resize_reaches_the_program(rt):
    runtime, _ = rt
    await runtime.apply(spec(replicas=1, startup_command="exec sleep 300"))
    await until(running(runtime, "c1", 1))
    ex = await runtime.exec(
        "c1",
        "web-0",
        ExecRequest(
            command=("sh", "-c", "trap 'stty size' WINCH; echo go; while :; do sleep 0.05; done"),
            tty=True,
            stdin=True,
            width=80,
            height=24,
        ),
    )
    got = b""
    while b"go" not in got:
        got += (await ex.read())[1]
    await ex.resize(132, 50)
    while b"50 132" not in got:
        got += (await asyncio.wait_for(ex.read(), 5))[1]
    await ex.kill()
    assert (await ex.result()).exit_code is not None


async def test_start_replaces_what_an_earlier_backend_left(tmp_path):
    s = spec(startup_command="sleep 304 & echo $! > bg.pid; exec sleep 305")
    first = LocalRuntime(tmp_path, SystemClock(), telemetry_source=SyntheticSource())
    await first.start(Recorder(), [])
    await first.apply(s)
    await until(running(first, "c1", 2))
    wd = first.workdir("c1", "web-0")
    await until(lambda: (wd / "bg.pid").exists() and (wd / "bg.pid").read_text().strip())
    old = set(first.replica_pids("c1").values()) | {int((wd / "bg.pid").read_text())}
    # As after a SIGKILL of the backend: the processes stay, the runtime is gone.
    await first.shutdown(stop_replicas=False)
    assert all(pid_alive(p) for p in old)
    # A stale cluster the store no longer knows is cleaned up too.
    (first.files_root / "replicas" / "gone").mkdir()
    second = LocalRuntime(tmp_path, SystemClock(), telemetry_source=SyntheticSource())
    rec = Recorder()
    await second.start(rec, [s])
    try:
        await until(running(second, "c1", 2))
        await until(lambda: not any(pid_alive(p) for p in old), what="old processes killed")
        assert not (first.files_root / "replicas" / "gone").exists()
        assert set(second.replica_pids("c1").values()).isdisjoint(old)
    finally:
        await second.shutdown(stop_replicas=True)


class FakeGpus(GpuSource):
    kind = "nvml"

    def __init__(self, n: int) -> None:
        self.n = n

    def device_count(self):
        return self.n

    def read(self, replica_key, gpu_type, indices, *, active, now: datetime):
        return tuple(
            GpuReading(i, f"GPU-{i}", "Fake", 50.0, 1, 2, 30.0, 100.0, 200.0) for i in indices
        )


async def test_real_gpus_are_partitioned_then_shared(tmp_path):
    runtime = LocalRuntime(tmp_path, SystemClock(), telemetry_source=FakeGpus(4))
    await runtime.start(Recorder(), [])
    try:
        cmd = 'echo "$CUDA_VISIBLE_DEVICES" > gpus; exec sleep 300'
        await runtime.apply(spec(gpu_count=2, startup_command=cmd))
        await until(running(runtime, "c1", 2))
        wd = runtime.files_root / "replicas" / "c1"
        await until(lambda: all((wd / f"web-{i}" / "gpus").exists() for i in range(2)))
        seen = sorted((wd / f"web-{i}" / "gpus").read_text().strip() for i in range(2))
        assert seen == ["0,1", "2,3"]
        tel = await runtime.telemetry("c1")
        assert [t.shared for t in tel] == [False, False]
        assert [g.index for g in tel[0].gpus] == [0, 1]
        # A second cluster needs GPUs that are all taken: it shares, and says so.
        await runtime.apply(
            spec(cid="c2", name="more", replicas=2, gpu_count=1, startup_command=cmd)
        )
        await until(running(runtime, "c2", 2))
        assert all(t.shared for t in await runtime.telemetry("c2"))
        # Both went onto GPUs 0 and 1: web-0 of c1 shares them, web-1 (2,3) does not.
        assert [t.shared for t in await runtime.telemetry("c1")] == [True, False]
        await runtime.terminate("c2")
        assert not any(t.shared for t in await runtime.telemetry("c1"))
    finally:
        await runtime.shutdown(stop_replicas=True)


async def test_simulated_telemetry_labelled(rt):
    runtime, _ = rt
    assert runtime.info.telemetry == "simulated" and runtime.info.name == "local"
    await runtime.apply(spec(gpu_count=4, startup_command="exec sleep 300"))
    await until(running(runtime, "c1", 2))
    tel = await runtime.telemetry("c1")
    assert [t.replica for t in tel] == ["web-0", "web-1"]
    assert all(t.source == "simulated" and len(t.gpus) == 4 for t in tel)
    assert all(0 <= g.utilization <= 100 for t in tel for g in t.gpus)


async def test_shutdown_stops_replicas(tmp_path):
    runtime = LocalRuntime(tmp_path, SystemClock(), telemetry_source=SyntheticSource(), grace_s=0.5)
    await runtime.start(Recorder(), [])
    await runtime.apply(spec(startup_command="trap '' TERM; while :; do sleep 0.1; done"))
    await until(running(runtime, "c1", 2))
    pids = runtime.replica_pids("c1")
    await runtime.shutdown(stop_replicas=True)
    # SIGTERM is trapped: only the SIGKILL after the grace period ends them.
    assert not any(pid_alive(p) for p in pids.values() if p)
    assert runtime.processes_of("c1") == []


# On SIGTERM: drain for 3 s (ignoring further TERMs), noting the start and the end.
DRAINS = (
    'echo up; trap \'trap "" TERM; echo started >> ckpt; sleep 3; echo finished >> ckpt; '
    "exit 0' TERM; while :; do sleep 0.1; done"
)


@pytest.fixture
async def drt(tmp_path: Path) -> AsyncIterator[tuple[LocalRuntime, Recorder]]:
    """A runtime that ends replicas in the background (as `ecolink serve` runs it)."""
    runtime = LocalRuntime(
        tmp_path / "state",
        SystemClock(),
        telemetry_source=SyntheticSource(),
        grace_s=0.5,
        termination_grace_s=10.0,
        probe_interval_s=0.2,
        drain_in_background=True,
    )
    rec = Recorder()
    await runtime.start(rec, [])
    yield runtime, rec
    await runtime.shutdown(stop_replicas=True)


async def test_a_stop_returns_while_the_replicas_drain(drt):
    runtime, rec = drt
    s = spec(startup_command=DRAINS)
    await runtime.apply(s)
    await until(running(runtime, "c1", 2))
    await asyncio.sleep(0.3)  # the trap is set
    pids = runtime.replica_pids("c1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await runtime.apply(replace(s, replicas=0))
    assert loop.time() - started < 2  # the settle_s of 1 s, not the 3 s drain
    draining = [(r.name, r.phase, r.ready, r.reason) for r in rec.states["c1"]]
    assert draining == [(f"web-{i}", "Running", False, "Terminating") for i in range(2)]
    assert runtime.replicas("c1") == rec.states["c1"]
    assert all(pid_alive(p) for p in pids.values() if p)
    # A draining replica's logs can still be read, as a terminating pod's can.
    logs = await collect(runtime.logs("c1", "web-0", tail=None, follow=False, previous=False))
    assert logs.startswith(b"up\n")
    await until(lambda: rec.states["c1"] == [], timeout=15, what="the drain reported over")
    assert loop.time() - started >= 2.5
    assert runtime.replicas("c1") == []
    assert not any(pid_alive(p) for p in pids.values() if p)
    assert runtime.processes_of("c1") == []
    wd = runtime.workdir("c1", "web-0").parent
    assert [(wd / f"web-{i}" / "ckpt").read_text() for i in range(2)] == ["started\nfinished\n"] * 2


async def test_a_resume_during_the_drain_waits_for_the_old_replicas(drt):
    runtime, rec = drt
    s = spec(startup_command=DRAINS)
    await runtime.apply(s)
    await until(running(runtime, "c1", 2))
    await asyncio.sleep(0.3)  # the trap is set
    old = runtime.replica_pids("c1")
    ports = {r: runtime.replica_port("c1", r) for r in old}
    await runtime.apply(replace(s, replicas=0))
    await runtime.apply(s)
    # The new replicas take the old ones' names and working dirs: they wait.
    assert [(r.name, r.phase, r.reason) for r in runtime.replicas("c1")] == [
        (f"web-{i}", "Pending", f"waiting for the previous web-{i} to end") for i in range(2)
    ]
    assert all(p is None for p in runtime.replica_pids("c1").values())
    await until(running(runtime, "c1", 2), timeout=15, what="the new replicas")
    new = runtime.replica_pids("c1")
    assert not any(pid_alive(p) for p in old.values() if p)
    assert set(new.values()).isdisjoint(old.values())
    assert all(runtime.replica_port("c1", r) != ports[r] for r in new)
    wd = runtime.workdir("c1", "web-0").parent
    assert [(wd / f"web-{i}" / "ckpt").read_text() for i in range(2)] == ["started\nfinished\n"] * 2


async def test_a_terminate_returns_and_ends_the_cluster_in_the_background(drt):
    runtime, rec = drt
    await runtime.apply(spec(startup_command=DRAINS))
    await until(running(runtime, "c1", 2))
    await asyncio.sleep(0.3)  # the trap is set
    loop = asyncio.get_running_loop()
    started = loop.time()
    await runtime.terminate("c1")
    assert loop.time() - started < 2  # the settle_s of 1 s, not the 3 s drain
    assert [r.reason for r in rec.states["c1"]] == ["Terminating"] * 2
    assert "c1" not in runtime.cluster_ids()  # nothing for reconciliation to remove
    await runtime.terminate("c1")  # again while it drains: nothing more to do
    await until(lambda: rec.states["c1"] == [], timeout=15, what="the cluster ended")
    assert runtime.processes_of("c1") == []
    assert not (runtime.files_root / "replicas" / "c1").exists()


async def test_shutdown_waits_for_draining_replicas(drt):
    runtime, _ = drt
    await runtime.apply(spec(startup_command=DRAINS))
    await until(running(runtime, "c1", 2))
    await asyncio.sleep(0.3)  # the trap is set
    await runtime.apply(spec(replicas=0, startup_command=DRAINS))
    assert runtime.processes_of("c1") != []
    await runtime.shutdown(stop_replicas=True)
    assert runtime.processes_of("c1") == []
