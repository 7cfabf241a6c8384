"""The change bus: who hears about changes (the watch hub), and one `publish`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from operator import methodcaller
from typing import Protocol

from ecolink.store import Cluster, Event

log = logging.getLogger(__name__)


class Observer(Protocol):
    """Who wants to hear about changes (the watch hub)."""

    def cluster_changed(self, account_id: str, cluster_id: str) -> None: ...

    def account_changed(self, account_id: str) -> None: ...

    def event_added(self, event: Event) -> None: ...


class ChangeBus:
    """Observers, told in order: the cluster, then the account, then each event.
    An observer that fails is logged and the others are still told."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []

    def publish(
        self,
        *,
        cluster: Cluster | None = None,
        account: str | None = None,
        events: Iterable[Event] = (),
    ) -> None:
        if cluster is not None:
            self._each(methodcaller("cluster_changed", cluster.account_id, cluster.id))
        if account is not None:
            self._each(methodcaller("account_changed", account))
        for ev in events:
            self._each(methodcaller("event_added", ev))

    def publish_ids(
        self,
        clusters: Iterable[tuple[str, str]] = (),
        accounts: Iterable[str] = (),
        events: Iterable[Event] = (),
    ) -> None:
        """What another instance changed, by (account id, cluster id) and account id."""
        for account_id, cluster_id in clusters:
            self._each(methodcaller("cluster_changed", account_id, cluster_id))
        for account_id in accounts:
            self._each(methodcaller("account_changed", account_id))
        for ev in events:
            self._each(methodcaller("event_added", ev))

    def _each(self, tell: methodcaller) -> None:
        for o in self.observers:
            try:
                tell(o)
            except Exception:
                log.exception("observer failed")
