"""The periodic work runs on the leader only: a follower posts no charge, expires and
warns nothing and repairs nothing, while the leader does; a gained leadership runs a
round at once, a lost one starts none; two instances that both lead for a moment
(one database, rounds at the same time, clocks apart) post no charge twice; and
`/metrics`' `ecolink_leader` says which instance leads."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ecocore import billing
from ecocore.clock import FakeClock
from ecolink.leadership import Leadership, SoleLeader
from ecolink.observe.logs import JsonFormatter
from ecolink.service import ClusterService, LaunchRequest
from ecolink.store import Store, to_us
from support.service_harness import T0, MemoryRuntime, catalog_for_tests, make_service, new_account

MH = 1_000_000


class Handed(Leadership):
    """Leadership the test hands over and takes back."""

    kind: ClassVar[str] = "test"

    def __init__(self, leading: bool, identity: str = "test") -> None:
        super().__init__(identity)
        self._leading = leading

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._set(False, "stopped")

    def hand(self, leading: bool) -> None:
        self._set(leading, "handed by the test")


def req(name: str, hours: int = 1, replicas: int = 2) -> LaunchRequest:
    return LaunchRequest(
        name=name,
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=replicas,
        image="python:3.12",
        duration_mh=hours * MH,
    )


def service_on(
    path: Path, clock: FakeClock, leadership: Leadership, **kw: Any
) -> tuple[ClusterService, MemoryRuntime, Store]:
    """One instance on the database at `path` (as another process would open it)."""
    store = Store(path)
    runtime = MemoryRuntime()
    service = ClusterService(
        store, runtime, catalog_for_tests(), clock, leadership=leadership, **kw
    )
    return service, runtime, store


def charges(store: Store, account_id: str) -> list[int]:
    return [-e.amount for e in store.ledger_all(account_id) if e.kind == "charge"]


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_follower_charges_expires_warns_and_repairs_nothing_while_the_leader_does(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    db = tmp_path / "ecolink.db"
    leader, leader_rt, store = service_on(db, clock, Handed(True, "a"))
    follower, follower_rt, follower_store = service_on(db, clock, Handed(False, "b"))
    acct = new_account(leader, "alice", 1000)
    await leader.start(background=False)
    await follower.start(background=False)
    # A follower answers requests: this cluster is launched through it.
    c = await follower.launch(acct, req("one"))
    follower_rt.calls.clear()

    clock.advance(10 * 60)
    await follower.tick()
    assert charges(store, acct) == []
    await leader.tick()
    assert charges(store, acct) == [5_000_000 * 10 // 60]  # $5/h for 10 minutes

    # 55 minutes in: the 10-minute warning is due.
    clock.advance(45 * 60)
    await follower.tick()
    assert [e.kind for e in store.events(c.id)].count("expiry_warning") == 0
    await leader.tick()
    assert [e.kind for e in store.events(c.id)].count("expiry_warning") == 1

    # Past its expiry.
    clock.advance(6 * 60)
    await follower.tick()
    assert store.cluster(c.id).status == "running"  # type: ignore[union-attr]
    assert await follower.expire_due() == 0
    assert await follower.post_charges(force=True) == 0
    await leader.tick()
    done = store.cluster(c.id)
    assert done is not None and done.status in ("terminating", "terminated")
    assert sum(charges(store, acct)) == 5_000_000  # the whole hour, once
    # The follower's runtime runs none of the cluster's replicas (the leader's does
    # in this test): still no repair from it, however long the difference lasts.
    follower.reconcile_grace_s = 0.0
    assert await follower.reconcile() == 0
    assert follower_rt.calls == []
    assert store.audit() == []
    await follower.shutdown(stop_replicas=False)
    await leader.shutdown(stop_replicas=False)
    follower_store.close()
    store.close()


async def test_gaining_leadership_runs_a_round_at_once_and_losing_it_starts_none(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    handed = Handed(False)
    # Rounds an hour apart: only a gain of leadership makes one start sooner.
    service, _, store = service_on(tmp_path / "ecolink.db", clock, handed, tick_s=3600.0)
    acct = new_account(service, "alice", 1000)
    await service.start()
    try:
        c = await service.launch(acct, req("one"))
        clock.advance(10 * 60)
        service._core.wake.set()
        await asyncio.sleep(0.3)
        assert charges(store, acct) == []

        handed.hand(True)
        await wait_until(lambda: charges(store, acct) != [])
        assert charges(store, acct) == [5_000_000 * 10 // 60]

        handed.hand(False)
        await asyncio.sleep(0.1)
        clock.advance(2 * 3600)  # past its expiry
        service._core.wake.set()
        await asyncio.sleep(0.3)
        assert store.cluster(c.id).status == "running"  # type: ignore[union-attr]
        assert len(charges(store, acct)) == 1

        # The next leader expires it at once, charging only up to its expiry.
        handed.hand(True)
        await wait_until(lambda: store.cluster(c.id).status != "running")  # type: ignore[union-attr]
        assert sum(charges(store, acct)) == 5_000_000
    finally:
        await service.shutdown(stop_replicas=False)
        store.close()


async def test_a_leader_that_loses_mid_round_finishes_the_transaction_and_starts_no_other(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    handed = Handed(True)
    service, _, store = service_on(tmp_path / "ecolink.db", clock, handed)
    accounts = [new_account(service, f"user{i}", 1000) for i in range(3)]
    await service.start(background=False)
    for acct in accounts:
        await service.launch(acct, req("one"))
    clock.advance(10 * 60)

    class LoseAfterFirst:
        def cluster_changed(self, account_id: str, cluster_id: str) -> None: ...

        def event_added(self, event: object) -> None: ...

        def account_changed(self, account_id: str) -> None:
            handed.hand(False)  # lost after the first account's charges committed

    service.observers.append(LoseAfterFirst())
    assert await service.post_charges() == 1
    assert sorted(len(charges(store, a)) for a in accounts) == [0, 0, 1]
    await service.shutdown(stop_replicas=False)
    store.close()


@pytest.mark.parametrize("behind_s", [0, 30])
async def test_two_leaders_at_once_post_no_charge_twice(tmp_path: Path, behind_s: int) -> None:
    """As two instances that both believe they lead (one lost its lock a moment ago
    and has not noticed): their rounds overlap on one database, one's clock may be
    behind the other's. Every charge is still posted once."""
    clock_a = FakeClock(T0)
    clock_b = FakeClock(T0)
    db = tmp_path / "ecolink.db"
    a, _, store = service_on(db, clock_a, SoleLeader())
    b, _, store_b = service_on(db, clock_b, SoleLeader())
    accounts = [new_account(a, f"user{i}", 10_000) for i in range(4)]
    await a.start(background=False)
    await b.start(background=False)
    clusters = []
    for acct in accounts:
        for n in range(3):
            clusters.append(await a.launch(acct, req(f"c{n}", hours=10, replicas=n + 1)))
    for _ in range(6):
        clock_a.advance(7 * 60 + 13)
        clock_b.set(clock_a.now())
        clock_b.advance(-behind_s)
        # Both lists of what is due are read before either round writes.
        posted = await asyncio.gather(a.post_charges(), b.post_charges())
        if behind_s == 0:
            # Same moment: each cluster's charge was posted by one of them (the
            # rounds interleave account by account), never by both.
            assert sum(posted) == len(clusters)
    end = to_us(clock_a.now())
    for c in clusters:
        fresh = store.cluster(c.id)
        assert fresh is not None
        exact = billing.accrued(store.segments(c.id), end)
        assert fresh.spent_total == exact, (c.id, fresh.spent_total, exact)
        assert fresh.last_charge_at == end
    for acct in accounts:
        assert sum(charges(store, acct)) == sum(
            billing.accrued(store.segments(c.id), end) for c in clusters if c.account_id == acct
        )
    assert store.audit() == []
    await b.shutdown(stop_replicas=False)
    await a.shutdown(stop_replicas=False)
    store_b.close()
    store.close()


