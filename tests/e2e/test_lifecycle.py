"""Cluster lifecycle on real processes: scale, stop, resume, rolling restart,
terminate with no orphans; bad startup commands; a backend killed with SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecolink.runtime.local.proc import proc_info
from support.e2e_helpers import all_ready, launch, marked_processes, wait_for, wait_until

pytestmark = pytest.mark.timeout(180)

# Writes its pid, starts a background child and a double-forked daemon in its own
# session, then serves nothing: what a replica can leave behind. (Processes that
# ignore SIGTERM are covered by the runtime's unit tests: each costs a grace period.)
MESSY = "echo $$ > pid; sleep 1000 & sh -c 'setsid sleep 1001 &'; exec sleep 1002"


def pids_of(state_dir: Path, cid: str, names: list[str]) -> dict[str, int]:
    from ecocore.clock import SystemClock
    from ecolink.runtime.local import LocalRuntime

    runtime = LocalRuntime(state_dir, SystemClock())  # where its replicas' files are
    out = {}
    for n in names:
        f = runtime.workdir(cid, n) / "pid"
        out[n] = int(f.read_text()) if f.exists() and f.read_text().strip() else 0
    return out


def alive(pid: int) -> bool:
    info = proc_info(pid)
    return info is not None and info.state != "Z"


def test_scale_stop_resume_restart_terminate_leave_nothing(shared_ecolink_server, fresh_api):
    srv, api = shared_ecolink_server, fresh_api
    c = launch(api, "life", replicas=2, command=MESSY)
    cid = c["id"]
    wait_for(api, cid, all_ready(2))
    wait_until(lambda: all(pids_of(srv.state_dir, cid, ["life-0", "life-1"]).values()))
    wait_until(lambda: len(marked_processes(srv.state_dir, cid)) >= 6, what="6 processes")

    # Scale up and down: processes appear and go.
    assert api.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 4}).status_code == 200
    c = wait_for(api, cid, all_ready(4))
    assert [s["name"] for s in c["replica_states"]] == [f"life-{i}" for i in range(4)]
    wait_until(lambda: len(marked_processes(srv.state_dir, cid)) >= 12)
    assert api.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 2}).status_code == 200
    wait_for(api, cid, all_ready(2))
    wait_until(lambda: len(marked_processes(srv.state_dir, cid)) == 6, what="back to 6")

    # Stop: nothing runs; resume: fresh replicas.
    before = pids_of(srv.state_dir, cid, ["life-0", "life-1"])
    assert api.post(f"/gpu-clusters/{cid}/stop").status_code == 200
    c = wait_for(api, cid, lambda x: x["status"] == "stopped")
    assert c["replica_states"] == [] and c["replicas"] == 2
    wait_until(lambda: marked_processes(srv.state_dir, cid) == [], what="stopped processes")
    assert api.post(f"/gpu-clusters/{cid}/resume").status_code == 200
    wait_for(api, cid, all_ready(2))
    wait_until(
        lambda: all(
            p and p not in before.values()
            for p in pids_of(srv.state_dir, cid, ["life-0", "life-1"]).values()
        )
    )

    # Rolling restart: every replica gets a new process.
    before = pids_of(srv.state_dir, cid, ["life-0", "life-1"])
    assert api.post(f"/gpu-clusters/{cid}/restart").status_code == 200
    wait_until(
        lambda: all(
            p and p != before[n]
            for n, p in pids_of(srv.state_dir, cid, ["life-0", "life-1"]).items()
        ),
        what="rolling restart",
    )
    wait_for(api, cid, all_ready(2))
    assert not any(alive(p) for p in before.values())
    # One replica.
    before = pids_of(srv.state_dir, cid, ["life-0", "life-1"])
    r = api.post(f"/gpu-clusters/{cid}/replicas/life-1/restart")
    assert r.status_code == 200
    wait_until(
        lambda: pids_of(srv.state_dir, cid, ["life-1"])["life-1"] not in (0, before["life-1"])
    )
    assert pids_of(srv.state_dir, cid, ["life-0"])["life-0"] == before["life-0"]

    # Terminate: nothing it started is left, daemons included.
    wait_until(lambda: len(marked_processes(srv.state_dir, cid)) >= 6, what="6 processes")
    leftovers = marked_processes(srv.state_dir, cid)
    assert api.delete(f"/gpu-clusters/{cid}").status_code == 200
    wait_for(api, cid, lambda x: x["status"] == "terminated")
    wait_until(lambda: marked_processes(srv.state_dir, cid) == [], what="no orphans")
    assert not any(alive(p) for p in leftovers)


def test_startup_command_not_found(shared_ecolink_server, fresh_api):
    c = launch(fresh_api, "missing", command="/no/such/program --serve")
    c = wait_for(
        fresh_api,
        c["id"],
        lambda x: x["replica_states"] and all(s["restarts"] >= 2 for s in x["replica_states"]),
        timeout=30,
    )
    s = c["replica_states"][0]
    assert not s["ready"] and "127" in s["reason"] and "not found" in s["reason"]
    assert c["status"] in ("pending", "running", "failed")
    kinds = [e["kind"] for e in fresh_api.get(f"/gpu-clusters/{c['id']}/events").json()["events"]]
    assert "replica_crashed" in kinds
    logs = fresh_api.get(f"/gpu-clusters/{c['id']}/replicas/missing-0/logs").text
    assert "/no/such/program" in logs


def test_startup_command_exits_at_once(fresh_api):
    c = launch(fresh_api, "quitter", command="echo bye")
    c = wait_for(
        fresh_api,
        c["id"],
        lambda x: x["replica_states"] and all(s["restarts"] >= 2 for s in x["replica_states"]),
        timeout=30,
    )
    assert "exited with code 0" in c["replica_states"][0]["reason"]


def test_startup_command_floods_output(shared_ecolink_server, fresh_api):
    c = launch(fresh_api, "flood", command="yes 'flooding the log with this line'")
    cid = c["id"]
    wait_for(fresh_api, cid, all_ready(2))
    time.sleep(3)
    # The backend still answers promptly, and the logs stay bounded on disk.
    t0 = time.monotonic()
    assert fresh_api.get(f"/gpu-clusters/{cid}").status_code == 200
    assert time.monotonic() - t0 < 2
    logdir = shared_ecolink_server.state_dir / "logs" / cid
    total = sum(p.stat().st_size for p in logdir.iterdir())
    assert total <= 2 * 4 * 8 * 1024 * 1024 + 2 * 65536  # 2 replicas x (current + 3 parts)
    tail = fresh_api.get(f"/gpu-clusters/{cid}/replicas/flood-0/logs", params={"tail": 2}).text
    assert tail.splitlines()[-1] == "flooding the log with this line"
    assert fresh_api.delete(f"/gpu-clusters/{cid}").status_code == 200
    wait_until(lambda: marked_processes(shared_ecolink_server.state_dir, cid) == [])


def test_backend_sigkill_and_restart(ecolink_server):
    srv = ecolink_server
    api = srv.client()
    try:
        c = launch(api, "survivor", replicas=2, command="echo $$ > pid; exec sleep 1000")
        cid = c["id"]
        wait_for(api, cid, all_ready(2))
        wait_until(lambda: all(pids_of(srv.state_dir, cid, ["survivor-0", "survivor-1"]).values()))
        old = pids_of(srv.state_dir, cid, ["survivor-0", "survivor-1"])
        r = api.post(f"/gpu-clusters/{cid}/replicas/survivor-0/sessions", json={"command": "sh"})
        sid = r.json()["id"]
        srv.kill()
        # The replicas outlive the backend (nothing stopped them)...
        assert all(alive(p) for p in old.values())
        srv.restart()
        api.close()
        api = srv.client()
        # ...and the new backend replaces them with fresh processes it supervises.
        wait_for(api, cid, all_ready(2), timeout=30)
        wait_until(lambda: not any(alive(p) for p in old.values()), what="old replicas gone")
        new = pids_of(srv.state_dir, cid, ["survivor-0", "survivor-1"])
        assert all(new.values()) and set(new.values()).isdisjoint(old.values())
        sessions = api.get(f"/gpu-clusters/{cid}/sessions").json()["sessions"]
        assert [(s["id"], s["exited"], s["ended_reason"]) for s in sessions] == [
            (sid, True, "backend_restart")
        ]
        # The ledger still adds up.
        store = srv.store()
        try:
            assert store.audit() == []
        finally:
            store.close()
        # And the whole set of processes is what two replicas need, no more.
        wait_until(lambda: len(marked_processes(srv.state_dir, cid)) == 2)
    finally:
        api.close()


def test_clean_stop_stops_replicas_and_posts_charges(ecolink_server):
    srv = ecolink_server
    api = srv.client()
    try:
        c = launch(api, "charged", replicas=2, command="sleep infinity")
        cid = c["id"]
        wait_for(api, cid, all_ready(2))
        time.sleep(1.0)
    finally:
        api.close()
    # `ecolink stop` from another process; the server is our child, so reap it here
    # (a zombie would look alive to `ecolink stop`).
    stop = subprocess.Popen(
        [sys.executable, "-m", "ecolink", "stop", "--state-dir", str(srv.state_dir)],
        env=srv.env,
        stdout=subprocess.PIPE,
    )
    assert srv.proc.wait(timeout=30) == 0
    assert stop.wait(timeout=30) == 0
    assert b"stopped" in stop.stdout.read()
    assert marked_processes(srv.state_dir, cid) == []
    store = srv.store()
    try:
        kinds = [e.kind for e in store.ledger_all() if e.cluster_id == cid]
        assert "charge" in kinds
        assert store.audit() == []
    finally:
        store.close()
