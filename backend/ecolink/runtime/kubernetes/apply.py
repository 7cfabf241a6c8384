"""Writing what is asked for: Deployments and Services, drift repair, deletion.

`Applier` keeps the specs the store wants (`specs`) and makes the API server's
objects match them: create or update a Deployment (retried when someone wrote in
between), settle its Service, put back what was changed or deleted outside
ecolink, adopt what already runs at start and remove what nobody knows. An answer
of the API server that is not a conflict is a refusal (`RuntimeRefused`, with its
words); an API server that cannot be reached is `RuntimeUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from ecocore.clock import Clock
from ecolink.runtime.base import (
    ClusterSpec,
    ReplicaNotFound,
    RuntimeListener,
    RuntimeRefused,
    RuntimeUnavailable,
)
from ecolink.runtime.kubernetes import objects as ko
from ecolink.runtime.kubernetes.client import MERGE_PATCH, KubeApi, Obj, refusal
from ecolink.runtime.kubernetes.informer import Informer, _rv

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Applier:
    """Desired state (specs) and the writes that make the cluster match it."""

    def __init__(
        self,
        api: KubeApi,
        informer: Informer,
        clock: Clock,
        spawn: Spawn,
        *,
        termination_grace_s: float | None,
        terminate_timeout_s: float,
    ) -> None:
        self._api = api
        self._informer = informer
        self._clock = clock
        self._spawn = spawn
        # Pods' terminationGracePeriodSeconds (None: the cluster's default, 30 s).
        self.termination_grace_s = termination_grace_s
        self.terminate_timeout_s = terminate_timeout_s
        self.specs: dict[str, ClusterSpec] = {}
        self._written_rv: dict[str, int] = {}
        self._busy: dict[str, int] = {}
        self.terminating: set[str] = set()
        self._restoring: set[str] = set()

    @property
    def _listener(self) -> RuntimeListener | None:
        return self._informer.listener

    def deployment(self, spec: ClusterSpec, restarted_at: str | None = None) -> Obj:
        grace = spec.termination_grace_s
        return ko.deployment(
            spec, restarted_at, self.termination_grace_s if grace is None else grace
        )

    @contextlib.contextmanager
    def _busy_with(self, cid: str) -> Any:
        self._busy[cid] = self._busy.get(cid, 0) + 1
        try:
            yield
        finally:
            self._busy[cid] -= 1
            if not self._busy[cid]:
                del self._busy[cid]

    # ----------------------------------------------------------- drift & adopt

    def check_drift(self, cid: str) -> None:
        spec = self.specs.get(cid)
        live = self._informer.deployments.get(cid)
        if spec is None or live is None or cid in self.terminating or cid in self._busy:
            return
        if cid in self._restoring:
            return
        if (live.get("metadata") or {}).get("deletionTimestamp"):
            return
        if _rv(live) <= self._written_rv.get(cid, 0):
            return  # an older version than what we wrote last
        fields = self._drifted_fields(spec, live)
        if fields:
            self._spawn(self.restore(cid, fields, live))

    def deployment_gone(self, cid: str) -> None:
        if cid not in self.specs or cid in self.terminating or cid in self._busy:
            return
        # Deleted by someone else while we still want it: bring it back.
        self._spawn(self.restore(cid, ["deleted"]))

    def _drifted_fields(self, spec: ClusterSpec, live: Obj) -> list[str]:
        desired = self.deployment(spec, ko.restarted_at(live))
        fields = ko.drift(desired, live)
        if int((live.get("spec") or {}).get("replicas") or 0) != spec.replicas:
            fields.append("replicas")
        return fields

    async def restore(self, cid: str, fields: list[str], live: Obj | None = None) -> None:
        spec = self.specs.get(cid)
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
                cid,
                "scaled",
                f"the Deployment was scaled to {had} outside ecolink; restored {spec.replicas}",
            )
        elif fields == ["deleted"]:
            self._listener.runtime_event(
                cid, "restarted", "the Deployment was deleted outside ecolink; recreated it"
            )
        else:
            self._listener.runtime_event(
                cid,
                "restarted",
                "the Deployment was changed outside ecolink ("
                + ", ".join(fields)
                + "); restored what was asked for",
            )

    async def reconcile_all(self, remove_unknown: bool) -> None:
        """Adopt what runs, fix what drifted, create what is missing, and
        (on the first sync) remove what we own but nobody knows."""
        for cid, spec in list(self.specs.items()):
            if cid in self._busy or cid in self.terminating:
                continue
            live = self._informer.deployments.get(cid)
            if live is None:
                await self.restore(cid, ["deleted"])
                continue
            fields = self._drifted_fields(spec, live)
            if fields:
                await self.restore(cid, fields, live)
            else:
                with contextlib.suppress(RuntimeUnavailable):
                    await self._ensure_service(spec, live)
        if remove_unknown:
            for cid in [c for c in self._informer.deployments if c not in self.specs]:
                if cid in self._busy:
                    continue
                log.info("removing cluster %s: it runs, but the store does not know it", cid)
                with contextlib.suppress(RuntimeUnavailable, RuntimeRefused):
                    await self._delete(cid)

    # ---------------------------------------------------------------- changes

    async def apply(self, spec: ClusterSpec) -> None:
        cid = spec.cluster_id
        previous = self.specs.get(cid)
        self.specs[cid] = spec
        try:
            await self._apply(spec)
        except BaseException:
            # Nothing changed on the cluster's side as far as we know: keep
            # wanting what we wanted before.
            if previous is None:
                self.specs.pop(cid, None)
            else:
                self.specs[cid] = previous
            raise

    async def _apply(self, spec: ClusterSpec) -> None:
        cid = spec.cluster_id
        try:
            with self._busy_with(cid):
                for _attempt in range(5):
                    try:
                        await self._apply_once(spec)
                        return
                    except ApiException as e:
                        if e.status == 409:
                            continue  # someone wrote in between: read again
                        raise refusal(e) from e
                raise RuntimeRefused(f"could not update the Deployment of {cid}: conflicts")
        finally:
            # Something may have changed while we were busy.
            self.check_drift(cid)

    async def _apply_once(self, spec: ClusterSpec) -> None:
        api = self._api
        cid = spec.cluster_id
        name = ko.object_name(cid)
        try:
            live: Obj | None = await api.call(api.apps.read_namespaced_deployment, name, api.ns)
        except ApiException as e:
            if e.status != 404:
                raise
            live = None
        if live is None:
            created = await api.call(
                api.apps.create_namespaced_deployment,
                api.ns,
                k8s_client.V1Deployment.from_dict(self.deployment(spec)),
            )
            self._note_written(cid, created)
            await self._ensure_service(spec, created)
            return
        desired = self.deployment(spec, ko.restarted_at(live))
        fields = ko.drift(desired, live)
        if (live.get("metadata") or {}).get("deletionTimestamp"):
            raise RuntimeRefused(f"the Deployment of {cid} is being deleted")
        if not fields:
            if int((live.get("spec") or {}).get("replicas") or 0) != spec.replicas:
                patched = await api.call(
                    api.apps.patch_namespaced_deployment,
                    name,
                    api.ns,
                    {"spec": {"replicas": spec.replicas}},
                    _content_type=MERGE_PATCH,
                )
                self._note_written(cid, patched)
            return
        # The template changed: replace our parts, keep everything else
        # (and the resourceVersion, so a concurrent edit makes this a 409).
        body = dict(live)
        body.pop("status", None)
        meta = dict(live["metadata"])
        meta["labels"] = {**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            **desired["metadata"]["annotations"],
        }
        meta.pop("managedFields", None)
        body["metadata"] = meta
        body["spec"] = {**live["spec"], **desired["spec"]}
        replaced = await api.call(
            api.apps.replace_namespaced_deployment,
            name,
            api.ns,
            k8s_client.V1Deployment.from_dict(body),
        )
        self._note_written(cid, replaced)
        await self._ensure_service(spec, replaced)

    def _note_written(self, cid: str, obj: Obj) -> None:
        self._written_rv[cid] = max(self._written_rv.get(cid, 0), _rv(obj))
        self._informer.wrote(cid, obj)

    async def _ensure_service(self, spec: ClusterSpec, owner: Obj) -> None:
        api = self._api
        name = ko.object_name(spec.cluster_id)
        desired = ko.service(spec, owner)
        # The garbage collector may be removing an old Service (of a Deployment
        # deleted by hand) while we look: read, then create or fix, again.
        for _attempt in range(5):
            try:
                live = await api.call(api.core.read_namespaced_service, name, api.ns)
            except ApiException as e:
                if e.status != 404:
                    raise
                try:
                    await api.call(
                        api.core.create_namespaced_service,
                        api.ns,
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
                await api.call(
                    api.core.patch_namespaced_service,
                    name,
                    api.ns,
                    patch,
                    _content_type=MERGE_PATCH,
                )
                return
            except ApiException as e:
                if e.status != 404:
                    raise
        raise RuntimeRefused(f"could not settle the Service of {spec.cluster_id}")

    async def terminate(self, cluster_id: str) -> None:
        self.terminating.add(cluster_id)
        spec = self.specs.pop(cluster_id, None)
        try:
            await self._delete(cluster_id)
        except BaseException:
            if spec is not None:
                self.specs[cluster_id] = spec
            self.terminating.discard(cluster_id)
            raise
        informer = self._informer
        try:
            # Foreground deletion: the Deployment goes last, after its pods.
            deadline = time.monotonic() + self.terminate_timeout_s
            while time.monotonic() < deadline:
                if cluster_id not in informer.deployments and not informer.pods.get(cluster_id):
                    break
                await informer.changed_for(cluster_id, 1.0)
        finally:
            self.terminating.discard(cluster_id)
            self._written_rv.pop(cluster_id, None)

    async def _delete(self, cid: str) -> None:
        api = self._api
        name = ko.object_name(cid)
        body = k8s_client.V1DeleteOptions(propagation_policy="Foreground")
        for fn in (api.apps.delete_namespaced_deployment, api.core.delete_namespaced_service):
            try:
                await api.call(fn, name, api.ns, body=body)
            except ApiException as e:
                if e.status != 404:
                    raise refusal(e) from e

    async def restart_all(self, cluster_id: str) -> None:
        """A rolling restart: a new stamp on the pod template."""
        if cluster_id not in self.specs:
            raise ReplicaNotFound(f"no cluster {cluster_id}")
        api = self._api
        stamp = self._clock.now().isoformat()
        patch = {
            "spec": {"template": {"metadata": {"annotations": {ko.RESTART_ANNOTATION: stamp}}}}
        }
        with self._busy_with(cluster_id):
            try:
                patched = await api.call(
                    api.apps.patch_namespaced_deployment,
                    ko.object_name(cluster_id),
                    api.ns,
                    patch,
                    _content_type=MERGE_PATCH,
                )
            except ApiException as e:
                raise refusal(e) from e
            self._note_written(cluster_id, patched)