async def test_leadership_changes_are_logged_as_json_lines_with_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handed = Handed(False, "pod-1_abcd")
    heard: list[bool] = []
    handed.subscribe(heard.append)
    with caplog.at_level(logging.WARNING, logger="ecolink.leadership"):
        handed.hand(True)
        handed.hand(True)  # no change, no line
        handed.hand(False)
    assert heard == [True, False]
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert [(line["leader"], line["identity"], line["election"]) for line in lines] == [
        (True, "pod-1_abcd", "test"),
        (False, "pod-1_abcd", "test"),
    ]
    assert lines[0]["message"].startswith("leadership gained: pod-1_abcd")
    assert lines[1]["message"].startswith("leadership lost: pod-1_abcd")
    assert handed.terms == 1


def test_metrics_report_whether_this_instance_leads(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from ecolink.api.context import AppContext
    from ecolink.observe.metrics import Metrics

    handed = Handed(False)
    service, runtime, store = service_on(tmp_path / "ecolink.db", FakeClock(T0), handed)
    ctx = AppContext(
        service=service,
        store=store,
        runtime=runtime,
        clock=service.clock,
        state_dir=tmp_path,
        catalog=service.catalog,
    )
    metrics = Metrics()
    metrics.watch(ctx)

    def leader() -> float:
        text = metrics.exposition().decode()
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "ecolink_leader"]
        (sample,) = family.samples
        return sample.value

    assert leader() == 0
    handed.hand(True)
    assert leader() == 1
    handed.hand(False)
    assert leader() == 0
    store.close()


def test_serve_refuses_a_forced_election_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecolink.cli import main

    state = str(tmp_path / "state")
    assert main(["serve", "--state-dir", state, "--leader-election", "lease"]) == 1
    assert "--leader-election lease needs --runtime kubernetes" in capsys.readouterr().err
    assert main(["serve", "--state-dir", state, "--leader-election", "postgres"]) == 1
    assert "needs a Postgres database" in capsys.readouterr().err
    monkeypatch.setenv("ECOLINK_LEADER_ELECTION", "raft")
    assert main(["serve", "--state-dir", state]) == 1
    assert "ECOLINK_LEADER_ELECTION='raft'" in capsys.readouterr().err


def test_the_embedded_default_leads_alone() -> None:
    from ecolink.wiring import ServeConfig

    assert ServeConfig(state_dir=Path(".")).leader_election == "auto"
    service, _, _, store = make_service()
    assert isinstance(service.leadership, SoleLeader) and service.leadership.leading
    store.close()
