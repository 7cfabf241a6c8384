"""Leadership by a Kubernetes Lease (coordination.k8s.io/v1) in the runtime's
namespace, spoken through the runtime's own client (`KubeApi`).

The holder renews the Lease every `renew_s`; a candidate reads it every `retry_s`
and takes it over only when it has seen the same record (holder, renew time,
resource version) unchanged for the Lease's duration by its own clock, so clocks of
different machines never have to agree; a Lease without a holder (handed over by
`stop`) is taken at once. Every write carries the resourceVersion that was read: of
two candidates that write at once the API server accepts one and answers the other
409, so there is never more than one holder.

A leader that cannot renew for `renew_deadline_s` (shorter than the duration, so it
has stepped down before anyone may take over) steps down, as does one that finds
another holder. Needs get, create and update on leases in the namespace (see
`ecolink.runtime.kubernetes.rbac`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from ecolink.leadership.base import Leadership
from ecolink.runtime.base import RuntimeUnavailable
from ecolink.runtime.kubernetes.client import KubeApi, Obj

LEASE_NAME = "ecolink-leader"
LEASE_DURATION_S = 10
RENEW_S = 2.0
RETRY_S = 1.0
RENEW_DEADLINE_S = 7.0


def micro_time(at: datetime) -> str:
    """A Kubernetes MicroTime."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLeadership(Leadership):
    kind: ClassVar[str] = "lease"

    def __init__(
        self,
        api: KubeApi,
        name: str = LEASE_NAME,
        *,
        identity: str | None = None,
        duration_s: int = LEASE_DURATION_S,
        renew_s: float = RENEW_S,
        retry_s: float = RETRY_S,
        renew_deadline_s: float = RENEW_DEADLINE_S,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(identity)
        if not 0 < renew_s < renew_deadline_s < duration_s:
            raise ValueError("need 0 < renew_s < renew_deadline_s < duration_s")
        self.api = api
        self.leases = k8s_client.CoordinationV1Api(api.target.api_client)
        self.name = name
        self.namespace = api.ns
        self.duration_s = duration_s
        self.renew_s = renew_s
        self.retry_s = retry_s
        self.renew_deadline_s = renew_deadline_s
        self._monotonic = monotonic
        self._wall = wall
        # The record last read and when it was first seen so (monotonic seconds).
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        # When the last renewal that succeeded was sent (monotonic seconds).
        self._renewed_at = 0.0
        # The Lease as last read or written, for the next write's resourceVersion.
        self._lease: Obj | None = None

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def confirm(self) -> bool:
        if self._leading and self._monotonic() - self._renewed_at >= self.renew_deadline_s:
            self._set(False, f"the Lease was not renewed for {self.renew_deadline_s:g} s")
        return self._leading

    def _pause(self) -> float:
        return self.renew_s if self._leading else self.retry_s

    async def _round(self) -> None:
        sent = self._monotonic()
        try:
            await self._try(sent)
        except RuntimeUnavailable:
            await self.confirm()
            raise
        except ApiException as exc:
            await self.confirm()
            raise RuntimeUnavailable(
                f"the API server refused the Lease: {exc.status} {exc.reason}"
            ) from exc
        await self.confirm()

    async def _try(self, sent: float) -> None:
        try:
            lease = await self.api.call(
                self.leases.read_namespaced_lease, self.name, self.namespace
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self._create(sent)
            return
        self._lease = lease
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._observed:
            # Seen now, after the read: never earlier than the write that made it, so
            # its holder (which steps down `renew_deadline_s` after sending it) is
            # gone before this candidate may take over.
            self._observed, self._observed_at = record, self._monotonic()
        if holder == self.identity:
            if await self._write(lease, sent, renew=True):
                self._renewed_at = sent
                # Leading again if this instance had stepped down but still holds it.
                self._set(True, "renewed the Lease it holds")
            return
        if self._leading:
            self._set(False, f"the Lease is held by {holder or 'nobody'}")
        duration = spec.get("leaseDurationSeconds") or self.duration_s
        if holder is not None and self._monotonic() - self._observed_at < duration:
            return  # held, and renewed within its duration as far as this clock saw
        if await self._write(lease, sent, renew=False):
            self._renewed_at = sent
            self._set(True, f"took over the Lease from {holder or 'nobody'}")

    async def _create(self, sent: float) -> None:
        now = micro_time(self._wall())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration_s,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            self._lease = await self.api.call(
                self.leases.create_namespaced_lease, self.namespace, body
            )
        except ApiException as exc:
            if exc.status == 409:
                return  # another candidate created it first: read it next round
            raise
        self._renewed_at = sent
        self._set(True, "created the Lease")

    async def _write(self, lease: Obj, sent: float, *, renew: bool) -> bool:
        """Renew the Lease this instance holds, or take it over: a replace with the
        resourceVersion read, so a concurrent writer makes it fail with 409 (False)."""
        spec = dict(lease.get("spec") or {})
        now = micro_time(self._wall())
        if not renew:
            spec["holderIdentity"] = self.identity
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["leaseDurationSeconds"] = self.duration_s
        spec["renewTime"] = now
        try:
            self._lease = await self._replace(lease, spec)
        except ApiException as exc:
            if exc.status == 409:
                return False  # someone else wrote it first
            raise
        return True

    async def _replace(self, lease: Obj, spec: dict[str, Any]) -> Obj:
        """Write `spec` over the Lease as it was read (its resourceVersion: a concurrent
        writer makes this fail with 409)."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease["metadata"]["resourceVersion"],
            },
            "spec": spec,
        }
        result: Obj = await self.api.call(
            self.leases.replace_namespaced_lease, self.name, self.namespace, body
        )
        return result

    async def _release(self, was_leading: bool) -> None:
        """Hand the Lease over: no holder, so the next candidate takes it at once."""
        lease = self._lease
        if not was_leading or lease is None:
            return
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return
        spec.pop("holderIdentity", None)
        spec["renewTime"] = micro_time(self._wall())
        try:
            await self._replace(lease, spec)
        except ApiException as exc:
            if exc.status != 409:
                raise
