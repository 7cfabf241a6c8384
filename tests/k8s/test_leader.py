"""Leadership by a Kubernetes Lease against the real control plane: of two candidates
one holds the Lease and the other follows; a holder that stops renewing steps down by
itself and the other takes over once the Lease expired, not before; two writes of
one version of the Lease are decided by the API server (409 for the loser); a holder
that stops hands over at once; and across two real `ecolink serve` processes a
SIGKILLed leader is replaced within 15 s, as `/metrics` reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from ecolink.leadership.lease import LEASE_NAME, LeaseLeadership
from ecolink.runtime.base import RuntimeUnavailable
from ecolink.runtime.kubernetes.client import KubeApi, load_target
from support.server import EcolinkServer

# Short for the object tests (the same code as the defaults, 10 s, 2 s, 7 s, 1 s).
DURATION_S = 3
RENEW_S = 0.5
DEADLINE_S = 2.0
RETRY_S = 0.25


class CuttableApi(KubeApi):
    """The runtime's client, which the test can cut off from the API server."""

    cut = False

    async def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        if self.cut:
            raise RuntimeUnavailable("the test cut this instance off")
        return await super().call(fn, *args, **kw)


@pytest.fixture
def kube_api(k8s_env: Any, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeApi]:
    monkeypatch.setenv("KUBECONFIG", str(k8s_env.kubeconfig))
    target = load_target(namespace)
    yield KubeApi(target)
    target.api_client.close()


def candidate(api: KubeApi, name: str) -> LeaseLeadership:
    return LeaseLeadership(
        api,
        identity=name,
        duration_s=DURATION_S,
        renew_s=RENEW_S,
        renew_deadline_s=DEADLINE_S,
        retry_s=RETRY_S,
    )


def read_lease(admin: Any, ns: str) -> Any:
    return client.CoordinationV1Api(admin).read_namespaced_lease(LEASE_NAME, ns)


class Changes:
    """When each candidate gained and lost the leadership."""

    def __init__(self, *cands: LeaseLeadership) -> None:
        self.log: list[tuple[float, str, bool]] = []
        for c in cands:
            c.subscribe(
                lambda leading, c=c: self.log.append((time.monotonic(), c.identity, leading))
            )

    def last(self, who: str, leading: bool) -> float:
        return next(t for t, w, g in reversed(self.log) if w == who and g == leading)


async def until(pred: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not pred():
        assert time.monotonic() - start < timeout, f"timed out: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_one_holds_and_the_other_takes_over_only_after_the_lease_expired(
    kube_api: KubeApi, admin: Any, namespace: str
) -> None:
    cut = CuttableApi(kube_api.target)
    a, b = candidate(cut, "a"), candidate(kube_api, "b")
    changes = Changes(a, b)
    await a.start()
    await b.start()
    try:
        assert a.leading and not b.leading
        lease = read_lease(admin, namespace)
        assert lease.spec.holder_identity == "a"
        assert lease.spec.lease_duration_seconds == DURATION_S
        # It is renewed, and the follower stays a follower.
        first_renew = lease.spec.renew_time
        await asyncio.sleep(DURATION_S + 1)
        assert a.leading and not b.leading
        assert read_lease(admin, namespace).spec.renew_time > first_renew

        # `a` can no longer reach the API server: it cannot renew.
        cut.cut = True
        cut_at = time.monotonic()
        await until(lambda: b.leading, DURATION_S + 3 * RETRY_S + 2.0, "b takes over")
        took = time.monotonic() - cut_at
        # Not before the Lease expired (its last renewal was at most RENEW_S earlier).
        assert took >= DURATION_S - RENEW_S, took
        # `a` found itself unrenewed and stepped down, before `b` led.
        assert not a.leading and not await a.confirm()
        assert changes.last("a", False) - cut_at <= DEADLINE_S + RENEW_S
        assert changes.last("a", False) <= changes.last("b", True)
        lease = read_lease(admin, namespace)
        assert lease.spec.holder_identity == "b"
        assert lease.spec.lease_transitions == 1
    finally:
        await b.stop()
        await a.stop()


