"""A locked database never freezes the event loop, and an action whose commit fails
happens not at all (a real `ecolink serve`, the local runtime).

Another process takes SQLite's write lock (`BEGIN IMMEDIATE`) and holds it:
- for 8 s, under the default busy timeout: `/healthz` answers within 0.5 s all along,
  clusters and the account can be read, and a write waits and succeeds;
- for longer than a short busy timeout (`--db-busy-timeout 1`): terminate, stop,
  scale and resume answer 503 `store_unavailable` saying nothing was changed (a
  terminate: that the cluster runs on, its replicas started again), the cluster
  keeps (or gets back) its replicas, no money moves, and the same action succeeds
  once the lock is gone;
- with the read marks of the WAL's shared memory held, which keeps readers out too,
  under a short busy timeout: `/healthz` still answers within 0.5 s, every read (route, credentials
  check, the watch feed's upgrade) answers 200 or 503 `store_unavailable` within the
  busy timeout and its grace, never hangs, and reads work again once the lock is gone;
  unknown keys at a service URL (which make the front look at the database again) are
  answered 401 within 0.5 s.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from support.reliability import check_money, wait_for

pytestmark = pytest.mark.timeout(240)

LAUNCH = {
    "region": "us-east",
    "gpu_type": "L40S",
    "gpu_count": 1,
    "replicas": 2,
    "image": "busybox:1.36",
    "estimated_duration_hours": 2,
    "startup_command": "exec sleep 1000",
}

HOLDER = (
    "import sqlite3, sys, time\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
    "c.execute('BEGIN IMMEDIATE')\n"
    "print('taken', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "c.execute('ROLLBACK')\n"
)


# What keeps WAL readers out: a reader must hold one of the read marks of the shared
# memory file (`-shm`, bytes 123-127 with the unix VFS), so a process that holds them
# all (one stuck in recovery, a stalled or crashed client on a network disk) makes a
# reader wait, here about 10 s whatever its busy timeout. A `BEGIN EXCLUSIVE`, or
# `PRAGMA locking_mode=EXCLUSIVE`, does not: the first lets readers through, the second
# cannot start while the server has the database open.
READERS_OUT = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1] + '-shm', os.O_RDWR)\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX, 5, 123, os.SEEK_SET)\n"
    "print('taken', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


@contextlib.contextmanager
def write_lock_held(
    db: Path, seconds: float, *, readers_too: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the database's write lock for `seconds` from now (and
    keeps readers out as well with `readers_too`)."""
    code = READERS_OUT if readers_too else HOLDER
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "taken"
        yield p
        p.wait(timeout=seconds + 10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def ready(api: httpx.Client, cid: str, n: int) -> dict[str, Any]:
    return wait_for(
        lambda: (lambda c: c if c["status"] == "running" and c["ready_replicas"] == n else None)(
            api.get(f"/gpu-clusters/{cid}").json()
        ),
        what=f"{n} ready replicas",
    )


def test_a_held_write_lock_never_freezes_the_api(ecolink_server: Any) -> None:
    srv = ecolink_server
    with srv.client() as api:
        r = api.post("/gpu-clusters", json={**LAUNCH, "name": "locked"})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        ready(api, cid, 2)
        health: list[float] = []
        reads: list[int] = []
        write: dict[str, Any] = {}

        def extend() -> None:
            with srv.client() as w:
                t = time.monotonic()
                resp = w.post(f"/gpu-clusters/{cid}/extend", json={"hours": 1})
                write.update(
                    status=resp.status_code, body=resp.json(), seconds=time.monotonic() - t
                )

        with write_lock_held(srv.state_dir / "ecolink.db", 8.0):
            t0 = time.monotonic()
            writer = threading.Thread(target=extend)
            writer.start()
            with httpx.Client(base_url=srv.url, timeout=10) as h:
                while time.monotonic() - t0 < 7.5:
                    t = time.monotonic()
                    assert h.get("/healthz").status_code == 200
                    health.append(time.monotonic() - t)
                    reads.append(api.get("/gpu-clusters").status_code)
                    reads.append(api.get("/account").status_code)
                    reads.append(api.get(f"/gpu-clusters/{cid}").status_code)
                    time.sleep(0.1)
            writer.join(timeout=30)
        assert len(health) >= 20 and max(health) < 0.5, (len(health), max(health))
        assert set(reads) == {200}
        # The write waited for the lock, then went through.
        assert write["status"] == 200, write
        assert write["seconds"] > 1.0
        assert write["body"]["estimated_duration_hours"] == 3
        check_money(api)


def test_reads_the_database_refuses_answer_503_and_never_freeze_the_api(
    ecolink_server_factory: Any,
) -> None:
    srv = ecolink_server_factory(extra_args=["--db-busy-timeout", "1"])
    with srv.client() as api:
        r = api.post("/gpu-clusters", json={**LAUNCH, "name": "unreadable"})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        ready(api, cid, 2)
        paths = [
            "/gpu-clusters",
            f"/gpu-clusters/{cid}",
            "/account",
            f"/gpu-clusters/{cid}/events",
            "/account/ledger",
        ]
        health: list[float] = []
        # (path, status, error code, seconds) of every read sent during the lock
        reads: list[tuple[str, int, str | None, float]] = []
        watch: list[Any] = []
        stop = threading.Event()

        def reader(first: int) -> None:
            with srv.client(timeout=30) as c:
                i = first
                while not stop.is_set():
                    path = paths[i % len(paths)]
                    i += 1
                    t = time.monotonic()
                    resp = c.get(path)
                    code = resp.json()["error"]["code"] if resp.status_code != 200 else None
                    reads.append((path, resp.status_code, code, time.monotonic() - t))

        def watcher() -> None:
            # Refused before the upgrade (credentials unreadable), or upgraded (they
            # were in memory) and then a snapshot or a close saying to try again.
            t = time.monotonic()
            try:
                with ws_connect(
                    srv.ws_url("/watch"),
                    open_timeout=30,
                    additional_headers={"Authorization": f"Bearer {srv.key}"},
                ) as ws:
                    try:
                        watch.append(json.loads(ws.recv(timeout=30))["type"])
                    except websockets.ConnectionClosed as exc:
                        watch.append(exc.rcvd.code if exc.rcvd is not None else None)
            except websockets.InvalidStatus as exc:
                watch.append(exc.response.status_code)
            watch.append(time.monotonic() - t)

        probes: list[tuple[int, float]] = []

        def stranger() -> None:
            # Unknown keys at a service URL: the front looks at the database again for
            # each (a key made a moment ago must work), and must never wait for it.
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                while not stop.is_set():
                    t = time.monotonic()
                    resp = c.get(
                        f"/gpu-clusters/{cid}/service/",
                        headers={"Authorization": f"Bearer eco_{secrets.token_urlsafe(32)}"},
                    )
                    probes.append((resp.status_code, time.monotonic() - t))

        # Six readers: more than the store's reader threads, so some reads also queue.
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
        threads.append(threading.Thread(target=stranger))
        with write_lock_held(srv.state_dir / "ecolink.db", 6.0, readers_too=True):
            t0 = time.monotonic()
            for th in threads:
                th.start()
            ws = threading.Thread(target=watcher)
            ws.start()
            with httpx.Client(base_url=srv.url, timeout=10) as h:
                while time.monotonic() - t0 < 5.0:
                    t = time.monotonic()
                    assert h.get("/healthz").status_code == 200
                    health.append(time.monotonic() - t)
                    time.sleep(0.1)
            stop.set()
            ws.join(timeout=30)
        for th in threads:
            th.join(timeout=30)
        assert len(health) >= 20 and max(health) < 0.5, (len(health), max(health))
        assert probes and {code for code, _ in probes} == {401}
        assert max(t for _, t in probes) < 0.5, sorted(t for _, t in probes)[-5:]
        # Every read answered: 200 or a truthful 503, within the busy timeout (1 s) and
        # its grace (1 s), never hanging for the whole lock.
        assert reads and {(s, c) for _, s, c, _ in reads} <= {
            (200, None),
            (503, "store_unavailable"),
        }
        assert any(s == 503 for _, s, _, _ in reads), "the lock never kept a reader out"
        assert max(t for *_, t in reads) < 3.0, sorted(t for *_, t in reads)[-5:]
        assert len(watch) == 2 and watch[0] in (503, 1013, "snapshot"), watch
        assert watch[1] < 3.0, watch
        # Once the lock is gone every read works again (the reader threads it held
        # come back first).
        for path in paths:
            wait_for(lambda path=path: api.get(path).status_code == 200, what=path)
        check_money(api)


# action: (method, path, body, replicas launched)
ACTIONS: dict[str, tuple[str, str, dict[str, Any] | None, int]] = {
    "terminate": ("DELETE", "", None, 2),
    "stop": ("POST", "/stop", None, 2),
    "scale up": ("POST", "/scale", {"replicas": 3}, 2),
    "scale down": ("POST", "/scale", {"replicas": 2}, 3),
    "resume": ("POST", "/resume", None, 2),
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_action_whose_commit_fails_leaves_the_cluster_whole(
    ecolink_server_factory: Any, action: str
) -> None:
    srv = ecolink_server_factory(extra_args=["--db-busy-timeout", "1"])
    method, path, body, n = ACTIONS[action]
    with srv.client() as api:
        r = api.post("/gpu-clusters", json={**LAUNCH, "name": "whole", "replicas": n})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        ready(api, cid, n)
        if action == "resume":
            assert api.post(f"/gpu-clusters/{cid}/stop").status_code == 200
            wait_for(lambda: api.get(f"/gpu-clusters/{cid}").json()["status"] == "stopped")
        before = api.get(f"/gpu-clusters/{cid}").json()
        money = check_money(api)
        entries = len(api.get("/account/ledger", params={"limit": 1000}).json()["entries"])

        with write_lock_held(srv.state_dir / "ecolink.db", 4.0):
            r = api.request(method, f"/gpu-clusters/{cid}{path}", json=body)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "store_unavailable"
            if action == "terminate":  # its replicas had to start again
                assert "was not terminated: it runs on" in err["message"]
                assert "no money moved" in err["message"]
            else:
                assert "nothing was changed" in err["message"]

        # As before: same status and count, its replicas back, no money moved.
        after = api.get(f"/gpu-clusters/{cid}").json()
        assert (after["status"], after["replicas"]) == (before["status"], before["replicas"])
        if before["status"] == "running":
            ready(api, cid, n)
        else:
            assert after["ready_replicas"] == 0
        assert check_money(api)["account"]["balance"] == money["account"]["balance"]
        assert len(api.get("/account/ledger", params={"limit": 1000}).json()["entries"]) == entries
        # And it goes through once the database can be written.
        r = api.request(method, f"/gpu-clusters/{cid}{path}", json=body)
        assert r.status_code == 200, r.text
        check_money(api)
