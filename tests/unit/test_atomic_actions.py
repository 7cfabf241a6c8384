"""Every action happens or does not: when the store fails at commit, terminate, stop,
scale and resume put the runtime back as it was and change no money; when putting
it back fails too, the reaper finds the difference, repairs it and records why."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ecolink.errors import StoreUnavailableError
from ecolink.service import ClusterService, LaunchRequest
from ecolink.store import Store, StoreBusy
from support import service_harness
from support.service_harness import MemoryRuntime, make_service, new_account

# Every test here runs on each store engine (SQLite and Postgres).
pytestmark = pytest.mark.usefixtures("engine")

MH = 1_000_000
USD = 1_000_000


class FailingStore(Store):
    """A store whose next `fail_commits` commits fail as a locked database does."""

    fail_commits = 0

    def _before_commit(self) -> None:
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise StoreBusy("the database cannot be written: database is locked")


def req(name: str = "demo", replicas: int = 3) -> LaunchRequest:
    return LaunchRequest(
        name=name,
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=replicas,
        image="python:3.12",
        duration_mh=10 * MH,
    )


def run(
    fn: Callable[[ClusterService, MemoryRuntime, Any, FailingStore, str], Awaitable[None]],
) -> None:
    async def main() -> None:
        store = FailingStore(service_harness.new_database())
        service, runtime, clock, _ = make_service(store)
        service.reconcile_grace_s = 0.0
        acct = new_account(service, "alice", 1000)
        await service.start(background=False)
        await fn(service, runtime, clock, store, acct)
        assert store.audit() == []

    asyncio.run(main())


def money(store: Store, acct: str) -> tuple[int, int, int]:
    a = store.account(acct)
    assert a is not None
    return a.balance, a.held, len(store.ledger_all(acct))


def running_replicas(runtime: MemoryRuntime, cid: str) -> int:
    return sum(1 for s in runtime.replicas(cid) if s.phase == "Running")


ACTIONS: dict[str, Callable[[ClusterService, str, str], Awaitable[Any]]] = {
    "terminate": lambda s, a, c: s.terminate(a, c),
    "stop": lambda s, a, c: s.stop(a, c),
    "scale up": lambda s, a, c: s.scale(a, c, 5),
    "scale down": lambda s, a, c: s.scale(a, c, 1),
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_failed_commit_puts_the_running_cluster_back(action: str) -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: FailingStore, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        clock.advance(600)
        before = money(store, acct)
        store.fail_commits = 1
        with pytest.raises(StoreUnavailableError) as err:
            await ACTIONS[action](service, acct, c.id)
        assert err.value.status == 503
        if action == "terminate":  # its replicas had to start again
            assert "was not terminated: it runs on" in err.value.message
            assert "no money moved" in err.value.message
        else:
            assert "nothing was changed" in err.value.message
        fresh = store.cluster(c.id)
        assert fresh is not None
        assert (fresh.status, fresh.replicas, fresh.version) == ("running", 3, c.version)
        assert runtime.specs[c.id].replicas == 3
        assert running_replicas(runtime, c.id) == 3
        assert money(store, acct) == before
        # The same action goes through once the store can be written again.
        await ACTIONS[action](service, acct, c.id)

    run(body)


def test_a_failed_resume_commit_leaves_the_cluster_stopped() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: FailingStore, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        await service.stop(acct, c.id)
        before = money(store, acct)
        store.fail_commits = 1
        with pytest.raises(StoreUnavailableError):
            await service.resume(acct, c.id)
        fresh = store.cluster(c.id)
        assert fresh is not None and fresh.status == "stopped"
        assert runtime.specs[c.id].replicas == 0 and running_replicas(runtime, c.id) == 0
        assert money(store, acct) == before
        resumed = await service.resume(acct, c.id)
        assert resumed.status == "running"

    run(body)


def test_a_failed_launch_commit_leaves_nothing_running() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: FailingStore, acct: str
    ) -> None:
        before = money(store, acct)
        store.fail_commits = 1
        with pytest.raises(StoreUnavailableError):
            await service.launch(acct, req())
        assert runtime.specs == {} and store.list_clusters(acct) == []
        assert money(store, acct) == before

    run(body)


class BrokenUndoRuntime(MemoryRuntime):
    """Terminates, but cannot start anything again until `fixed`."""

    fixed = False
    broke = False

    async def apply(self, spec: Any) -> None:
        if self.broke and not self.fixed:
            raise OSError("the runtime failed while putting the cluster back")
        await super().apply(spec)

    async def terminate(self, cluster_id: str) -> None:
        await super().terminate(cluster_id)
        self.broke = True


def test_when_the_undo_fails_too_the_reaper_repairs_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        store = FailingStore(service_harness.new_database())
        runtime = BrokenUndoRuntime()
        service, _, clock, _ = make_service(store, runtime=runtime)
        service.reconcile_grace_s = 0.0
        acct = new_account(service, "alice", 1000)
        await service.start(background=False)
        c = await service.launch(acct, req())
        before = money(store, acct)
        store.fail_commits = 1
        with pytest.raises(StoreUnavailableError) as err:
            await service.terminate(acct, c.id)
        assert "nothing was changed" not in err.value.message
        assert "could not be put back" in err.value.message
        # The store still says running; the runtime has nothing: a divergence.
        assert runtime.replicas(c.id) == []
        fresh = store.cluster(c.id)
        assert fresh is not None and fresh.status == "running"
        assert money(store, acct) == before
        runtime.fixed = True
        with caplog.at_level(logging.WARNING, logger="ecolink.service"):
            repaired = await service.reconcile()
        assert repaired == 1
        assert running_replicas(runtime, c.id) == 3
        assert any("reconcile" in r.getMessage() and c.id in r.getMessage() for r in caplog.records)
        assert [e.kind for e in service.events(c.id)][-1] == "reconciled"
        assert store.audit() == []

    asyncio.run(main())


def test_the_reaper_removes_what_the_store_ended_and_stops_what_it_stopped() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: FailingStore, acct: str
    ) -> None:
        a = await service.launch(acct, req("a"))
        b = await service.launch(acct, req("b"))
        await service.stop(acct, b.id)
        await service.terminate(acct, a.id)
        # Someone (or a crash) left the runtime running both.
        await MemoryRuntime.apply(runtime, service.spec(a, run=True))
        await MemoryRuntime.apply(runtime, service.spec(b, run=True))
        runtime.cluster_ids = lambda: list(runtime.specs)  # type: ignore[attr-defined]
        assert await service.reconcile() == 2
        assert a.id not in runtime.specs
        assert runtime.specs[b.id].replicas == 0
        assert await service.reconcile() == 0

    run(body)


def test_a_difference_must_last_before_it_is_repaired() -> None:
    async def body(
        service: ClusterService, runtime: MemoryRuntime, clock: Any, store: FailingStore, acct: str
    ) -> None:
        c = await service.launch(acct, req())
        service.reconcile_grace_s = 3600.0
        runtime.states[c.id] = []
        assert await service.reconcile() == 0  # seen once: maybe the runtime converges
        runtime.states[c.id] = runtime.states.get(c.id) or []
        service.reconcile_grace_s = 0.0
        assert await service.reconcile() == 1
        assert running_replicas(runtime, c.id) == 3

    run(body)
