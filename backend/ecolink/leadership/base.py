"""The leadership interface (`Leadership`), the sole leader, and an instance's
identity among candidates (see the package for the whole picture)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, ClassVar, Literal

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
