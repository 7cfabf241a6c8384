"""The reservation clock inside replicas (local runtime): ECO_EXPIRES_AT at start,
ECO_EXPIRES_AT_FILE kept current within seconds of an extend, and SIGTERM with
`--termination-grace-seconds` before a replica is killed at stop; plus the pod
template that carries the same on kubernetes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from ecolink.runtime.base import ClusterSpec
from ecolink.runtime.kubernetes.objects import EXPIRES_ANNOTATION, pod_template
from support.e2e_helpers import all_ready, launch, wait_for, wait_until


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def test_replicas_see_the_expiry_and_follow_an_extend(ecolink_server):
    with ecolink_server.client() as api:
        c = launch(
            api,
            "clock",
            command='echo "$ECO_EXPIRES_AT" > env_at; '
            'echo "$ECO_EXPIRES_AT_FILE" > env_file; exec sleep infinity',
        )
        c = wait_for(api, c["id"], all_ready(2))
        work = ecolink_server.replica_dir(c["id"], "clock-1")
        wait_until(lambda: (work / "env_file").exists(), what="the replica wrote its env")
        assert _at((work / "env_at").read_text()) == _at(c["expires_at"])
        path = Path((work / "env_file").read_text().strip())
        assert _at(path.read_text()) == _at(c["expires_at"])
        r = api.post(f"/gpu-clusters/{c['id']}/extend", json={"hours": "2"})
        assert r.status_code == 200, r.text
        new = r.json()["expires_at"]
        assert _at(new) > _at(c["expires_at"])
        started = time.monotonic()
        wait_until(
            lambda: _at(path.read_text()) == _at(new),
            timeout=5,
            what="the expiry file follows the extend",
        )
        assert time.monotonic() - started < 5


DRAIN = (
    "trap 'python3 -c \"import signal, time; signal.signal(signal.SIGTERM, "
    "signal.SIG_IGN); time.sleep(7)\"; echo drained > drained; exit 0' TERM; "
    "while :; do sleep 0.1; done"
)


def _stop_and_see(server) -> bool:
    with server.client() as api:
        c = launch(api, "drain", command=DRAIN)
        c = wait_for(api, c["id"], all_ready(2))
        time.sleep(0.5)  # the trap is set
        r = api.post(f"/gpu-clusters/{c['id']}/stop")
        assert r.status_code == 200, r.text
        wait_for(api, c["id"], lambda x: x["status"] == "stopped", timeout=40)
        work = server.replica_dir(c["id"])
        return all((work / f"drain-{i}" / "drained").exists() for i in range(2))


def test_stop_gives_sigterm_and_the_grace_period(ecolink_server_factory):
    patient = ecolink_server_factory(extra_args=["--termination-grace-seconds", "12"])
    assert _stop_and_see(patient) is True
    hasty = ecolink_server_factory(extra_args=["--termination-grace-seconds", "1"])
    assert _stop_and_see(hasty) is False


def test_kubernetes_pods_carry_the_expiry_by_the_downward_api():
    spec = ClusterSpec(
        cluster_id="c1",
        account_id="a1",
        name="k",
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=2,
        image="busybox:1",
        expires_at="2026-01-01T10:00:00Z",
    )
    tmpl = pod_template(spec)
    assert tmpl["metadata"]["annotations"][EXPIRES_ANNOTATION] == "2026-01-01T10:00:00Z"
    main = tmpl["spec"]["containers"][0]
    env = {e["name"]: e for e in main["env"]}
    field = f"metadata.annotations['{EXPIRES_ANNOTATION}']"
    assert env["ECO_EXPIRES_AT"]["valueFrom"]["fieldRef"]["fieldPath"] == field
    vol = next(v for v in tmpl["spec"]["volumes"] if "downwardAPI" in v)
    assert vol["downwardAPI"]["items"] == [{"path": "expires_at", "fieldRef": {"fieldPath": field}}]
    mount = next(m for m in main["volumeMounts"] if m["name"] == vol["name"])
    assert env["ECO_EXPIRES_AT_FILE"]["value"] == mount["mountPath"] + "/expires_at"