async def test_two_writes_of_one_version_one_wins_the_other_gets_409(
    kube_api: KubeApi, admin: Any, namespace: str
) -> None:
    a, b = candidate(kube_api, "a"), candidate(kube_api, "b")
    holder = candidate(kube_api, "gone")
    await holder._round()  # creates the Lease for "gone"
    assert holder.leading
    lease = await kube_api.call(a.leases.read_namespaced_lease, LEASE_NAME, namespace)
    # Both take over from the same version they read: the API server accepts one.
    now = time.monotonic()
    assert await a._write(lease, now, renew=False) is True
    assert await b._write(lease, now, renew=False) is False
    assert read_lease(admin, namespace).spec.holder_identity == "a"

    # And as rounds: a free Lease, both candidates at once, exactly one leads.
    coord = client.CoordinationV1Api(admin)
    for _ in range(5):
        fresh = coord.read_namespaced_lease(LEASE_NAME, namespace)
        fresh.spec.holder_identity = None
        coord.replace_namespaced_lease(LEASE_NAME, namespace, fresh)
        for c in (a, b):
            c._set(False, "the test freed the Lease")
        await asyncio.gather(a._round(), b._round())
        assert [a.leading, b.leading].count(True) == 1
        winner = "a" if a.leading else "b"
        assert read_lease(admin, namespace).spec.holder_identity == winner


async def test_a_holder_that_stops_hands_over_at_once(
    kube_api: KubeApi, admin: Any, namespace: str
) -> None:
    # The defaults: a 10 s Lease the follower need not wait out.
    a = LeaseLeadership(kube_api, identity="a")
    b = LeaseLeadership(kube_api, identity="b")
    assert (a.duration_s, a.renew_s, a.renew_deadline_s, a.retry_s) == (10, 2.0, 7.0, 1.0)
    await a.start()
    await b.start()
    try:
        assert a.leading and not b.leading
        await a.stop()
        assert not a.leading
        took = await until(lambda: b.leading, 3.0, "b takes the handed-over Lease")
        assert took < 3.0
        assert read_lease(admin, namespace).spec.holder_identity == "b"
    finally:
        await b.stop()
        await a.stop()


def _leader(srv: EcolinkServer) -> float | None:
    try:
        text = srv.client().get("/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "ecolink_leader":
            return family.samples[0].value
    raise AssertionError("no ecolink_leader series")


def test_a_killed_leader_process_is_replaced_within_15_seconds(
    k8s_env: Any, admin: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    servers = [
        EcolinkServer(
            tmp_path_factory.mktemp(f"ecolink-lease-{i}"),
            extra_args=[
                "--runtime",
                "kubernetes",
                "--namespace",
                namespace,
                "--leader-election",
                "lease",
                "--log-format",
                "json",
            ],
            env={"KUBECONFIG": str(k8s_env.kubeconfig)},
        )
        for i in range(2)
    ]
    try:
        for srv in servers:
            srv.start()
        deadline = time.monotonic() + 10
        while sorted(_leader(s) or 0 for s in servers) != [0, 1]:
            assert time.monotonic() < deadline, [_leader(s) for s in servers]
            time.sleep(0.2)
        time.sleep(3)  # renewals go on; the other stays a follower
        assert sorted(_leader(s) or 0 for s in servers) == [0, 1]
        leader = next(s for s in servers if _leader(s) == 1)
        other = next(s for s in servers if s is not leader)
        holder = read_lease(admin, namespace).spec.holder_identity
        assert '"leader": true' in leader.log_tail(200_000) and holder in leader.log_tail(200_000)

        leader.kill()
        killed = time.monotonic()
        while _leader(other) != 1:
            assert time.monotonic() - killed < 15, "no new leader within 15 s"
            time.sleep(0.1)
        took = time.monotonic() - killed
        print(f"Lease takeover after SIGKILL of the leader process: {took:.1f} s")
        assert read_lease(admin, namespace).spec.holder_identity != holder
        assert '"leader": true' in other.log_tail(200_000)
    finally:
        for srv in servers:
            srv.close()
