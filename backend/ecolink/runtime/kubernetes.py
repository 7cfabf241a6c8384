"""The kubernetes runtime: clusters as Deployments on a real API server.

One Deployment and one (headless) Service per cluster, labelled with the
cluster and account ids; the Service is owned by the Deployment so deleting
the Deployment removes both. Status comes from watches (Deployments and Pods
by label, see `kube_watch`), never from polling. Exec and port-forward are
WebSockets straight to the API server (`kube_stream`); logs come from the pod
log API; GPU telemetry from the DCGM exporter where one runs, else from
nvidia-smi executed in each replica (`kube_telemetry`).

All blocking client calls run in threads; every state change is handled on
the event loop, so the caches need no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import urllib3
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from ecocore.clock import Clock, SystemClock
from ecolink.runtime import kube_objects as ko
from ecolink.runtime.base import (
    STDERR,
    STDOUT,
    ClusterSpec,
    ExecRequest,
    ExecStream,
    HostPort,
    ReplicaNotFound,
    ReplicaState,
    ReplicaTelemetry,
    Runtime,
    RuntimeError_,
    RuntimeInfo,
    RuntimeListener,
    RuntimeUnavailable,
)
from ecolink.runtime.gpu_parsers import (
    NVIDIA_SMI_XML_COMMAND,
    NvidiaSmiXmlError,
    parse_nvidia_smi_xml,
    with_process_owner,
)
from ecolink.runtime.kube_client import KubeTarget, load_target
from ecolink.runtime.kube_stream import (
    EXEC_PROTOCOLS,
    KubeExecStream,
    PortForwardListener,
)
from ecolink.runtime.kube_telemetry import (
    DCGM_PORT,
    DCGM_SELECTORS,
    parse_dcgm,
)
from ecolink.runtime.kube_watch import Obj, WatchLoop

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5, 30)
MERGE_PATCH = "application/merge-patch+json"


def _rv(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _unavailable(e: BaseException) -> bool:
    if isinstance(e, ApiException):
        return e.status in (0, None) or e.status >= 500 or e.status == 429
    return isinstance(e, urllib3.exceptions.HTTPError | OSError | TimeoutError)



class PodDialer:
    """Whether pod addresses can be dialled from here, found by trying: a connection
    that opens within `timeout` says yes (remembered for `ttl_ok`), one that does not
    says no (remembered for `ttl_no`, then tried again). Tried only inside a cluster
    (`KUBERNETES_SERVICE_HOST` set) unless `ECOLINK_POD_IP=always`; `never` turns it
    off."""

    def __init__(self, timeout: float = 0.5, ttl_ok: float = 30.0, ttl_no: float = 30.0,
                 enabled: bool | None = None) -> None:
        self.timeout = timeout
        self.ttl_ok = ttl_ok
        self.ttl_no = ttl_no
        mode = os.environ.get("ECOLINK_POD_IP", "auto")
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        self.enabled = enabled if enabled is not None else (
            mode == "always" or (mode == "auto" and in_cluster))
        self._seen: dict[tuple[str, int], tuple[bool, float]] = {}

    async def reachable(self, ip: str, port: int) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        hit = self._seen.get((ip, port))
        if hit is not None and now < hit[1]:
            return hit[0]
        ok = False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), self.timeout)
            writer.close()
            ok = True
        except (OSError, TimeoutError, ValueError):
            ok = False
        self._seen[(ip, port)] = (ok, now + (self.ttl_ok if ok else self.ttl_no))
        return ok

class KubernetesRuntime(Runtime):
    """Runs clusters as Deployments in one namespace of one API server."""

    def __init__(
        self,
        target: KubeTarget,
        clock: Clock | None = None,
        *,
        watch_timeout_seconds: int = 240,
        telemetry_min_interval: float = 10.0,
        terminate_timeout: float = 120.0,
        termination_grace_s: float | None = None,
    ) -> None:
        self._t = target
        # Pods' terminationGracePeriodSeconds (None: the cluster's default, 30 s).
        self.termination_grace_s = termination_grace_s
        self._ns = target.namespace
        self._clock = clock or SystemClock()
        self._apps = k8s_client.AppsV1Api(target.api_client)
        self._core = k8s_client.CoreV1Api(target.api_client)
        self._watch_timeout = watch_timeout_seconds
        self._telemetry_interval = telemetry_min_interval
        self._terminate_timeout = terminate_timeout
        self.info = RuntimeInfo(
            name="kubernetes",
            telemetry="nvidia-smi",
            details={"namespace": self._ns, "server": target.server, "source": target.source,
                     **({"context": target.context} if target.context else {})},
        )
        # Exec subprotocols offered, best first (tests narrow this to v4).
        self.exec_protocols: tuple[str, ...] = EXEC_PROTOCOLS
        self._listener: RuntimeListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._specs: dict[str, ClusterSpec] = {}
        self._deployments: dict[str, Obj] = {}
        self._pods: dict[str, dict[str, Obj]] = {}
        self._indices: dict[str, dict[str, int]] = {}
        self._published: dict[str, list[ReplicaState]] = {}
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._written_rv: dict[str, int] = {}
        self._busy: dict[str, int] = {}
        self._terminating: set[str] = set()
        self._restoring: set[str] = set()
        self._health: dict[str, bool] = {}
        self._pvcs: dict[str, Obj] = {}
        self._available = False
        self._synced: dict[str, asyncio.Event] = {}
        self._watchers: list[WatchLoop] = []
        self._forwards: dict[tuple[str, int], PortForwardListener] = {}
        # cluster id -> the expiry its pods should carry (after an extend)
        self._expiry: dict[str, str] = {}
        self._expiry_tasks: set[asyncio.Task[None]] = set()
        self._dialer = PodDialer()
        self._paths: dict[tuple[str, str], str] = {}
        self._telemetry_cache: dict[str, tuple[float, ReplicaTelemetry]] = {}
        self._exec_limit = asyncio.Semaphore(4)
        self._dcgm_cache: tuple[float, dict[tuple[str, str], Any] | None] = (0.0, None)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Waiters on a cluster's state (terminate), woken on every change.
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._started = False
        self.last_error: str | None = None

    # ------------------------------------------------------------------ helpers

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Obj:
        """Run one client call in a thread; answer the JSON as a dict."""

        def call() -> Obj:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kw)
            try:
                raw = resp.data
            finally:
                resp.release_conn()
            return json.loads(raw) if raw else {}

        try:
            return await asyncio.to_thread(call)
        except Exception as e:
            if _unavailable(e):
                self._mark_unreachable(str(e))
                raise RuntimeUnavailable(f"the Kubernetes API server cannot be reached: {e}") from e
            raise

    def _mark_unreachable(self, error: str) -> None:
        self.last_error = error
        if self._available:
            self._available = False
            self._notify_availability()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_task_error)

    @staticmethod
    def _log_task_error(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, RuntimeUnavailable):
                log.warning("kubernetes runtime task failed: %r", exc)

    def available(self) -> bool:
        return self._available

    # ------------------------------------------------------------ start / stop

    async def start(self, listener: RuntimeListener, known: Sequence[ClusterSpec]) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        for spec in known:
            self._specs[spec.cluster_id] = spec
        selector = ko.MANAGED_SELECTOR
        self._synced = {"deployments": asyncio.Event(), "pods": asyncio.Event()}
        self._watchers = [
            WatchLoop(
                "deployments", self._apps.list_namespaced_deployment, (self._ns,), selector,
                self._loop, self._on_deployments_synced, self._on_deployment_event,
                lambda ok, err: self._on_health("deployments", ok, err),
                timeout_seconds=self._watch_timeout,
            ),
            WatchLoop(
                "pods", self._core.list_namespaced_pod, (self._ns,), selector,
                self._loop, self._on_pods_synced, self._on_pod_event,
                lambda ok, err: self._on_health("pods", ok, err),
                timeout_seconds=self._watch_timeout,
            ),
            # Shared filesystems: not needed for availability (RBAC may forbid).
            WatchLoop(
                "filesystems", self._core.list_namespaced_persistent_volume_claim, (self._ns,),
                ko.FILESYSTEM_SELECTOR, self._loop, self._on_pvcs_synced, self._on_pvc_event,
                lambda ok, err: None, timeout_seconds=self._watch_timeout,
            ),
        ]
        for w in self._watchers:
            w.start()
        self._started = True
        # Give the first lists a moment so replicas() is right at once; an
        # unreachable API server is not fatal: the loops keep trying.
        # Each loop reports health once it has listed (after the sync) or failed.
        deadline = time.monotonic() + 10
        while len(self._health) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def shutdown(self, stop_replicas: bool) -> None:
        # Replicas keep running on the cluster whatever stop_replicas says: the
        # Deployments outlive this backend and are adopted by the next one.
        for w in self._watchers:
            w.stop()
        for fwd in list(self._forwards.values()):
            await fwd.close()
        self._forwards.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(lambda: [w.join(2) for w in self._watchers])
        self._watchers = []
        self._started = False

    def watch_stats(self) -> dict[str, dict[str, int]]:
        """How often each watch listed and (re)connected (tests, benchmarks)."""
        return {
            w.kind: {"lists": w.lists, "watches": w.watches, "gone": w.relists_after_gone}
            for w in self._watchers
        }

    # -------------------------------------------------------------- watch input

    def _on_health(self, kind: str, ok: bool, error: str | None) -> None:
        self._health[kind] = ok
        if error:
            self.last_error = error
        now = bool(self._health) and all(self._health.get(k) for k in ("deployments", "pods"))
        if now != self._available:
            self._available = now
            self._notify_availability()

    def _notify_availability(self) -> None:
        if self._listener is None:
            return
        hook = getattr(self._listener, "runtime_available_changed", None)
        if callable(hook):
            hook(self._available)
        # Re-send every cluster's replicas so readers re-render `stale`.
        for cid in list(self._specs):
            self._listener.replicas_changed(cid, self.replicas(cid))

    def _on_deployments_synced(self, items: list[Obj]) -> None:
        live: dict[str, Obj] = {}
        for dep in items:
            cid = ko.cluster_id_of(dep)
            if cid is not None:
                live[cid] = dep
        gone = set(self._deployments) - set(live)
        self._deployments = live
        first = not self._synced["deployments"].is_set()
        self._synced["deployments"].set()
        for cid in gone:
            self._deployment_gone(cid)
        self._spawn(self._reconcile_all(remove_unknown=first))

    def _on_deployment_event(self, kind: str, dep: Obj) -> None:
        cid = ko.cluster_id_of(dep)
        if cid is None:
            return
        if kind == "DELETED":
            self._deployments.pop(cid, None)
            self._deployment_gone(cid)
            self._wake(cid)
            return
        self._deployments[cid] = dep
        self._check_drift(cid)

    def _deployment_gone(self, cid: str) -> None:
        spec = self._specs.get(cid)
        if spec is None or cid in self._terminating or cid in self._busy:
            return
        # Deleted by someone else while we still want it: bring it back.
        self._spawn(self._restore(cid, ["deleted"]))

    def _on_pvcs_synced(self, items: list[Obj]) -> None:
        self._pvcs = {p["metadata"]["name"]: p for p in items}

    def _on_pvc_event(self, kind: str, pvc: Obj) -> None:
        if kind == "DELETED":
            self._pvcs.pop(pvc["metadata"]["name"], None)
        else:
            self._pvcs[pvc["metadata"]["name"]] = pvc

    def filesystems(self) -> list[dict[str, str]]:
        """Shared filesystems: the namespace's PersistentVolumeClaims labelled
        `ecolink.filesystem=true` (from a watch; no IO here)."""
        return [
            ko.filesystem_entry(p)
            for name, p in sorted(self._pvcs.items())
            if not (p.get("metadata") or {}).get("deletionTimestamp")
        ]

    def _on_pods_synced(self, items: list[Obj]) -> None:
        fresh: dict[str, dict[str, Obj]] = {}
        for pod in items:
            cid = ko.cluster_id_of(pod)
            if cid is not None:
                fresh.setdefault(cid, {})[pod["metadata"]["name"]] = pod
        for cid in set(self._pods) | set(fresh):
            old = self._pods.get(cid, {})
            new = fresh.get(cid, {})
            for name in set(old) - set(new):
                self._pod_removed(cid, name)
            for name, pod in new.items():
                self._pod_seen(cid, old.get(name), pod)
            self._pods[cid] = new
            self._mark_dirty(cid)
        self._synced["pods"].set()

    def _on_pod_event(self, kind: str, pod: Obj) -> None:
        cid = ko.cluster_id_of(pod)
        if cid is None:
            return
        name = pod["metadata"]["name"]
        pods = self._pods.setdefault(cid, {})
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
        self._check_expiry(cid, pod)
        idx = self._indices.setdefault(cid, {})
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            # A pod on its way out gives its index to its replacement.
            idx.pop(name, None)
            self._drop_forwards(name)
            return
        if name not in idx:
            used = set(idx.values())
            idx[name] = next(i for i in range(len(used) + 1) if i not in used)
        if self._listener is None:
            return
        state = ko.replica_state(pod, idx[name])
        before = ko.replica_state(old, idx[name]) if old is not None else None
        if state.ready and not (before and before.ready):
            where = f" on {state.node}" if state.node else ""
            self._listener.runtime_event(cid, "replica_ready", f"{name} is ready{where}", name)
        if (
            state.phase == "Pending"
            and state.reason
            and (before is None or before.reason != state.reason)
            and not state.node
        ):
            self._listener.runtime_event(cid, "replica_pending", f"{name}: {state.reason}", name)
        if before is not None and state.restarts > before.restarts:
            self._listener.runtime_event(
                cid, "replica_crashed",
                f"{name} restarted ({state.restarts} restarts)"
                + (f": {state.reason}" if state.reason else ""),
                name,
            )
        if state.phase == "Failed" and (before is None or before.phase != "Failed"):
            self._listener.runtime_event(
                cid, "replica_failed", f"{name} failed: {state.reason or 'Failed'}", name
            )

    def _pod_removed(self, cid: str, name: str) -> None:
        self._indices.get(cid, {}).pop(name, None)
        self._telemetry_cache.pop(name, None)
        self._drop_forwards(name)
        self._wake(cid)

    def _drop_forwards(self, pod: str) -> None:
        for key in [k for k in self._forwards if k[0] == pod]:
            fwd = self._forwards.pop(key)
            self._spawn(fwd.close())

    def _mark_dirty(self, cid: str) -> None:
        self._dirty.add(cid)
        if self._flush_handle is None and self._loop is not None:
            # Coalesce a burst of pod events into one report per cluster.
            self._flush_handle = self._loop.call_later(0.02, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for cid in dirty:
            states = self.replicas(cid)
            if states != self._published.get(cid):
                self._published[cid] = states
                if self._listener is not None:
                    self._listener.replicas_changed(cid, states)
            self._wake(cid)

    def _wake(self, cid: str) -> None:
        waiters = self._waiters.pop(cid, [])
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _changed_for(self, cid: str, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(cid, []).append(fut)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fut, timeout)

    # ----------------------------------------------------------- drift & adopt

    def _check_drift(self, cid: str) -> None:
        spec = self._specs.get(cid)
        live = self._deployments.get(cid)
        if spec is None or live is None or cid in self._terminating or cid in self._busy:
            return
        if cid in self._restoring:
            return
        if (live.get("metadata") or {}).get("deletionTimestamp"):
            return
        if _rv(live) <= self._written_rv.get(cid, 0):
            return  # an older version than what we wrote last
        fields = self._drifted_fields(spec, live)
        if fields:
            self._spawn(self._restore(cid, fields, live))

    def _deployment(self, spec: ClusterSpec, restarted_at: str | None = None) -> Obj:
        return ko.deployment(spec, restarted_at, self.termination_grace_s)

    def _drifted_fields(self, spec: ClusterSpec, live: Obj) -> list[str]:
        desired = self._deployment(spec, ko.restarted_at(live))
        fields = ko.drift(desired, live)
        if int((live.get("spec") or {}).get("replicas") or 0) != spec.replicas:
            fields.append("replicas")
        return fields

    async def _restore(self, cid: str, fields: list[str], live: Obj | None = None) -> None:
        spec = self._specs.get(cid)
        if spec is None or cid in self._restoring:
            return
        self._restoring.add(cid)
        try:
            await self._apply(spec)
        except RuntimeUnavailable:
            return  # the reconcile after the outage tries again
        finally:
            self._restoring.discard(cid)
        if self._listener is None:
            return
        if fields == ["replicas"] and live is not None:
            had = (live.get("spec") or {}).get("replicas")
            self._listener.runtime_event(
                cid, "scaled",
                f"the Deployment was scaled to {had} outside ecolink; restored {spec.replicas}",
            )
        elif fields == ["deleted"]:
            self._listener.runtime_event(
                cid, "restarted", "the Deployment was deleted outside ecolink; recreated it"
            )
        else:
            self._listener.runtime_event(
                cid, "restarted",
                "the Deployment was changed outside ecolink ("
                + ", ".join(fields) + "); restored what was asked for",
            )

    async def _reconcile_all(self, remove_unknown: bool) -> None:
        """Adopt what runs, fix what drifted, create what is missing, and
        (on the first sync) remove what we own but nobody knows."""
        for cid, spec in list(self._specs.items()):
            if cid in self._busy or cid in self._terminating:
                continue
            live = self._deployments.get(cid)
            if live is None:
                await self._restore(cid, ["deleted"])
                continue
            fields = self._drifted_fields(spec, live)
            if fields:
                await self._restore(cid, fields, live)
            else:
                with contextlib.suppress(RuntimeUnavailable):
                    await self._ensure_service(spec, live)
        if remove_unknown:
            for cid in [c for c in self._deployments if c not in self._specs]:
                if cid in self._busy:
                    continue
                log.info("removing cluster %s: it runs, but the store does not know it", cid)
                with contextlib.suppress(RuntimeUnavailable, ApiException):
                    await self._delete(cid)

    # ---------------------------------------------------------------- changes

    async def apply(self, spec: ClusterSpec) -> None:
        cid = spec.cluster_id
        previous = self._specs.get(cid)
        self._specs[cid] = spec
        try:
            await self._apply(spec)
        except BaseException:
            # Nothing changed on the cluster's side as far as we know: keep
            # wanting what we wanted before.
            if previous is None:
                self._specs.pop(cid, None)
            else:
                self._specs[cid] = previous
            raise

    async def _apply(self, spec: ClusterSpec) -> None:
        cid = spec.cluster_id
        self._busy[cid] = self._busy.get(cid, 0) + 1
        try:
            for _attempt in range(5):
                try:
                    await self._apply_once(spec)
                    return
                except ApiException as e:
                    if e.status == 409:
                        continue  # someone wrote in between: read again
                    raise self._api_error(e) from e
            raise RuntimeError_(f"could not update the Deployment of {cid}: conflicts")
        finally:
            self._busy[cid] -= 1
            if not self._busy[cid]:
                del self._busy[cid]
            # Something may have changed while we were busy.
            self._check_drift(cid)

    @staticmethod
    def _api_error(e: ApiException) -> Exception:
        try:
            message = json.loads(e.body or "{}").get("message") or e.reason
        except (ValueError, AttributeError):
            message = e.reason
        return RuntimeError_(f"the API server refused: {e.status} {message}")

    async def _apply_once(self, spec: ClusterSpec) -> None:
        cid = spec.cluster_id
        name = ko.object_name(cid)
        try:
            live: Obj | None = await self._call(
                self._apps.read_namespaced_deployment, name, self._ns
            )
        except ApiException as e:
            if e.status != 404:
                raise
            live = None
        if live is None:
            body = self._deployment(spec)
            created = await self._call(
                self._apps.create_namespaced_deployment, self._ns,
                k8s_client.V1Deployment.from_dict(body),
            )
            self._note_written(cid, created)
            await self._ensure_service(spec, created)
            return
        fields = ko.drift(self._deployment(spec, ko.restarted_at(live)), live)
        if (live.get("metadata") or {}).get("deletionTimestamp"):
            raise RuntimeError_(f"the Deployment of {cid} is being deleted")
        if not fields:
            if int((live.get("spec") or {}).get("replicas") or 0) != spec.replicas:
                patched = await self._call(
                    self._apps.patch_namespaced_deployment, name, self._ns,
                    {"spec": {"replicas": spec.replicas}}, _content_type=MERGE_PATCH,
                )
                self._note_written(cid, patched)
            return
        # The template changed: replace our parts, keep everything else
        # (and the resourceVersion, so a concurrent edit makes this a 409).
        desired = self._deployment(spec, ko.restarted_at(live))
        body = dict(live)
        body.pop("status", None)
        meta = dict(live["metadata"])
        meta["labels"] = {**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
        meta["annotations"] = {
            **(meta.get("annotations") or {}), **desired["metadata"]["annotations"]
        }
        meta.pop("managedFields", None)
        body["metadata"] = meta
        body["spec"] = {**live["spec"], **desired["spec"]}
        replaced = await self._call(
            self._apps.replace_namespaced_deployment, name, self._ns,
            k8s_client.V1Deployment.from_dict(body),
        )
        self._note_written(cid, replaced)
        await self._ensure_service(spec, replaced)

    def _note_written(self, cid: str, obj: Obj) -> None:
        self._written_rv[cid] = max(self._written_rv.get(cid, 0), _rv(obj))
        if ko.cluster_id_of(obj) == cid:
            current = self._deployments.get(cid)
            if current is None or _rv(current) < _rv(obj):
                self._deployments[cid] = obj

    async def _ensure_service(self, spec: ClusterSpec, owner: Obj) -> None:
        name = ko.object_name(spec.cluster_id)
        desired = ko.service(spec, owner)
        # The garbage collector may be removing an old Service (of a Deployment
        # deleted by hand) while we look: read, then create or fix, again.
        for _attempt in range(5):
            try:
                live = await self._call(self._core.read_namespaced_service, name, self._ns)
            except ApiException as e:
                if e.status != 404:
                    raise
                try:
                    await self._call(
                        self._core.create_namespaced_service, self._ns,
                        k8s_client.V1Service.from_dict(desired),
                    )
                    return
                except ApiException as e2:
                    if e2.status == 409:
                        await asyncio.sleep(0.2)
                        continue
                    raise
            if (live.get("metadata") or {}).get("deletionTimestamp"):
                await asyncio.sleep(0.2)
                continue
            want = [(p["port"], p["targetPort"]) for p in desired["spec"]["ports"]]
            have = [(p.get("port"), p.get("targetPort")) for p in live["spec"].get("ports") or []]
            owners = [o.get("uid") for o in live["metadata"].get("ownerReferences") or []]
            if want == have and owner["metadata"]["uid"] in owners:
                return
            patch = {
                "metadata": {"ownerReferences": desired["metadata"]["ownerReferences"]},
                "spec": {"ports": desired["spec"]["ports"] or None},
            }
            try:
                await self._call(
                    self._core.patch_namespaced_service, name, self._ns, patch,
                    _content_type=MERGE_PATCH,
                )
                return
            except ApiException as e:
                if e.status != 404:
                    raise
        raise RuntimeError_(f"could not settle the Service of {spec.cluster_id}")

    async def terminate(self, cluster_id: str) -> None:
        self._terminating.add(cluster_id)
        spec = self._specs.pop(cluster_id, None)
        try:
            await self._delete(cluster_id)
        except BaseException:
            if spec is not None:
                self._specs[cluster_id] = spec
            self._terminating.discard(cluster_id)
            raise
        try:
            # Foreground deletion: the Deployment goes last, after its pods.
            deadline = time.monotonic() + self._terminate_timeout
            while time.monotonic() < deadline:
                if cluster_id not in self._deployments and not self._pods.get(cluster_id):
                    break
                await self._changed_for(cluster_id, 1.0)
        finally:
            self._terminating.discard(cluster_id)
            self._written_rv.pop(cluster_id, None)
            for pod in list(self._pods.get(cluster_id, {})):
                self._drop_forwards(pod)

    async def _delete(self, cid: str) -> None:
        name = ko.object_name(cid)
        body = k8s_client.V1DeleteOptions(propagation_policy="Foreground")
        for fn in (self._apps.delete_namespaced_deployment, self._core.delete_namespaced_service):
            try:
                await self._call(fn, name, self._ns, body=body)
            except ApiException as e:
                if e.status != 404:
                    raise self._api_error(e) from e

    async def restart(self, cluster_id: str, replica: str | None = None) -> None:
        if replica is not None:
            pod = self._pod(cluster_id, replica)
            try:
                await self._call(
                    self._core.delete_namespaced_pod, pod["metadata"]["name"], self._ns
                )
            except ApiException as e:
                if e.status == 404:
                    raise ReplicaNotFound(replica) from e
                raise self._api_error(e) from e
            return
        if cluster_id not in self._specs:
            raise ReplicaNotFound(f"no cluster {cluster_id}")
        stamp = self._clock.now().isoformat()
        patch = {"spec": {"template": {"metadata": {"annotations": {ko.RESTART_ANNOTATION: stamp}}}}}
        self._busy[cluster_id] = self._busy.get(cluster_id, 0) + 1
        try:
            patched = await self._call(
                self._apps.patch_namespaced_deployment, ko.object_name(cluster_id), self._ns,
                patch, _content_type=MERGE_PATCH,
            )
            self._note_written(cluster_id, patched)
        except ApiException as e:
            raise self._api_error(e) from e
        finally:
            self._busy[cluster_id] -= 1
            if not self._busy[cluster_id]:
                del self._busy[cluster_id]

    # ------------------------------------------------------------------ reads

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        pods = self._pods.get(cluster_id, {})
        idx = self._indices.get(cluster_id, {})
        states = [
            ko.replica_state(pod, idx[name])
            for name, pod in pods.items()
            if name in idx and not (pod.get("metadata") or {}).get("deletionTimestamp")
        ]
        states.sort(key=lambda s: s.index)
        return states

    def _pod(self, cluster_id: str, replica: str) -> Obj:
        pod = self._pods.get(cluster_id, {}).get(replica)
        if pod is None:
            raise ReplicaNotFound(f"no replica {replica} in cluster {cluster_id}")
        return pod

    async def exec(self, cluster_id: str, replica: str, request: ExecRequest) -> ExecStream:
        pod = self._pod(cluster_id, replica)
        return await KubeExecStream.open(
            self._t, self._ns, pod["metadata"]["name"], ko.CONTAINER, request,
            protocols=self.exec_protocols,
        )

    async def logs(
        self, cluster_id: str, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]:
        pod = self._pod(cluster_id, replica)
        name = pod["metadata"]["name"]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=8)
        holder: dict[str, Any] = {}
        stop = False

        def put(item: bytes | BaseException | None) -> bool:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            try:
                fut.result()
                return True
            except Exception:  # noqa: BLE001 - loop gone
                return False

        def reader() -> None:
            try:
                kw: dict[str, Any] = {"container": ko.CONTAINER, "follow": follow,
                                      "previous": previous}
                if tail is not None:
                    kw["tail_lines"] = tail
                resp = self._core.read_namespaced_pod_log(
                    name, self._ns, _preload_content=False,
                    _request_timeout=(5, 24 * 3600) if follow else REQUEST_TIMEOUT, **kw,
                )
                holder["resp"] = resp
                for chunk in resp.stream(4096, decode_content=True):
                    if stop or not put(chunk):
                        break
                resp.release_conn()
                put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                put(e)

        thread = asyncio.create_task(asyncio.to_thread(reader))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, ApiException) and item.status == 404:
                        raise ReplicaNotFound(replica) from item
                    if isinstance(item, ApiException) and item.status == 400:
                        raise RuntimeError_(self._api_error(item).args[0]) from item
                    if _unavailable(item):
                        raise RuntimeUnavailable(str(item)) from item
                    raise RuntimeError_(str(item)) from item
                yield item
        finally:
            stop = True
            resp = holder.get("resp")
            if resp is not None:
                with contextlib.suppress(Exception):
                    # Unblock the reader thread stuck in a follow read.
                    sock = getattr(getattr(resp, "connection", None), "sock", None)
                    if sock is not None:
                        sock.shutdown(2)
                    resp.close()
            while not queue.empty():
                queue.get_nowait()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(thread, 5)

    async def expiry_changed(self, cluster_id: str, expires_at: str) -> None:
        # Pods carry it as an annotation (the downward-API file follows it); the
        # template keeps its value: changing it would roll every pod.
        self._expiry[cluster_id] = expires_at
        for pod in list(self._pods.get(cluster_id, {}).values()):
            self._check_expiry(cluster_id, pod)

    def _check_expiry(self, cid: str, pod: Obj) -> None:
        want = self._expiry.get(cid)
        meta = pod.get("metadata") or {}
        if want is None or meta.get("deletionTimestamp"):
            return
        if (meta.get("annotations") or {}).get(ko.EXPIRES_ANNOTATION) == want:
            return
        task = asyncio.get_running_loop().create_task(self._patch_expiry(meta["name"], want))
        self._expiry_tasks.add(task)
        task.add_done_callback(self._expiry_tasks.discard)

    async def _patch_expiry(self, pod: str, expires_at: str) -> None:
        try:
            await self._call(self._core.patch_namespaced_pod, pod, self._ns,
                             {"metadata": {"annotations": {ko.EXPIRES_ANNOTATION: expires_at}}},
                             _content_type=MERGE_PATCH)
        except Exception as exc:  # the next pod event tries again
            log.info("could not set the expiry on pod %s: %s", pod, exc)

    async def service_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        pod = self._pod(cluster_id, replica)
        # The pod's own address (the one its EndpointSlice lists) when this process
        # can reach it, as inside the cluster: the API server stays off the data path.
        ip = (pod.get("status") or {}).get("podIP")
        if ip and await self._dialer.reachable(ip, port):
            self._paths[(cluster_id, replica)] = "pod-ip"
            return HostPort(ip, port)
        if not self._available:
            raise RuntimeUnavailable(self.last_error or "the Kubernetes API server is unreachable")
        self._paths[(cluster_id, replica)] = "port-forward"
        return await self._forward(self._ns, pod["metadata"]["name"], port)

    def forward_refusal(self, local: tuple[str, int]) -> str | None:
        for fwd in list(self._forwards.values()):
            message = fwd.refusals.pop(local, None)
            if message is not None:
                return message
        return None

    def target_path(self, cluster_id: str, replica: str) -> str:
        """How the service URL reaches the replica: "pod-ip" or "port-forward"."""
        return self._paths.get((cluster_id, replica), "port-forward")

    async def _forward(self, namespace: str, pod: str, port: int) -> HostPort:
        key = (pod if namespace == self._ns else f"{namespace}/{pod}", port)
        fwd = self._forwards.get(key)
        if fwd is None or fwd.address is None:
            fwd = PortForwardListener(self._t, namespace, pod, port)
            await fwd.start()
            self._forwards[key] = fwd
        assert fwd.address is not None
        return fwd.address

    # -------------------------------------------------------------- telemetry

    async def telemetry(self, cluster_id: str) -> list[ReplicaTelemetry]:
        states = [s for s in self.replicas(cluster_id) if s.phase == "Running"]
        if not states:
            return []
        dcgm = await self._dcgm_readings()
        if dcgm is not None:
            out = []
            for s in states:
                gpus = dcgm.get((self._ns, s.name))
                out.append(
                    ReplicaTelemetry(
                        s.name, "dcgm", tuple(gpus or ()),
                        note=None if gpus else "the DCGM exporter reports no GPU for this pod",
                    )
                )
            return out
        return list(await asyncio.gather(*(self._smi(s.name) for s in states)))

    async def _smi(self, pod: str) -> ReplicaTelemetry:
        cached = self._telemetry_cache.get(pod)
        now = time.monotonic()
        if cached and now - cached[0] < self._telemetry_interval:
            return cached[1]
        async with self._exec_limit:
            result = await self._run_smi(pod)
        self._telemetry_cache[pod] = (time.monotonic(), result)
        return result

    async def _run_smi(self, pod: str) -> ReplicaTelemetry:
        # The full XML report: utilisation and memory as before, plus the health readings.
        req = ExecRequest(command=NVIDIA_SMI_XML_COMMAND, stdout=True, stderr=True)
        try:
            stream = await KubeExecStream.open(
                self._t, self._ns, pod, ko.CONTAINER, req, protocols=self.exec_protocols
            )
        except (RuntimeError_, OSError) as e:
            return ReplicaTelemetry(pod, "nvidia-smi", (), note=f"cannot run nvidia-smi: {e}")
        out, err = bytearray(), bytearray()
        try:
            async with asyncio.timeout(15):
                while (frame := await stream.read()) is not None:
                    (out if frame[0] == STDOUT else err if frame[0] == STDERR else out).extend(
                        frame[1]
                    )
                    if len(out) + len(err) > 1 << 20:
                        break
                result = await stream.result()
        except TimeoutError:
            await stream.kill()
            return ReplicaTelemetry(pod, "nvidia-smi", (), note="nvidia-smi did not answer in 15 s")
        finally:
            await stream.kill()
        if result.exit_code != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            why = detail[-1] if detail else (result.message or "")
            if result.exit_code == 127 or "not found" in why or "executable file" in why:
                note = "nvidia-smi is not available in the replica"
            else:
                note = f"nvidia-smi failed (exit code {result.exit_code})"
            return ReplicaTelemetry(pod, "nvidia-smi", (), note=f"{note}: {why}"[:300])
        try:
            gpus = [
                with_process_owner(g, pod)
                for g in parse_nvidia_smi_xml(out.decode(errors="replace"))
            ]
        except NvidiaSmiXmlError as e:
            return ReplicaTelemetry(pod, "nvidia-smi", (), note=str(e)[:300])
        return ReplicaTelemetry(
            pod, "nvidia-smi", tuple(gpus),
            note=None if gpus else "nvidia-smi reported no GPU",
        )

    async def _dcgm_readings(self) -> dict[tuple[str, str], Any] | None:
        """Readings from every DCGM exporter pod, or None where none runs
        (or we may not look). Cached a few seconds."""
        at, cached = self._dcgm_cache
        if time.monotonic() - at < 5:
            return cached
        exporters: list[tuple[str, str]] = []
        for selector in DCGM_SELECTORS:
            try:
                data = await self._call(
                    self._core.list_pod_for_all_namespaces, label_selector=selector
                )
            except (ApiException, RuntimeUnavailable):
                continue
            for pod in data.get("items") or []:
                meta = pod["metadata"]
                if (pod.get("status") or {}).get("phase") == "Running":
                    exporters.append((meta["namespace"], meta["name"]))
        result: dict[tuple[str, str], Any] | None = None
        if exporters:
            result = {}
            async with httpx.AsyncClient(timeout=5) as http:
                for ns, pod in exporters:
                    try:
                        hp = await self._forward(ns, pod, DCGM_PORT)
                        resp = await http.get(f"http://{hp.host}:{hp.port}/metrics")
                        resp.raise_for_status()
                        result.update(parse_dcgm(resp.text))
                    except (httpx.HTTPError, RuntimeError_, OSError, ValueError) as e:
                        log.info("DCGM exporter %s/%s: %s", ns, pod, e)
            self.info.telemetry = "dcgm"
        else:
            self.info.telemetry = "nvidia-smi"
        self._dcgm_cache = (time.monotonic(), result)
        return result


def create_kubernetes_runtime(
    namespace: str | None, context: str | None, clock: Clock | None = None,
    termination_grace_s: float | None = None,
) -> Runtime:
    """The runtime `ecolink serve --runtime kubernetes` uses: credentials
    found as kubectl finds them (KUBECONFIG, ~/.kube/config, in-cluster)."""
    # urllib3 warns on every retried connection; while the API server is down
    # that is one line per request. The runtime reports outages itself.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return KubernetesRuntime(load_target(namespace=namespace, context=context), clock,
                             termination_grace_s=termination_grace_s)
