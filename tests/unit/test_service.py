"""ClusterService: the use cases, their refusals, idempotency, the runtime being
unreachable, expiry (also while the backend was down), warnings and failure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from ecolink.errors import (
    Conflict,
    InsufficientBalance,
    InvalidField,
    NotFound,
)
from ecolink.idempotency import Replayed, StoredAnswer
from ecolink.runtime.base import RuntimeRefused, RuntimeUnavailable
from ecolink.service import ClusterService, LaunchRequest
from ecolink.store import Store
from support.service_harness import MemoryRuntime, make_service, new_account

# Every test here runs on each store engine (SQLite and Postgres).
pytestmark = pytest.mark.usefixtures("engine")

MH = 1_000_000
USD = 1_000_000
US = 1_000_000


def req(name: str = "demo", **kw: Any) -> LaunchRequest:
    base: dict[str, Any] = dict(
        name=name,
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=4,
        replicas=3,
        image="python:3.12",
        duration_mh=10 * MH,
    )
    base.update(kw)
    return LaunchRequest(**base)


def run(
    fn: Callable[[ClusterService, MemoryRuntime, Any, Store, str], Awaitable[None]],
    credit: int = 1000,
    budget: int = 64,
) -> None:
    async def main() -> None:
        service, runtime, clock, store = make_service(budget=budget)
        acct = new_account(service, "alice", credit)
        await service.start(background=False)
        await fn(service, runtime, clock, store, acct)
        assert store.audit() == []

    asyncio.run(main())


def test_launch_holds_and_runs_the_replicas() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        assert c.status == "running"  # the memory runtime reports Running at once
        assert runtime.specs[c.id].replicas == 3
        assert c.hold_total == 300 * USD
        a = store.account(acct)
        assert a is not None and (a.balance, a.held) == (1000 * USD, 300 * USD)
        kinds = [e.kind for e in service.events(c.id)]
        assert kinds[0] == "launched"

    run(body)


def test_launch_refusals_name_their_field_and_change_nothing() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        for bad, field in [
            (dict(region="mars"), "region"),
            (dict(gpu_type="TPU"), "gpu_type"),
            (dict(gpu_count=3), "gpu_count"),
            (dict(shared_filesystems=("nope",)), "shared_filesystems"),
        ]:
            with pytest.raises(InvalidField) as exc:
                await service.launch(acct, req(**bad))
            assert exc.value.field == field
        await service.launch(acct, req())
        with pytest.raises(Conflict) as conflict:
            await service.launch(acct, req())
        assert conflict.value.field == "name"
        assert len(store.ledger_all(acct)) == 2  # the credit and one hold

    run(body)


def test_gpu_budget_refuses_with_what_is_free() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        await service.launch(acct, req("a", gpu_count=4, replicas=3, duration_mh=MH))  # 12
        with pytest.raises(Conflict) as exc:
            await service.launch(acct, req("b", gpu_count=2, replicas=3, duration_mh=MH))  # 6
        assert "4 of 16 free" in exc.value.message
        # Stopped clusters hold no GPUs; resuming checks the budget again.
        await service.stop(acct, "a")
        await service.launch(acct, req("b", gpu_count=2, replicas=3, duration_mh=MH))
        with pytest.raises(Conflict) as resume:
            await service.resume(acct, "a")
        assert "10 of 16 free" in resume.value.message
        # Scaling up counts the cluster's own GPUs as its own.
        with pytest.raises(Conflict):
            await service.scale(acct, "b", 9)
        c = await service.scale(acct, "b", 8)
        assert c.replicas == 8

    run(body, budget=16)


def test_insufficient_balance_says_how_much_is_missing() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        with pytest.raises(InsufficientBalance) as exc:
            await service.launch(acct, req(duration_mh=10 * MH))  # hold $300
        assert "$300.000000" in exc.value.message and "$200.000000 missing" in exc.value.message
        assert store.list_clusters(acct) == []
        assert runtime.specs == {}  # the runtime was never asked

    run(body, credit=100)


def test_runtime_unavailable_answers_503_and_nothing_changes() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        runtime.unavailable = True
        with pytest.raises(RuntimeUnavailable):
            await service.launch(acct, req())
        assert store.list_clusters(acct) == [] and len(store.ledger_all(acct)) == 1
        runtime.unavailable = False
        c = await service.launch(acct, req())
        before = (store.ledger_all(), store.cluster(c.id))
        clock.advance(3600)
        runtime.unavailable = True
        for action in (
            lambda: service.scale(acct, "demo", 5),
            lambda: service.stop(acct, "demo"),
            lambda: service.terminate(acct, "demo"),
            lambda: service.set_endpoint(acct, "demo", 8000),
        ):
            with pytest.raises(RuntimeUnavailable):
                await action()
        assert (store.ledger_all(), store.cluster(c.id)) == before
        runtime.unavailable = False
        c = await service.scale(acct, "demo", 5)
        assert c.replicas == 5 and runtime.specs[c.id].replicas == 5

    run(body)


def test_a_runtime_refusal_reaches_the_api_as_it_is_and_nothing_changes() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        words = 'deployments.apps is forbidden: User "ecolink" cannot create resource'
        runtime.refusal = RuntimeRefused.from_api_status(403, words)
        with pytest.raises(RuntimeRefused) as refused:
            await service.launch(acct, req())
        assert refused.value.status == 409 and words in str(refused.value)
        assert store.list_clusters(acct) == [] and len(store.ledger_all(acct)) == 1
        runtime.refusal = None
        c = await service.launch(acct, req())
        before = (store.ledger_all(), store.cluster(c.id))
        runtime.refusal = RuntimeRefused.from_api_status(422, "spec.replicas: Invalid value")
        with pytest.raises(RuntimeRefused) as invalid:
            await service.scale(acct, "demo", 5)
        assert invalid.value.status == 422
        assert (store.ledger_all(), store.cluster(c.id)) == before
        runtime.refusal = None

    run(body)


@dataclass(frozen=True)
class _Recorder:
    key: str
    fingerprint: str

    def record(self, result: object) -> StoredAnswer:
        body = json.dumps({"replicas": getattr(result, "replicas", None)}).encode()
        return StoredAnswer(200, "application/json", body)


def _idem(key: str, fp: str) -> _Recorder:
    return _Recorder(key=key, fingerprint=fp)


def test_idempotency_replays_the_first_answer_and_changes_nothing_more() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        await service.launch(acct, req(gpu_type="L40S", gpu_count=1, duration_mh=48 * MH))
        await service.scale(acct, "demo", 5, _idem("k1", "scale-5"))
        n = len(store.ledger_all())
        await service.scale(acct, "demo", 4)
        with pytest.raises(Replayed) as replay:
            await service.scale(acct, "demo", 5, _idem("k1", "scale-5"))
        assert json.loads(replay.value.answer.body) == {"replicas": 5}
        assert len(store.ledger_all()) == n  # no time passed: scaling down posts nothing
        assert service.get_cluster(acct, "demo").replicas == 4
        with pytest.raises(Conflict):
            await service.scale(acct, "demo", 6, _idem("k1", "scale-6"))
        # Kept 24 hours.
        clock.advance(24 * 3600 + 1)
        c = await service.scale(acct, "demo", 5, _idem("k1", "scale-5"))
        assert c.replicas == 5

    run(body)


def test_idempotency_keys_are_per_account() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        bob = new_account(service, "bob", 1000)
        await service.launch(acct, req(), _idem("same", "x"))
        c = await service.launch(bob, req(), _idem("same", "x"))
        assert c.account_id == bob

    run(body)


def test_other_accounts_clusters_are_not_found() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        bob = new_account(service, "bob", 1000)
        c = await service.launch(acct, req())
        for ref in (c.id, c.name):
            with pytest.raises(NotFound):
                service.get_cluster(bob, ref)
            with pytest.raises(NotFound):
                await service.terminate(bob, ref)
        assert service.list_clusters(bob) == []

    run(body)


def test_scale_and_extend_while_stopped_change_only_count_and_expiry() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req(duration_mh=10 * MH))
        clock.advance(3600)
        await service.stop(acct, "demo")
        n = len(store.ledger_all())
        c = await service.scale(acct, "demo", 2)
        c = await service.extend(acct, "demo", 2 * MH)
        assert len(store.ledger_all()) == n
        assert runtime.specs[c.id].replicas == 0
        assert c.replicas == 2 and c.duration_mh == 12 * MH
        clock.advance(3600)
        c = await service.resume(acct, "demo")
        # 10 h remain at 2 replicas x $10/h.
        assert store.ledger_all()[-1].amount == 200 * USD
        assert runtime.specs[c.id].replicas == 2

    run(body)


def test_extend_is_limited_to_720_hours_in_total_and_refused_after_expiry() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        await service.launch(
            acct, req(gpu_type="L40S", gpu_count=1, replicas=2, duration_mh=700 * MH)
        )
        with pytest.raises(InvalidField) as exc:
            await service.extend(acct, "demo", 21 * MH)
        assert exc.value.field == "hours"
        await service.extend(acct, "demo", 20 * MH)
        clock.advance(720 * 3600)
        with pytest.raises(Conflict):
            await service.scale(acct, "demo", 3)
        c = service.get_cluster(acct, "demo")
        assert (c.status, c.status_reason) == ("terminated", "expired")

    run(body, credit=5000)


def test_extend_after_expiry_is_refused_even_before_the_reaper_ran() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req(duration_mh=MH))
        clock.advance(3601)
        with pytest.raises(Conflict):
            await service.extend(acct, "demo", MH)
        c2 = store.cluster(c.id)
        assert c2 is not None and c2.status == "terminated" and c2.spent_total == 30 * USD

    run(body)


def test_terminate_is_idempotent_and_frees_the_name() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        clock.advance(1800)
        t1 = await service.terminate(acct, "demo")
        n = len(store.ledger_all())
        t2 = await service.terminate(acct, c.id)
        assert (t1.status, t1.status_reason) == ("terminated", "user")
        assert t2.status == "terminated" and len(store.ledger_all()) == n
        assert c.id not in runtime.specs
        assert t1.spent_total == 15 * USD and t1.released_total == 285 * USD
        c2 = await service.launch(acct, req())
        assert c2.id != c.id
        assert service.get_cluster(acct, "demo").id == c2.id
        with pytest.raises(Conflict):
            await service.scale(acct, c.id, 4)

    run(body)


def test_expiry_warnings_at_30_and_5_minutes() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req(duration_mh=MH))
        clock.advance(29 * 60)
        await service.tick()
        assert [e.kind for e in service.events(c.id)].count("expiry_warning") == 0
        clock.advance(2 * 60)  # 29 minutes left
        await service.tick()
        await service.tick()
        warnings = [e for e in service.events(c.id) if e.kind == "expiry_warning"]
        assert len(warnings) == 1 and "29 minutes" in warnings[0].message
        clock.advance(25 * 60)  # 4 minutes left
        await service.tick()
        warnings = [e for e in service.events(c.id) if e.kind == "expiry_warning"]
        assert len(warnings) == 2 and "4 minutes" in warnings[1].message
        # Extending moves expiry out again: the warnings come again when due.
        await service.extend(acct, c.id, MH)
        clock.advance(35 * 60)
        await service.tick()
        assert [e.kind for e in service.events(c.id)].count("expiry_warning") == 3

    run(body)


def test_reaper_expires_and_charges_only_up_to_expires_at() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req(duration_mh=MH))  # $30
        clock.advance(3 * 3600)  # the reaper was late by two hours
        await service.tick()
        c2 = store.cluster(c.id)
        assert c2 is not None
        assert (c2.status, c2.status_reason) == ("terminated", "expired")
        assert c2.spent_total == 30 * USD and c2.released_total == 0
        assert c.id not in runtime.specs
        assert "expired" in [e.kind for e in service.events(c.id)]

    run(body)


def test_clusters_that_expired_while_the_backend_was_down_are_charged_to_expiry() -> None:
    async def main() -> None:
        service, runtime, clock, store = make_service()
        acct = new_account(service, "alice", 1000)
        await service.start(background=False)
        c = await service.launch(acct, req(duration_mh=2 * MH))  # hold $60
        clock.advance(1800)
        await service.tick()
        # The backend dies (no shutdown) and comes back 5 hours later.
        clock.advance(5 * 3600)
        runtime2 = MemoryRuntime()
        runtime2.specs = dict(runtime.specs)
        service2 = ClusterService(store, runtime2, service.catalog, clock)
        await service2.start(background=False)
        c2 = store.cluster(c.id)
        assert c2 is not None
        assert (c2.status, c2.status_reason) == ("terminated", "expired")
        assert c2.spent_total == 60 * USD and c2.hold_total == 60 * USD
        assert c.id not in runtime2.specs
        assert c.id not in {s.cluster_id for s in runtime2.started_with}
        assert store.audit() == []

    asyncio.run(main())


def test_clean_shutdown_with_local_replicas_pauses_accrual() -> None:
    async def main() -> None:
        service, runtime, clock, store = make_service()
        acct = new_account(service, "alice", 1000)
        await service.start(background=False)
        c = await service.launch(acct, req(duration_mh=10 * MH))
        clock.advance(3600)
        await service.shutdown(stop_replicas=True)
        c1 = store.cluster(c.id)
        assert c1 is not None and c1.spent_total == 30 * USD and c1.suspended
        clock.advance(3 * 3600)  # down for three hours: not charged
        service2 = ClusterService(store, runtime, service.catalog, clock)
        await service2.start(background=False)
        clock.advance(3600)
        await service2.post_charges(force=True)
        c2 = store.cluster(c.id)
        assert c2 is not None and c2.spent_total == 60 * USD and not c2.suspended
        assert runtime.specs[c.id].replicas == 3  # started again
        assert store.audit() == []

    asyncio.run(main())


def test_a_failed_cluster_releases_its_hold() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        clock.advance(3600)
        service.cluster_failed(c.id, "every replica failed: exit 1")
        c2 = store.cluster(c.id)
        for _ in range(500):  # written by the writer thread of a database on disk
            await asyncio.sleep(0.01)
            c2 = store.cluster(c.id)
            if c2 is not None and c2.status == "failed":
                break
        assert c2 is not None
        assert (c2.status, c2.status_reason) == ("failed", "error")
        assert c2.spent_total == 30 * USD and c2.released_total == 270 * USD
        assert any("every replica failed" in e.message for e in service.events(c.id))
        with pytest.raises(Conflict):
            await service.resume(acct, c.id)
        t = await service.terminate(acct, c.id)
        assert t.status == "terminated" and t.status_reason == "error"

    run(body)


def test_endpoint_set_change_and_close() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        c = await service.set_endpoint(acct, "demo", 8000)
        assert c.endpoint_port == 8000 and runtime.specs[c.id].endpoint_port == 8000
        await service.stop(acct, "demo")
        c = await service.set_endpoint(acct, "demo", 9000)  # allowed while stopped
        assert c.endpoint_port == 9000
        c = await service.resume(acct, "demo")
        assert runtime.specs[c.id].endpoint_port == 9000
        c = await service.close_endpoint(acct, "demo")
        assert c.endpoint_port is None and runtime.specs[c.id].endpoint_port is None
        await service.terminate(acct, "demo")
        with pytest.raises(Conflict):
            await service.set_endpoint(acct, c.id, 8000)
        kinds = [e.kind for e in service.events(c.id)]
        assert kinds.count("endpoint_changed") == 3

    run(body)


def test_restart_and_replica_restart() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        await service.restart(acct, "demo")
        state = await service.restart_replica(acct, "demo", "demo-1")
        assert state.name == "demo-1"
        with pytest.raises(NotFound) as exc:
            await service.restart_replica(acct, "demo", "demo-9")
        assert exc.value.field == "replica"
        await service.stop(acct, "demo")
        with pytest.raises(Conflict):
            await service.restart(acct, "demo")
        assert [k for k, _ in runtime.calls].count("restart") == 2
        assert [e.kind for e in service.events(c.id)].count("restarted") == 2

    run(body)


def test_charges_accrue_while_pending_and_stop_while_stopped() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        c = await service.launch(acct, req(duration_mh=10 * MH))
        clock.advance(3600)
        await service.stop(acct, "demo")
        clock.advance(5 * 3600)
        await service.post_charges(force=True)
        c2 = store.cluster(c.id)
        assert c2 is not None and c2.spent_total == 30 * USD

    run(body)


def test_timestamps_move_with_the_injected_clock() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: Store, acct: str
    ) -> None:
        t0 = clock.now()
        c = await service.launch(acct, req(duration_mh=MH // 2))
        assert c.expires_at - c.created_at == 1800 * US
        clock.set(t0 + timedelta(minutes=10))
        c = await service.extend(acct, "demo", MH // 2)
        assert c.expires_at - c.created_at == 3600 * US

    run(body)
