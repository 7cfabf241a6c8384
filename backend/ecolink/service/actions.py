"""The use cases on clusters: launch, scale, extend, stop, resume, terminate,
restart, restart a replica, open and close the public URL. Each runs inside the
skeleton of `action.py`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable

from ecocore import billing
from ecocore.money import format_hours, format_usd
from ecocore.status import ACCRUING, TERMINAL, ClusterStatus
from ecolink.catalog import GpuType
from ecolink.errors import Conflict, InvalidField, NotFound
from ecolink.idempotency import IdempotencyRecorder
from ecolink.runtime.base import ReplicaNotFound, ReplicaState
from ecolink.service.action import Action
from ecolink.service.core import Core, LaunchRequest
from ecolink.service.expiry import Expiry
from ecolink.service.ledger import hourly
from ecolink.service.lifecycle import follow, move, update_warnings
from ecolink.service.listener import RuntimeEvents
from ecolink.store import Cluster, new_id, rfc3339

log = logging.getLogger(__name__)

S = ClusterStatus
# Statuses no action but terminate (and closing the URL) may start from.
ENDING = TERMINAL | {S.TERMINATING}


class Actions:
    def __init__(
        self,
        core: Core,
        expiry: Expiry,
        listener: RuntimeEvents,
        filesystems: Callable[[], list[dict[str, str]]],
    ) -> None:
        self.core = core
        self.ledger = core.ledger
        self.expiry = expiry
        self.listener = listener
        self.filesystems = filesystems

    @contextlib.asynccontextmanager
    async def _action(
        self, account_id: str, idem: IdempotencyRecorder | None, ref: str | None = None
    ) -> AsyncIterator[Action]:
        """Lock, now, replay check, and the cluster `ref` (expired first if overdue)."""
        act = Action(self.core, self.expiry, self.listener, account_id, idem)
        try:
            await act.enter()
            if ref is not None:
                await act.current(ref)
            yield act
        finally:
            act.leave()
        act.publish()

    # -- launch --------------------------------------------------------------------------
    def validate_launch(self, req: LaunchRequest) -> GpuType:
        """The catalog-dependent field checks (422), in api.md's field order."""
        region = self.core.catalog.region(req.region)
        if region is None:
            raise InvalidField(f"unknown region {req.region!r}", field="region")
        gtype = region.gpu_type(req.gpu_type)
        if gtype is None:
            raise InvalidField(
                f"region {req.region} has no GPU type {req.gpu_type!r}", field="gpu_type"
            )
        if req.gpu_count not in gtype.gpu_counts:
            counts = ", ".join(str(n) for n in gtype.gpu_counts)
            raise InvalidField(f"gpu_count must be one of {counts}", field="gpu_count")
        if req.shared_filesystems:
            known = {f["name"] for f in self.filesystems()}
            for fs in req.shared_filesystems:
                if fs not in known:
                    raise InvalidField(f"no shared filesystem {fs!r}", field="shared_filesystems")
        return gtype

    async def launch(
        self, account_id: str, req: LaunchRequest, idem: IdempotencyRecorder | None = None
    ) -> Cluster:
        gtype = self.validate_launch(req)
        core, ledger = self.core, self.ledger
        async with self._action(account_id, idem) as act:
            now = act.now
            rate = billing.hourly_rate(gtype.rate_per_gpu_hour, req.gpu_count, req.replicas)
            hold = billing.hold_for_hours(rate, req.duration_mh)

            def checks() -> None:
                if core.store.name_in_use(account_id, req.name):
                    raise Conflict(f"a cluster named {req.name!r} exists", field="name")
                ledger.check_budget(account_id, req.region, req.gpu_count * req.replicas, None)
                ledger.check_balance(account_id, hold)

            await act.read(checks)
            c = _new_cluster(account_id, req, gtype.rate_per_gpu_hour, now)
            act.cluster_id = c.id
            self.listener.hold_back(c.id)
            try:
                await act.apply(core.spec(c, run=True), restore=None)
                states = core.runtime.replicas(c.id)
                hours = format_hours(req.duration_mh)

                def body() -> Cluster:
                    core.store.insert_cluster(c)
                    ledger.hold(c, hold, f"launch: {hours} h at ${format_usd(rate)}/h", now)
                    ledger.start_accruing(c, now)
                    follow(c, states, now)
                    update_warnings(c, now)
                    act.save(c)
                    act.event(
                        c,
                        "launched",
                        f"launched {c.replicas} x {c.gpu_count} {c.gpu_type} in "
                        f"{c.region} for {hours} h; hold ${format_usd(hold)}",
                    )
                    if c.endpoint_port is not None:
                        act.event(
                            c, "endpoint_changed", f"public URL opened on port {c.endpoint_port}"
                        )
                    for at, kind, msg, replica in self.listener.held_back(c.id):
                        act.events.append(core.event(c, kind, msg, at, replica))
                    # From here on runtime events find the cluster in the store.
                    self.listener.release(c.id)
                    return c

                return await act.commit(body, money=True, follow=True, track=True)
            finally:
                self.listener.release(c.id)

    # -- actions on a cluster --------------------------------------------------------------
    async def scale(
        self, account_id: str, ref: str, replicas: int, idem: IdempotencyRecorder | None = None
    ) -> Cluster:
        core, ledger = self.core, self.ledger
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            now = act.now
            act.refuse_if(c.status in ENDING, f"cannot scale a {c.status} cluster")
            old = c.replicas
            if replicas == old:
                return await act.unchanged(c)
            running = c.status in ACCRUING
            extra_hold = 0
            if running:
                per_replica = billing.per_replica_rate(c.rate_per_gpu_hour, c.gpu_count)
                extra_hold = billing.scale_up_hold(per_replica, old, replicas, c.expires_at - now)

                def checks() -> None:
                    if replicas > old:
                        ledger.check_budget(account_id, c.region, c.gpu_count * replicas, c.id)
                    ledger.check_balance(account_id, extra_hold)

                await act.read(checks)
                await act.apply(
                    core.spec(dataclasses.replace(c, replicas=replicas), run=True),
                    restore=core.spec(c, run=True),
                )
            states = core.runtime.replicas(c.id)

            def body() -> Cluster:
                c = act.fresh()
                if running and not c.suspended:
                    ledger.stop_accruing(c, now, now)
                    ledger.start_accruing(c, now, replicas)
                c.replicas = replicas
                ledger.hold(c, extra_hold, f"scale {old} -> {replicas} replicas", now)
                if running:
                    follow(c, states, now)
                act.save(c)
                act.event(
                    c,
                    "scaled",
                    f"scaled from {old} to {replicas} replicas"
                    + (f"; hold ${format_usd(extra_hold)}" if extra_hold else ""),
                )
                return c

            return await act.commit(body, money=True, follow=True)

    async def extend(
        self, account_id: str, ref: str, micro_hours: int, idem: IdempotencyRecorder | None = None
    ) -> Cluster:
        ledger = self.ledger
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            now = act.now
            if c.duration_mh + micro_hours > billing.MAX_DURATION_MICRO_HOURS:
                left = billing.MAX_DURATION_MICRO_HOURS - c.duration_mh
                raise InvalidField(
                    f"a cluster runs at most 720 h in total; at most {format_hours(left)} h more",
                    field="hours",
                )
            act.refuse_if(c.status in ENDING, f"cannot extend a {c.status} cluster")
            running = c.status in ACCRUING
            hold = billing.hold_for_hours(hourly(c), micro_hours) if running else 0
            await act.read(lambda: ledger.check_balance(account_id, hold))
            hours = format_hours(micro_hours)

            def body() -> Cluster:
                c = act.fresh()
                if running and not c.suspended:
                    ledger.settle(c, now, now)
                ledger.hold(c, hold, f"extend by {hours} h", now)
                c.expires_at += billing.micro_hours_to_us(micro_hours)
                c.duration_mh += micro_hours
                update_warnings(c, now)
                act.save(c)
                act.event(
                    c,
                    "extended",
                    f"extended by {hours} h" + (f"; hold ${format_usd(hold)}" if hold else ""),
                )
                return c

            c = await act.commit(body, money=True)
        self.core.wake.set()
        try:  # replicas learn the new expiry; the extend stands either way
            await self.core.runtime.expiry_changed(c.id, rfc3339(c.expires_at))
        except Exception:
            log.warning("could not tell the replicas of %s the new expiry", c.id, exc_info=True)
        return c

    async def stop(
        self, account_id: str, ref: str, idem: IdempotencyRecorder | None = None
    ) -> Cluster:
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            now = act.now
            if c.status in (S.STOPPING, S.STOPPED):
                return await act.unchanged(c)
            act.refuse_if(c.status in ENDING, f"cannot stop a {c.status} cluster")
            await act.apply(self.core.spec(c, run=False), restore=self.core.spec(c, run=True))
            states = self.core.runtime.replicas(c.id)

            def body() -> Cluster:
                c = act.fresh()
                self.ledger.stop_accruing(c, now, now)
                self.ledger.release(c, "stop: release the unused hold", now)
                move(c, S.STOPPING)
                c.suspended = False
                follow(c, states, now)
                act.save(c)
                act.event(c, "stopped", "stopped")
                return c

            return await act.commit(body, money=True, follow=True)

    async def resume(
        self, account_id: str, ref: str, idem: IdempotencyRecorder | None = None
    ) -> Cluster:
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            now = act.now
            if c.status in ACCRUING:
                return await act.unchanged(c)
            act.refuse_if(
                c.status not in (S.STOPPED, S.STOPPING), f"cannot resume a {c.status} cluster"
            )
            hold = billing.hold_for_duration(hourly(c), c.expires_at - now)

            def checks() -> None:
                self.ledger.check_budget(account_id, c.region, c.gpu_count * c.replicas, c.id)
                self.ledger.check_balance(account_id, hold)

            await act.read(checks)
            await act.apply(self.core.spec(c, run=True), restore=self.core.spec(c, run=False))
            states = self.core.runtime.replicas(c.id)

            def body() -> Cluster:
                c = act.fresh()
                self.ledger.hold(c, hold, "resume: hold for the time to expiry", now)
                self.ledger.start_accruing(c, now)
                c.last_charge_at = max(c.last_charge_at, now)
                move(c, S.PENDING)
                c.started_at = None
                follow(c, states, now)
                act.save(c)
                act.event(c, "resumed", f"resumed; hold ${format_usd(hold)}")
                return c

            return await act.commit(body, money=True, follow=True, track=True)

    async def terminate(
        self, account_id: str, ref: str, idem: IdempotencyRecorder | None = None
    ) -> Cluster:
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            now = act.now
            if c.status == S.TERMINATED:
                return await act.unchanged(c)
            # What runs now, to start again if the store cannot record the termination:
            # a cluster the store still calls running must have its replicas.
            before = self.core.spec_for(c) if c.status in ACCRUING else None
            await act.terminate(restore=before)

            def body() -> Cluster:
                c = act.fresh()
                self.ledger.stop_accruing(c, now, now)
                self.ledger.release(c, "terminate: release the unused hold", now)
                move(c, S.TERMINATED)
                if c.status_reason is None:
                    c.status_reason = "user"
                c.terminated_at = now
                c.suspended = False
                act.save(c)
                act.event(c, "terminated", "terminated by the user")
                return c

            return await act.commit(
                body,
                money=True,
                track=False,
                undone=(
                    "the cluster was not terminated: it runs on, its replicas started again "
                    "(with new working directories), and no money moved"
                    if before is not None
                    else "nothing was changed"
                ),
            )

    async def restart(
        self, account_id: str, ref: str, idem: IdempotencyRecorder | None = None
    ) -> Cluster:
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            act.refuse_if(c.status not in ACCRUING, f"cannot restart a {c.status} cluster")
            # The rolling restart may take a while: it changes no money, so it runs
            # without holding the account's lock.
            async with act.unlocked():
                await self.core.runtime.restart(c.id)

            def body() -> Cluster:
                c = act.fresh()
                act.event(c, "restarted", "rolling restart of every replica")
                return c

            return await act.commit(body)

    async def restart_replica(
        self, account_id: str, ref: str, replica: str, idem: IdempotencyRecorder | None = None
    ) -> ReplicaState:
        runtime = self.core.runtime
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            if not any(s.name == replica for s in runtime.replicas(c.id)):
                raise NotFound(f"no replica {replica!r} in cluster {c.name}", field="replica")
            act.refuse_if(
                c.status not in ACCRUING, f"cannot restart a replica of a {c.status} cluster"
            )
            async with act.unlocked():
                try:
                    await runtime.restart(c.id, replica)
                except ReplicaNotFound as exc:
                    raise NotFound(
                        f"no replica {replica!r} in cluster {c.name}", field="replica"
                    ) from exc
                state = next((s for s in runtime.replicas(c.id) if s.name == replica), None)
                if state is None:
                    state = ReplicaState(name=replica, index=0, phase="Pending", ready=False)
            act.changed = c

            def body() -> ReplicaState:
                act.event(c, "restarted", f"replica {replica} restarted", replica)
                return state

            return await act.commit(body)

    async def set_port(
        self, account_id: str, ref: str, port: int | None, idem: IdempotencyRecorder | None
    ) -> Cluster:
        """Open, move or close the public URL (`port` None closes it)."""
        core = self.core
        async with self._action(account_id, idem, ref) as act:
            c = act.cluster
            act.refuse_if(
                port is not None and c.status in (S.TERMINATED, S.TERMINATING),
                f"cannot open the public URL of a {c.status} cluster",
            )
            old = c.endpoint_port
            if old == port:
                return await act.unchanged(c)
            if c.status in ACCRUING:
                await act.apply(
                    core.spec(dataclasses.replace(c, endpoint_port=port), run=True),
                    restore=core.spec(c, run=True),
                )

            def body() -> Cluster:
                c = act.fresh()
                c.endpoint_port = port
                act.save(c)
                if port is None:
                    msg = "public URL closed"
                elif old is None:
                    msg = f"public URL opened on port {port}"
                else:
                    msg = f"public URL now forwards to port {port} (was {old})"
                act.event(c, "endpoint_changed", msg)
                return c

            return await act.commit(body)


def _new_cluster(account_id: str, req: LaunchRequest, rate_per_gpu_hour: int, now: int) -> Cluster:
    return Cluster(
        id=new_id("gc"),
        account_id=account_id,
        name=req.name,
        region=req.region,
        gpu_type=req.gpu_type,
        gpu_count=req.gpu_count,
        replicas=req.replicas,
        image=req.image,
        startup_command=req.startup_command,
        shared_filesystems=req.shared_filesystems,
        rate_per_gpu_hour=rate_per_gpu_hour,
        status=S.PENDING,
        status_reason=None,
        created_at=now,
        started_at=None,
        expires_at=now + billing.micro_hours_to_us(req.duration_mh),
        duration_mh=req.duration_mh,
        endpoint_port=req.expose_port,
        suspended=False,
        terminated_at=None,
        warned=0,
        hold_total=0,
        released_total=0,
        spent_total=0,
        last_charge_at=now,
        version=0,
        termination_grace_seconds=req.termination_grace_seconds,
    )
