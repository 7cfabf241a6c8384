"""The informer: what the API server says runs, kept from watches (as client-go's
shared informers do).

Three list-then-watch loops (`watch.WatchLoop`): the managed Deployments and Pods
(needed for availability) and the PersistentVolumeClaims offered as shared
filesystems (optional: RBAC may forbid them). The caches are changed on the event
loop only, so they need no locks. A burst of pod events is coalesced into one
`replicas_changed` per cluster; pod transitions become runtime events (replica
ready, pending, crashed, failed). What the owner must act on (a Deployment that
drifted or went away, a pod seen or leaving, availability) goes to its
`InformerHooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from ecolink.runtime.base import ReplicaNotFound, ReplicaState, RuntimeListener
from ecolink.runtime.kubernetes import objects as ko
from ecolink.runtime.kubernetes.client import KubeApi, Obj
from ecolink.runtime.kubernetes.watch import WatchLoop

# Pod events within this many seconds make one report per cluster.
COALESCE_S = 0.02


class InformerHooks(Protocol):
    """What the informer's owner does about what it sees. Called on the event loop."""

    def deployments_listed(self, first: bool) -> None:
        """A full list of the Deployments arrived (`first`: the first since start)."""

    def deployment_changed(self, cluster_id: str) -> None:
        """A Deployment was added or modified (check it for drift)."""

    def deployment_gone(self, cluster_id: str) -> None:
        """A Deployment was deleted."""

    def pod_seen(self, cluster_id: str, pod: Obj) -> None:
        """A pod was listed, added or modified."""

    def pod_leaving(self, pod: str) -> None:
        """A pod is being deleted or is gone: drop what is kept for it."""

    def availability_changed(self, available: bool) -> None:
        """The API server became reachable, or stopped being so."""


