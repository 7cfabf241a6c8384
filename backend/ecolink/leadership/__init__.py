"""Which instance does the periodic work (expiry, charges, expiry warnings, reconcile
with the runtime): exactly one, the leader. Every instance answers requests.

Three ways to decide, one interface (`Leadership`):
- `SoleLeader`: the embedded default, one process on SQLite, always the leader;
- `AdvisoryLockLeadership` (`ecolink.leadership.advisory`): a Postgres session-level
  advisory lock held on a connection of its own;
- `LeaseLeadership` (`ecolink.leadership.lease`): a Kubernetes Lease
  (coordination.k8s.io/v1) in the runtime's namespace.

`choose` picks one: the Lease when the runtime is kubernetes with in-cluster
credentials, else the advisory lock when the database is Postgres, else the sole
leader; `serve --leader-election` forces a choice.

A leader that loses its lock or lease steps down at once (`leading` turns false and
the listeners hear it); the service then starts no new round of periodic work. The
money side never depends on there being one leader: every charge and expiry is
computed inside its transaction from what is stored (see `ecolink.service.reaper`),
so two instances that both believe they lead for a moment post nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from ecolink.runtime.base import Runtime

log = logging.getLogger("ecolink.leadership")

ElectionMode = Literal["auto", "lease", "postgres", "none"]
ELECTION_MODES: tuple[ElectionMode, ...] = ("auto", "lease", "postgres", "none")

Listener = Callable[[bool], None]


class LeadershipError(Exception):
    """Leader election cannot work as configured (the message says why)."""


def instance_identity() -> str:
    """This instance's name among candidates: the pod's name (a pod's host name) and
    a random suffix, so two processes of one host, or a restarted container of one
    pod, are never taken for each other."""
    host = os.environ.get("POD_NAME") or socket.gethostname() or "ecolink"
    return f"{host}_{secrets.token_hex(4)}"


class Leadership:
    """Whether this instance leads, kept up to date by a campaign in the background.

    Subclasses implement `_round` (one try to acquire, or to keep, the leadership),
    `_pause` (seconds to the next round) and `_release`."""

    kind: ClassVar[str] = "none"

    def __init__(self, identity: str | None = None) -> None:
        self.identity = identity or instance_identity()
        self._leading = False
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        # How many times this instance gained the leadership.
        self.terms = 0
        self._last_error: str | None = None
        self._stopping = False

    @property
    def leading(self) -> bool:
        return self._leading

    def describe(self) -> str:
        """Where the lock lives, for log lines."""
        return self.kind

    def subscribe(self, listener: Listener) -> None:
        """`listener(leading)` is called on the event loop at every gain and loss."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Try once (so a lone instance leads from its first round), then keep
        campaigning in the background. Never raises: an unreachable lock is tried
        again."""
        self._stopping = False
        await self._safe_round()
        self._task = asyncio.create_task(self._campaign(), name=f"ecolink-leadership-{self.kind}")

    async def stop(self) -> None:
        """Stop campaigning and hand the leadership over (others need not wait for it
        to expire)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A database driver may answer the cancellation of a query with an error
            # of its own: the campaign also ends on `_stopping`.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        was = self._leading
        self._set(False, "this instance stops")
        try:
            await self._release(was)
        except Exception as exc:
            log.warning("handing over the leadership failed: %s", exc)

    async def confirm(self) -> bool:
        """Whether this instance may start a round of periodic work now: it leads and
        its hold is known to be current (a leader whose connection or lease is lost
        steps down here at once)."""
        return self._leading

    # -- for subclasses --------------------------------------------------------------
    async def _round(self) -> None:
        raise NotImplementedError

    def _pause(self) -> float:
        raise NotImplementedError

    async def _release(self, was_leading: bool) -> None:
        return None

    def _set(self, leading: bool, reason: str) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        fields: dict[str, Any] = {
            "leader": leading,
            "identity": self.identity,
            "election": self.kind,
            "where": self.describe(),
        }
        if leading:
            self.terms += 1
            log.warning(
                "leadership gained: %s does the periodic work (%s; %s)",
                self.identity,
                self.describe(),
                reason,
                extra={"fields": fields},
            )
        else:
            log.warning(
                "leadership lost: %s stops the periodic work (%s; %s)",
                self.identity,
                self.describe(),
                reason,
                extra={"fields": fields},
            )
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:
                log.exception("a leadership listener failed")

    async def _safe_round(self) -> None:
        try:
            await self._round()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Once per kind of failure, not once a second while it lasts.
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if error != self._last_error:
                log.warning("leader election (%s): %s; trying again", self.describe(), error)
            self._last_error = error
        else:
            self._last_error = None

    async def _campaign(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._pause())
            if self._stopping:
                break
            await self._safe_round()


class SoleLeader(Leadership):
    """The only instance there is: it leads from `start` to `stop` (the embedded
    default on SQLite, where one process holds the database)."""

    kind: ClassVar[str] = "none"

    def __init__(self, identity: str | None = None) -> None:
        super().__init__(identity or "sole")
        # Leading from the start, silently: nothing was elected.
        self._leading = True
        self.terms = 1

    def describe(self) -> str:
        return "the only instance"

    async def start(self) -> None:
        self._leading = True

    async def stop(self) -> None:
        # Nothing to hand over; the service stops its rounds itself.
        return None


def choose(
    mode: ElectionMode,
    runtime: Runtime,
    database_url: str | None,
    *,
    identity: str | None = None,
) -> Leadership:
    """The leadership `serve` runs with. `auto`: a Lease when the runtime is
    kubernetes with in-cluster credentials, else the advisory lock when the database
    is Postgres, else the sole leader. Raises LeadershipError when a forced choice
    cannot work."""
    postgres = database_url is not None and is_postgres_url(database_url)
    target = getattr(runtime, "target", None)
    in_cluster = runtime.info.name == "kubernetes" and getattr(target, "source", "") == "in-cluster"
    if mode == "auto":
        mode = "lease" if in_cluster else "postgres" if postgres else "none"
    if mode == "none":
        return SoleLeader()
    if mode == "postgres":
        if not postgres:
            raise LeadershipError(
                "--leader-election postgres needs a Postgres database (postgresql://...)"
            )
        from ecolink.leadership.advisory import AdvisoryLockLeadership

        assert database_url is not None
        return AdvisoryLockLeadership(database_url, identity=identity)
    if target is None or runtime.info.name != "kubernetes":
        raise LeadershipError("--leader-election lease needs --runtime kubernetes")
    from ecolink.leadership.lease import LeaseLeadership
    from ecolink.runtime.kubernetes.client import KubeApi

    return LeaseLeadership(KubeApi(target), identity=identity)


def is_postgres_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in ("postgres", "postgresql", "postgresql+psycopg")
