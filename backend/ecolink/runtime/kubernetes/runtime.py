"""The kubernetes runtime: clusters as Deployments on a real API server.

One Deployment and one (headless) Service per cluster, labelled with the
cluster and account ids; the Service is owned by the Deployment so deleting
the Deployment removes both. `KubernetesRuntime` composes the parts:
- `informer.Informer`: status from watches (Deployments, Pods, filesystem
  claims), never from polling; it publishes replica changes;
- `apply.Applier`: the specs asked for and the writes that make the API server
  match them (drift repair, adoption, deletion);
- `forward`: the pod's own address or a port-forward through the API server;
- `stream`: exec and port-forward WebSockets straight to the API server;
- `logs`: the pod log API;
- `telemetry.KubeTelemetry`: GPU readings from the DCGM exporter where one runs,
  else from nvidia-smi executed in each replica.

All blocking client calls run in threads; every state change is handled on
the event loop, so the caches need no locks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from ecocore.clock import Clock, SystemClock
from ecocore.limits import DEFAULT_TERMINATION_GRACE_SECONDS
from ecolink.runtime.base import (
    ClusterSpec,
    ExecRequest,
    ExecStream,
    HostPort,
    ReplicaNotFound,
    ReplicaState,
    ReplicaTelemetry,
    Runtime,
    RuntimeInfo,
    RuntimeListener,
    RuntimeUnavailable,
)
from ecolink.runtime.kubernetes import objects as ko
from ecolink.runtime.kubernetes.apply import Applier
from ecolink.runtime.kubernetes.client import (
    MERGE_PATCH,
    KubeApi,
    KubeTarget,
    Obj,
    load_target,
    refusal,
)
from ecolink.runtime.kubernetes.forward import Forwards, PodDialer
from ecolink.runtime.kubernetes.informer import Informer
from ecolink.runtime.kubernetes.logs import pod_logs
from ecolink.runtime.kubernetes.stream import EXEC_PROTOCOLS, KubeExecStream
from ecolink.runtime.kubernetes.telemetry import KubeTelemetry

log = logging.getLogger(__name__)


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
        self.target = target
        self._ns = target.namespace
        self.info = RuntimeInfo(
            name="kubernetes",
            telemetry="nvidia-smi",
            details={
                "namespace": self._ns,
                "server": target.server,
                "source": target.source,
                **({"context": target.context} if target.context else {}),
            },
        )
        # Exec subprotocols offered, best first (tests narrow this to v4).
        self.exec_protocols: tuple[str, ...] = EXEC_PROTOCOLS
        self._tasks: set[asyncio.Task[Any]] = set()
        self.api = KubeApi(target)
        self.informer = Informer(self.api, self, watch_timeout_seconds)
        self.api.on_unreachable = self.informer.mark_unreachable
        self.applier = Applier(
            self.api,
            self.informer,
            clock or SystemClock(),
            self._spawn,
            termination_grace_s=termination_grace_s,
            terminate_timeout_s=terminate_timeout,
        )
        self.forwards = Forwards(target, self._spawn)
        self.gpu_telemetry = KubeTelemetry(
            self.api,
            self.info,
            self.forwards.to,
            lambda: self.exec_protocols,
            telemetry_min_interval,
        )
        self._dialer = PodDialer()
        self._paths: dict[tuple[str, str], str] = {}
        # cluster id -> the expiry its pods should carry (after an extend)
        self._expiry: dict[str, str] = {}

    @property
    def termination_grace_s(self) -> float | None:
        return self.applier.termination_grace_s

    @property
    def default_termination_grace_s(self) -> float:
        # None: the pod gets kubernetes' own default, 30 s.
        grace = self.applier.termination_grace_s
        return float(DEFAULT_TERMINATION_GRACE_SECONDS) if grace is None else grace

    @property
    def last_error(self) -> str | None:
        return self.informer.last_error

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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
        return self.informer.available

    # ------------------------------------------------------------ start / stop

    async def start(self, listener: RuntimeListener, known: Sequence[ClusterSpec]) -> None:
        for spec in known:
            self.applier.specs[spec.cluster_id] = spec
        await self.informer.start(listener)

    async def shutdown(self, stop_replicas: bool) -> None:
        # Replicas keep running on the cluster whatever stop_replicas says: the
        # Deployments outlive this backend and are adopted by the next one.
        self.informer.stop()
        await self.forwards.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.informer.join()

    def watch_stats(self) -> dict[str, dict[str, int]]:
        """How often each watch listed and (re)connected (tests, benchmarks)."""
        return self.informer.stats()

    # ------------------------------------------------- what the informer sees

    def deployments_listed(self, first: bool) -> None:
        self._spawn(self.applier.reconcile_all(remove_unknown=first))

    def deployment_changed(self, cluster_id: str) -> None:
        self.applier.check_drift(cluster_id)

    def deployment_gone(self, cluster_id: str) -> None:
        self.applier.deployment_gone(cluster_id)

    def pod_seen(self, cluster_id: str, pod: Obj) -> None:
        self._check_expiry(cluster_id, pod)

    def pod_leaving(self, pod: str) -> None:
        self.gpu_telemetry.forget(pod)
        self.forwards.drop(pod)

    def availability_changed(self, available: bool) -> None:
        listener = self.informer.listener
        if listener is None:
            return
        hook = getattr(listener, "runtime_available_changed", None)
        if callable(hook):
            hook(available)
        # Re-send every cluster's replicas so readers re-render `stale`.
        for cid in list(self.applier.specs):
            listener.replicas_changed(cid, self.replicas(cid))

    # ---------------------------------------------------------------- changes

    async def apply(self, spec: ClusterSpec) -> None:
        await self.applier.apply(spec)

    async def terminate(self, cluster_id: str) -> None:
        try:
            await self.applier.terminate(cluster_id)
        finally:
            for pod in list(self.informer.pods.get(cluster_id, {})):
                self.forwards.drop(pod)

    async def restart(self, cluster_id: str, replica: str | None = None) -> None:
        if replica is None:
            await self.applier.restart_all(cluster_id)
            return
        pod = self.informer.pod(cluster_id, replica)
        try:
            await self.api.call(
                self.api.core.delete_namespaced_pod, pod["metadata"]["name"], self._ns
            )
        except ApiException as e:
            if e.status == 404:
                raise ReplicaNotFound(replica) from e
            raise refusal(e) from e

    # ------------------------------------------------------------------ reads

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        return self.informer.replicas(cluster_id)

    def filesystems(self) -> list[dict[str, str]]:
        """Shared filesystems: the namespace's PersistentVolumeClaims labelled
        `ecolink.filesystem=true` (from a watch; no IO here)."""
        return self.informer.filesystems()

    async def exec(self, cluster_id: str, replica: str, request: ExecRequest) -> ExecStream:
        pod = self.informer.pod(cluster_id, replica)
        return await KubeExecStream.open(
            self.target,
            self._ns,
            pod["metadata"]["name"],
            ko.CONTAINER,
            request,
            protocols=self.exec_protocols,
        )

    async def logs(
        self, cluster_id: str, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]:
        pod = self.informer.pod(cluster_id, replica)
        async for chunk in pod_logs(
            self.api, pod["metadata"]["name"], replica, tail=tail, follow=follow, previous=previous
        ):
            yield chunk

    async def telemetry(self, cluster_id: str) -> list[ReplicaTelemetry]:
        return await self.gpu_telemetry.read(self.replicas(cluster_id))

    # ----------------------------------------------------------------- expiry

    async def expiry_changed(self, cluster_id: str, expires_at: str) -> None:
        # Pods carry it as an annotation (the downward-API file follows it); the
        # template keeps its value: changing it would roll every pod.
        self._expiry[cluster_id] = expires_at
        for pod in list(self.informer.pods.get(cluster_id, {}).values()):
            self._check_expiry(cluster_id, pod)

    def _check_expiry(self, cid: str, pod: Obj) -> None:
        want = self._expiry.get(cid)
        meta = pod.get("metadata") or {}
        if want is None or meta.get("deletionTimestamp"):
            return
        if (meta.get("annotations") or {}).get(ko.EXPIRES_ANNOTATION) == want:
            return
        self._spawn(self._patch_expiry(meta["name"], want))

    async def _patch_expiry(self, pod: str, expires_at: str) -> None:
        try:
            await self.api.call(
                self.api.core.patch_namespaced_pod,
                pod,
                self._ns,
                {"metadata": {"annotations": {ko.EXPIRES_ANNOTATION: expires_at}}},
                _content_type=MERGE_PATCH,
            )
        except Exception as exc:  # the next pod event tries again
            log.info("could not set the expiry on pod %s: %s", pod, exc)

    # ---------------------------------------------------------- service paths

    async def service_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        pod = self.informer.pod(cluster_id, replica)
        # The pod's own address (the one its EndpointSlice lists) when this process
        # can reach it, as inside the cluster: the API server stays off the data path.
        ip = (pod.get("status") or {}).get("podIP")
        if ip and await self._dialer.reachable(ip, port):
            self._paths[(cluster_id, replica)] = "pod-ip"
            return HostPort(ip, port)
        if not self.informer.available:
            raise RuntimeUnavailable(self.last_error or "the Kubernetes API server is unreachable")
        self._paths[(cluster_id, replica)] = "port-forward"
        return await self.forwards.to(self._ns, pod["metadata"]["name"], port)

    def forward_refusal(self, local: tuple[str, int]) -> str | None:
        return self.forwards.refusal(local)

    def target_path(self, cluster_id: str, replica: str) -> str:
        """How the service URL reaches the replica: "pod-ip" or "port-forward"."""
        return self._paths.get((cluster_id, replica), "port-forward")


def create_kubernetes_runtime(
    namespace: str | None,
    context: str | None,
    clock: Clock | None = None,
    termination_grace_s: float | None = None,
) -> Runtime:
    """The runtime `ecolink serve --runtime kubernetes` uses: credentials
    found as kubectl finds them (KUBECONFIG, ~/.kube/config, in-cluster)."""
    # urllib3 warns on every retried connection; while the API server is down
    # that is one line per request. The runtime reports outages itself.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return KubernetesRuntime(
        load_target(namespace=namespace, context=context),
        clock,
        termination_grace_s=termination_grace_s,
    )