def _rv(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class Informer:
    """The caches of Deployments, Pods and filesystem claims; the replica indices;
    availability; and the waiters woken on each change of a cluster."""

    def __init__(self, api: KubeApi, hooks: InformerHooks, watch_timeout_s: int) -> None:
        self._api = api
        self._hooks = hooks
        self.watch_timeout_s = watch_timeout_s
        self.listener: RuntimeListener | None = None
        self.deployments: dict[str, Obj] = {}
        self.pods: dict[str, dict[str, Obj]] = {}
        self.pvcs: dict[str, Obj] = {}
        self._indices: dict[str, dict[str, int]] = {}
        self._published: dict[str, list[ReplicaState]] = {}
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._health: dict[str, bool] = {}
        self._synced: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.watchers: list[WatchLoop] = []
        self.available = False
        self.last_error: str | None = None

    # ------------------------------------------------------------ start / stop

    async def start(self, listener: RuntimeListener) -> None:
        self.listener = listener
        self._loop = loop = asyncio.get_running_loop()
        api, ns = self._api, self._api.ns
        self._synced = {"deployments": asyncio.Event(), "pods": asyncio.Event()}
        self.watchers = [
            WatchLoop(
                "deployments",
                api.apps.list_namespaced_deployment,
                (ns,),
                ko.MANAGED_SELECTOR,
                loop,
                self._on_deployments_synced,
                self._on_deployment_event,
                lambda ok, err: self._on_health("deployments", ok, err),
                timeout_seconds=self.watch_timeout_s,
            ),
            WatchLoop(
                "pods",
                api.core.list_namespaced_pod,
                (ns,),
                ko.MANAGED_SELECTOR,
                loop,
                self._on_pods_synced,
                self._on_pod_event,
                lambda ok, err: self._on_health("pods", ok, err),
                timeout_seconds=self.watch_timeout_s,
            ),
            # Shared filesystems: not needed for availability (RBAC may forbid).
            WatchLoop(
                "filesystems",
                api.core.list_namespaced_persistent_volume_claim,
                (ns,),
                ko.FILESYSTEM_SELECTOR,
                loop,
                self._on_pvcs_synced,
                self._on_pvc_event,
                lambda ok, err: None,
                timeout_seconds=self.watch_timeout_s,
            ),
        ]
        for w in self.watchers:
            w.start()
        # Give the first lists a moment so replicas() is right at once; an
        # unreachable API server is not fatal: the loops keep trying.
        # Each loop reports health once it has listed (after the sync) or failed.
        deadline = time.monotonic() + 10
        while len(self._health) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        for w in self.watchers:
            w.stop()

    async def join(self) -> None:
        watchers, self.watchers = self.watchers, []

        def join_all() -> None:
            for w in watchers:
                w.join(2)

        await asyncio.to_thread(join_all)

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            w.kind: {"lists": w.lists, "watches": w.watches, "gone": w.relists_after_gone}
            for w in self.watchers
        }

    # ------------------------------------------------------------ availability

    def _on_health(self, kind: str, ok: bool, error: str | None) -> None:
        self._health[kind] = ok
        if error:
            self.last_error = error
        now = bool(self._health) and all(self._health.get(k) for k in ("deployments", "pods"))
        if now != self.available:
            self.available = now
            self._hooks.availability_changed(now)

    def mark_unreachable(self, error: str) -> None:
        """A call could not reach the API server (the watches will say when it is back)."""
        self.last_error = error
        if self.available:
            self.available = False
            self._hooks.availability_changed(False)

    # ------------------------------------------------------------ deployments

    def _on_deployments_synced(self, items: list[Obj]) -> None:
        live: dict[str, Obj] = {}
        for dep in items:
            cid = ko.cluster_id_of(dep)
            if cid is not None:
                live[cid] = dep
        gone = set(self.deployments) - set(live)
        self.deployments = live
        first = not self._synced["deployments"].is_set()
        self._synced["deployments"].set()
        for cid in gone:
            self._hooks.deployment_gone(cid)
        self._hooks.deployments_listed(first)

    def _on_deployment_event(self, kind: str, dep: Obj) -> None:
        cid = ko.cluster_id_of(dep)
        if cid is None:
            return
        if kind == "DELETED":
            self.deployments.pop(cid, None)
            self._hooks.deployment_gone(cid)
            self.wake(cid)
            return
        self.deployments[cid] = dep
        self._hooks.deployment_changed(cid)

    def wrote(self, cid: str, obj: Obj) -> None:
        """A Deployment this process wrote: newer than the cache until the watch says."""
        if ko.cluster_id_of(obj) == cid:
            current = self.deployments.get(cid)
            if current is None or _rv(current) < _rv(obj):
                self.deployments[cid] = obj

    # ------------------------------------------------------------ filesystems

    def _on_pvcs_synced(self, items: list[Obj]) -> None:
        self.pvcs = {p["metadata"]["name"]: p for p in items}

    def _on_pvc_event(self, kind: str, pvc: Obj) -> None:
        if kind == "DELETED":
            self.pvcs.pop(pvc["metadata"]["name"], None)
        else:
            self.pvcs[pvc["metadata"]["name"]] = pvc

    def filesystems(self) -> list[dict[str, str]]:
        return [ko.filesystem_entry(p) for _, p in sorted(self.pvcs.items()) if not _deleting(p)]

    # ------------------------------------------------------------------ pods

    def _on_pods_synced(self, items: list[Obj]) -> None:
        fresh: dict[str, dict[str, Obj]] = {}
        for pod in items:
            cid = ko.cluster_id_of(pod)
            if cid is not None:
                fresh.setdefault(cid, {})[pod["metadata"]["name"]] = pod
        for cid in set(self.pods) | set(fresh):
            old = self.pods.get(cid, {})
            new = fresh.get(cid, {})
            for name in set(old) - set(new):
                self._pod_removed(cid, name)
            for name, pod in new.items():
                self._pod_seen(cid, old.get(name), pod)
            self.pods[cid] = new
            self._mark_dirty(cid)
        self._synced["pods"].set()

    def _on_pod_event(self, kind: str, pod: Obj) -> None:
        cid = ko.cluster_id_of(pod)
        if cid is None:
            return
        name = pod["metadata"]["name"]
        pods = self.pods.setdefault(cid, {})
        if kind == "DELETED":
            pods.pop(name, None)
            self._pod_removed(cid, name)
        else:
            old = pods.get(name)
            pods[name] = pod
            self._pod_seen(cid, old, pod)
        self._mark_dirty(cid)

    def _pod_seen(self, cid: str, old: Obj | None, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        self._hooks.pod_seen(cid, pod)
        idx = self._indices.setdefault(cid, {})
        if _deleting(pod):
            # A pod on its way out gives its index to its replacement.
            idx.pop(name, None)
            self._hooks.pod_leaving(name)
            return
        if name not in idx:
            used = set(idx.values())
            idx[name] = next(i for i in range(len(used) + 1) if i not in used)
        if self.listener is not None:
            self._report(cid, name, old, pod, idx[name])

    def _report(self, cid: str, name: str, old: Obj | None, pod: Obj, index: int) -> None:
        assert self.listener is not None
        event = self.listener.runtime_event
        state = ko.replica_state(pod, index)
        before = ko.replica_state(old, index) if old is not None else None
        if state.ready and not (before and before.ready):
            where = f" on {state.node}" if state.node else ""
            event(cid, "replica_ready", f"{name} is ready{where}", name)
        if (
            state.phase == "Pending"
            and state.reason
            and (before is None or before.reason != state.reason)
            and not state.node
        ):
            event(cid, "replica_pending", f"{name}: {state.reason}", name)
        if before is not None and state.restarts > before.restarts:
            event(
                cid,
                "replica_crashed",
                f"{name} restarted ({state.restarts} restarts)"
                + (f": {state.reason}" if state.reason else ""),
                name,
            )
        if state.phase == "Failed" and (before is None or before.phase != "Failed"):
            event(cid, "replica_failed", f"{name} failed: {state.reason or 'Failed'}", name)

    def _pod_removed(self, cid: str, name: str) -> None:
        self._indices.get(cid, {}).pop(name, None)
        self._hooks.pod_leaving(name)
        self.wake(cid)

    def _mark_dirty(self, cid: str) -> None:
        self._dirty.add(cid)
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(COALESCE_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for cid in dirty:
            states = self.replicas(cid)
            if states != self._published.get(cid):
                self._published[cid] = states
                if self.listener is not None:
                    self.listener.replicas_changed(cid, states)
            self.wake(cid)

    # ------------------------------------------------------------------ reads

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        pods = self.pods.get(cluster_id, {})
        idx = self._indices.get(cluster_id, {})
        states = [
            ko.replica_state(pod, idx[name])
            for name, pod in pods.items()
            if name in idx and not _deleting(pod)
        ]
        states.sort(key=lambda s: s.index)
        return states

    def pod(self, cluster_id: str, replica: str) -> Obj:
        pod = self.pods.get(cluster_id, {}).get(replica)
        if pod is None:
            raise ReplicaNotFound(f"no replica {replica} in cluster {cluster_id}")
        return pod

    # --------------------------------------------------------------- waiting

    def wake(self, cid: str) -> None:
        for fut in self._waiters.pop(cid, []):
            if not fut.done():
                fut.set_result(None)

    async def changed_for(self, cid: str, timeout: float) -> None:
        """Wait until the cluster's objects change, at most `timeout` seconds."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(cid, []).append(fut)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fut, timeout)
