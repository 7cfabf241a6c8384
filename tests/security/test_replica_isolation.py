"""Tenants' code cannot reach the ledger (local runtime, a real `ecolink serve`).

As root (as here and in CI) every account's replicas, exec shells and kept sessions
run under an unprivileged uid of their own: a replica cannot read the database, the
state directory or another account's working directory; shared filesystems stay
usable by every replica; a replica that fills its home past the disk quota is stopped
and says why. When the backend cannot change uids (`ECOLINK_REPLICA_UIDS=off`, as
for a backend that is not root) it says so at start and serves one account only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from support.e2e_helpers import launch, wait_for, wait_until
from support.reliability import exec_once

pytestmark = pytest.mark.timeout(180)


def workdir(state_dir: Path, cid: str, replica: str, *, own_uids: bool = True) -> Path:
    from ecocore.clock import SystemClock
    from ecolink.runtime.local import LocalRuntime

    runtime = LocalRuntime(state_dir, SystemClock(), replica_uids=own_uids)
    return runtime.workdir(cid, replica)


def read_when_written(path: Path, timeout: float = 20.0) -> str:
    wait_until(lambda: path.exists() and path.read_text().endswith("\n"), timeout, what=str(path))
    return path.read_text().strip()


def probe_command(state: Path, other: Path) -> str:
    """A startup command that records who it runs as, then tries to read what it
    must not, writing one line per try."""
    tries = {
        "db": f"cat {state}/ecolink.db",
        "wal": f"cat {state}/ecolink.db-wal",
        "state": f"ls {state}",
        "uids": f"cat {state}/replica-uids.json",
        "log": f"cat {state}/serve.out",
        "other": f"ls {other}",
        "other_secret": f"cat {other}/secret",
    }
    lines = [
        f'if {cmd} >/dev/null 2>&1; then echo "{name} readable"; else echo "{name} denied"; fi'
        for name, cmd in tries.items()
    ]
    return (
        'id -u > uid.tmp; mv uid.tmp uid; echo "$HOME" > home; { '
        + "; ".join(lines)
        + "; } > probes.tmp; mv probes.tmp probes; exec sleep 1000"
    )


def test_replicas_run_as_their_accounts_own_uid_and_cannot_read_the_ledger(
    ecolink_server: Any,
) -> None:
    srv = ecolink_server
    state = srv.state_dir
    # The state directory is the backend's alone.
    st = state.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()

    other_key = srv.new_account("other")
    with srv.client(other_key) as other_api:
        b = launch(
            other_api,
            "secrets",
            replicas=2,
            command="echo hush > secret; id -u > uid; exec sleep 1000",
        )
        b_dir = workdir(state, b["id"], "secrets-0")
        b_uid = int(read_when_written(b_dir / "uid"))

    with srv.client() as api:
        a = launch(api, "probe", replicas=2, command=probe_command(state, b_dir))
        a_dir = workdir(state, a["id"], "probe-0")
        probes = read_when_written(a_dir / "probes", timeout=30)
        a_uid = int(read_when_written(a_dir / "uid"))

        # Their own, unprivileged uids: one per account, the same for an account's replicas.
        assert a_uid != 0 and b_uid != 0 and a_uid != b_uid
        assert int(read_when_written(workdir(state, a["id"], "probe-1") / "uid")) == a_uid
        assert read_when_written(a_dir / "home") == str(a_dir)
        wd = a_dir.stat()
        assert wd.st_uid == a_uid and stat.S_IMODE(wd.st_mode) == 0o700

        assert probes.splitlines() == [
            "db denied",
            "wal denied",
            "state denied",
            "uids denied",
            "log denied",
            "other denied",
            "other_secret denied",
        ]

        # Exec shells run as the replica does, and cannot read the ledger either.
        out, _, status = exec_once(
            srv.ws_url, srv.key, a["id"], "probe-1", ["sh", "-c", f"id -u; cat {state}/ecolink.db"]
        )
        assert out.split()[0] == str(a_uid).encode()
        assert status is not None and status.get("status") == "Failure"


def test_shared_filesystems_stay_usable_by_every_replica(ecolink_server: Any) -> None:
    srv = ecolink_server
    srv.cli("filesystems", "create", "team")
    other_key = srv.new_account("other")
    write = 'echo "$ECO_REPLICA_NAME" >> "$ECO_FS_TEAM/names"; exec sleep 1000'
    with srv.client() as api, srv.client(other_key) as other_api:
        a = launch(api, "one", replicas=2, command=write, shared_filesystems=["team"])
        wait_for(api, a["id"], lambda c: c["status"] == "running")
        b = launch(other_api, "two", replicas=2, command=write, shared_filesystems=["team"])
        wait_for(other_api, b["id"], lambda c: c["status"] == "running")
        names = srv.state_dir / "filesystems" / "team" / "names"
        wait_until(
            lambda: names.exists() and len(names.read_text().split()) == 4,
            what="four replicas of two accounts wrote to the shared filesystem",
        )
        assert sorted(names.read_text().split()) == ["one-0", "one-1", "two-0", "two-1"]


def test_a_replica_that_fills_its_home_is_stopped_and_says_why(ecolink_server_factory: Any) -> None:
    srv = ecolink_server_factory(
        extra_args=["--replica-disk-quota", "1", "--replica-disk-check", "0.3"]
    )
    with srv.client() as api:
        c = launch(
            api, "filler", replicas=2, command="head -c 3000000 /dev/zero > big; exec sleep 1000"
        )
        done = wait_for(
            api,
            c["id"],
            lambda c: all(s["phase"] == "Failed" for s in c["replica_states"]),
            timeout=30,
            what="both replicas stopped over quota",
        )
        for s in done["replica_states"]:
            assert "disk quota" in (s["reason"] or ""), s
        events = api.get(f"/gpu-clusters/{c['id']}/events").json()["events"]
        assert any("disk quota" in e["message"] for e in events), events


def test_without_uid_changes_the_backend_serves_one_account_and_says_so(
    ecolink_server_factory: Any,
) -> None:
    srv = ecolink_server_factory(env={"ECOLINK_REPLICA_UIDS": "off"})
    assert "serves one account only" in srv.log_tail()
    r = srv.cli("accounts", "create", "second", check=False)
    assert r.returncode == 1
    assert "refusing a second account" in r.stderr and "'test' exists" in r.stderr
    assert "second" not in srv.cli("accounts", "list").stdout
    with srv.client() as api:
        c = launch(api, "mine", replicas=2, command="id -u > uid; exec sleep 1000")
        uid = read_when_written(workdir(srv.state_dir, c["id"], "mine-0", own_uids=False) / "uid")
        assert uid == str(os.geteuid())


def test_a_single_account_backend_will_not_start_on_two_accounts(
    ecolink_server_factory: Any,
) -> None:
    srv = ecolink_server_factory(start=False)
    srv.cli("accounts", "create", "second")  # made while replicas could change uids
    srv.env["ECOLINK_REPLICA_UIDS"] = "off"
    with pytest.raises(RuntimeError) as err:
        srv.start()
    assert "serves one account only" in str(err.value)
    assert "2 accounts" in str(err.value)
