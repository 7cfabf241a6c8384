"""Each cluster's own `termination_grace_seconds` on the local runtime: at stop (and
at expiry) a replica gets SIGTERM, then that cluster's grace to checkpoint before it is killed,
whatever the backend's default (`--termination-grace-seconds`, 3 in tests)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from support.e2e_helpers import all_ready, launch, wait_for, wait_until

# On SIGTERM: note the start of a 3 s checkpoint, take it (ignoring further TERMs
# so the grace alone decides), note its end and exit.
CHECKPOINT = (
    'trap \'trap "" TERM; echo started > ckpt; sleep 3; echo finished >> ckpt; '
    "exit 0' TERM; while :; do sleep 0.1; done"
)


def _stop_with_grace(server: Any, name: str, grace: int) -> tuple[float, list[str]]:
    """Launch, stop, and return how long the stop took and what each replica's
    checkpoint file says once everything has ended."""
    with server.client() as api:
        c = launch(api, name, command=CHECKPOINT, termination_grace_seconds=grace)
        assert c["termination_grace_seconds"] == grace
        c = wait_for(api, c["id"], all_ready(2))
        time.sleep(0.5)  # the trap is set
        started = time.monotonic()
        r = api.post(f"/gpu-clusters/{c['id']}/stop")
        assert r.status_code == 200, r.text
        wait_for(api, c["id"], lambda x: x["status"] == "stopped", timeout=30)
        took = time.monotonic() - started
        assert api.get(f"/gpu-clusters/{c['id']}").json()["termination_grace_seconds"] == grace
        # A killed checkpoint stays unfinished, however long one waits.
        time.sleep(3.5)
        work = server.replica_dir(c["id"])
        texts = [(work / f"{name}-{i}" / "ckpt").read_text() for i in range(2)]
        return took, texts


def test_a_long_enough_grace_lets_the_checkpoint_finish(ecolink_server):
    took, texts = _stop_with_grace(ecolink_server, "patient", 5)
    assert texts == ["started\nfinished\n"] * 2
    assert took >= 2.5  # the stop waited for the checkpoint


def test_a_short_grace_kills_the_checkpoint(ecolink_server):
    took, texts = _stop_with_grace(ecolink_server, "hasty", 1)
    assert texts == ["started\n"] * 2
    assert took < 3  # killed after its 1 s, not the backend's default of 3


def test_a_cluster_without_the_field_gets_the_backend_default(ecolink_server):
    with ecolink_server.client() as api:
        c = launch(api, "plain", command="exec sleep 300")
        assert c["termination_grace_seconds"] == 3  # ECOLINK_TERMINATION_GRACE_SECONDS


def _draining(seconds: int) -> str:
    """A replica that, on SIGTERM, drains for `seconds` (ignoring further TERMs) and
    notes the start and the end of its drain."""
    return (
        'trap \'trap "" TERM; echo started > ckpt; '
        f"sleep {seconds}; echo finished >> ckpt; exit 0' TERM; "
        "while :; do sleep 0.1; done"
    )


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_stop_answers_at_once_while_the_replica_drains(ecolink_server):
    """The stop returns once SIGTERM is sent: the cluster is `stopping` while the
    replica drains (holding no lock of the account), `stopped` once it is gone."""
    with ecolink_server.client() as api:
        c = launch(api, "drains", command=_draining(15), termination_grace_seconds=20)
        c = wait_for(api, c["id"], all_ready(2))
        time.sleep(0.5)  # the trap is set
        started = time.monotonic()
        r, took = _timed(lambda: api.post(f"/gpu-clusters/{c['id']}/stop"))
        assert r.status_code == 200, r.text
        assert took < 2
        body = r.json()
        assert body["status"] == "stopping"
        assert [(s["name"], s["ready"], s["reason"]) for s in body["replica_states"]] == [
            (f"drains-{i}", False, "Terminating") for i in range(2)
        ]
        # Other actions of the same account do not wait for the drain.
        other, took = _timed(lambda: launch(api, "meanwhile", command="exec sleep 300"))
        assert took < 2
        r, took = _timed(lambda: api.post(f"/gpu-clusters/{other['id']}/extend", json={"hours": 1}))
        assert r.status_code == 200, r.text
        assert took < 2
        assert api.get(f"/gpu-clusters/{c['id']}").json()["status"] == "stopping"
        wait_for(api, c["id"], lambda x: x["status"] == "stopped", timeout=30)
        assert time.monotonic() - started >= 14  # stopped only once the drain ended
        work = ecolink_server.replica_dir(c["id"])
        assert [(work / f"drains-{i}" / "ckpt").read_text() for i in range(2)] == [
            "started\nfinished\n"
        ] * 2
        assert api.get(f"/gpu-clusters/{c['id']}").json()["replica_states"] == []


def test_a_resume_during_the_drain_starts_after_it(ecolink_server):
    """A resume while the replica still drains answers at once; the new replica
    (same name, same working dir) starts only once the old one has ended."""
    with ecolink_server.client() as api:
        c = launch(api, "again", command=_draining(4), termination_grace_seconds=20)
        c = wait_for(api, c["id"], all_ready(2))
        time.sleep(0.5)  # the trap is set
        r = api.post(f"/gpu-clusters/{c['id']}/stop")
        assert r.status_code == 200, r.text
        r, took = _timed(lambda: api.post(f"/gpu-clusters/{c['id']}/resume"))
        assert r.status_code == 200, r.text
        assert took < 2
        assert r.json()["status"] == "pending"
        work = ecolink_server.replica_dir(c["id"])
        wait_for(api, c["id"], all_ready(2), timeout=30)
        # The old drains ran to their end before the new replicas started.
        assert [(work / f"again-{i}" / "ckpt").read_text() for i in range(2)] == [
            "started\nfinished\n"
        ] * 2


def test_at_expiry_replicas_get_sigterm_and_the_grace(ecolink_server):
    # The checkpoint goes to a shared filesystem: a terminated cluster's working
    # dirs are removed once its replicas have ended.
    ecolink_server.cli("filesystems", "create", "ckpt")
    shared = ecolink_server.state_dir / "filesystems" / "ckpt"
    note = '"$ECO_FS_CKPT/$ECO_REPLICA_NAME"'
    command = (
        f'trap \'trap "" TERM; echo started > {note}; sleep 2; echo finished >> {note}; '
        "exit 0' TERM; while :; do sleep 0.1; done"
    )
    with ecolink_server.client() as api:
        c = launch(
            api,
            "brief",
            command=command,
            estimated_duration_hours="0.01",  # 36 s
            shared_filesystems=["ckpt"],
            termination_grace_seconds=6,
        )
        wait_for(api, c["id"], all_ready(2))
        c = wait_for(api, c["id"], lambda x: x["status"] == "terminated", timeout=120)
        assert c["status_reason"] == "expired"

    def texts() -> list[str]:
        files = [shared / f"brief-{i}" for i in range(2)]
        return [f.read_text() if f.exists() else "" for f in files]

    # The status may say terminated while the replicas still drain (in the
    # background); a checkpoint killed halfway never says finished.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: all("finished" in t for t in texts()), timeout=10)
    assert texts() == ["started\nfinished\n"] * 2
