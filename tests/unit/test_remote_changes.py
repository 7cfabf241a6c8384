"""What another instance committed, told to this instance: its watch observers hear
the cluster, the account and the events (read back by id), and its telemetry follows
the clusters that run now and lets go of the ones that stopped."""

from __future__ import annotations

import asyncio

from test_store import NOW, _cluster

from ecolink.service.changes import ChangeBus
from ecolink.service.remote import RemoteChanges
from ecolink.store import Event, Store


class Heard:
    def __init__(self) -> None:
        self.clusters: list[tuple[str, str]] = []
        self.accounts: list[str] = []
        self.events: list[Event] = []

    def cluster_changed(self, account_id: str, cluster_id: str) -> None:
        self.clusters.append((account_id, cluster_id))

    def account_changed(self, account_id: str) -> None:
        self.accounts.append(account_id)

    def event_added(self, event: Event) -> None:
        self.events.append(event)


def test_another_instances_commit_reaches_observers_and_telemetry() -> None:
    store = Store(":memory:")
    with store.tx():
        acct = store.create_account("a", NOW)
    running = _cluster(store, acct.id, cid="gc_run", name="run", status="running")
    stopped = _cluster(store, acct.id, cid="gc_stop", name="stop", status="stopped")
    with store.tx():
        ev = store.add_event(acct.id, running.id, NOW, "scaled", "scaled from 2 to 3 replicas")
    bus = ChangeBus()
    heard = Heard()
    bus.observers.append(heard)
    tracked: list[str] = []
    untracked: list[str] = []
    remote = RemoteChanges(store, bus, tracked.append, untracked.append)

    async def main() -> None:
        remote._loop = asyncio.get_running_loop()
        remote.heard(
            [
                f"c:{acct.id}:{running.id}",
                f"c:{acct.id}:{stopped.id}",
                f"a:{acct.id}",
                f"e:{ev.id}",
                "e:999999",  # an event this database does not have: nothing
                "x:nonsense",
            ]
        )
        remote.heard([])  # "anything may have changed": nothing to tell by id
        for _ in range(50):
            await asyncio.sleep(0.01)
            if heard.events and tracked and untracked:
                break

    asyncio.run(main())
    assert heard.clusters == [(acct.id, running.id), (acct.id, stopped.id)]
    assert heard.accounts == [acct.id]
    assert [e.id for e in heard.events] == [ev.id]
    assert tracked == [running.id] and untracked == [stopped.id]
    store.close()
