"""Kubernetes objects of a cluster, and reading replica state back from pods.

Pure functions over plain dicts (the JSON the API server speaks): what the
Deployment and Service of a `ClusterSpec` look like, which fields of a live
Deployment ecolink owns (for drift detection), and how a Pod becomes a
`ReplicaState`. No IO here, so all of it is unit-testable without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ecolink.runtime.base import ClusterSpec, Phase, ReplicaState

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "ecolink"
CLUSTER_LABEL = "ecolink.cluster-id"
ACCOUNT_LABEL = "ecolink.account-id"
# Label values are restricted (63 chars, [A-Za-z0-9._-]); the exact ids live in
# annotations, on the Deployment and on every pod.
CLUSTER_ANNOTATION = "ecolink/cluster-id"
ACCOUNT_ANNOTATION = "ecolink/account-id"
NAME_ANNOTATION = "ecolink/cluster-name"
# Same key as `kubectl rollout restart`, so either tool's restart is understood.
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# PersistentVolumeClaims offered as shared filesystems carry this label.
FILESYSTEM_LABEL = "ecolink.filesystem"
FILESYSTEM_SELECTOR = f"{FILESYSTEM_LABEL}=true"
DESCRIPTION_ANNOTATION = "ecolink/description"
CONTAINER = "main"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
REGION_LABEL = "topology.kubernetes.io/region"
SHARED_MOUNT_ROOT = "/shared"
# The cluster's current expiry on every pod: ECO_EXPIRES_AT at start (env from the
# annotation) and ECO_EXPIRES_AT_FILE kept current by a downward-API volume.
EXPIRES_ANNOTATION = "ecolink/expires-at"
EXPIRY_VOLUME = "ecolink-expiry"
EXPIRY_DIR = "/etc/ecolink"

_DNS_BAD = re.compile(r"[^a-z0-9-]+")
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]+")
# Pod names are `<deployment>-<rs hash, 10>-<5>`; keep them within 63 chars.
_MAX_NAME = 47


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def object_name(cluster_id: str) -> str:
    """The Deployment and Service name of a cluster: a DNS-1035 label."""
    clean = _DNS_BAD.sub("-", cluster_id.lower()).strip("-")
    name = f"eco-{clean}" if clean else "eco"
    if name != f"eco-{cluster_id}" or len(name) > _MAX_NAME:
        # Not a faithful copy of the id: a hash keeps distinct ids distinct.
        name = f"{name[: _MAX_NAME - 9].rstrip('-')}-{_short_hash(cluster_id)}"
    return name


def label_value(value: str) -> str:
    clean = _LABEL_BAD.sub("-", value).strip("-._")
    if clean == value and 0 < len(clean) <= 63:
        return clean
    return f"{clean[:54].rstrip('-._')}-{_short_hash(value)}".lstrip("-")


def cluster_selector(cluster_id: str) -> dict[str, str]:
    return {CLUSTER_LABEL: label_value(cluster_id)}


MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGER}"


def _labels(spec: ClusterSpec) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGER,
        CLUSTER_LABEL: label_value(spec.cluster_id),
        ACCOUNT_LABEL: label_value(spec.account_id),
    }


def _annotations(spec: ClusterSpec) -> dict[str, str]:
    return {
        CLUSTER_ANNOTATION: spec.cluster_id,
        ACCOUNT_ANNOTATION: spec.account_id,
        NAME_ANNOTATION: spec.name,
    }


def node_selector(spec: ClusterSpec) -> dict[str, str]:
    """Node labels from the catalog's mapping (`ClusterSpec.node_selector`)."""
    return {k: v for k, v in spec.node_selector}


def shared_volume_name(filesystem: str) -> str:
    return (
        f"fs-{_DNS_BAD.sub('-', filesystem.lower()).strip('-')[:40]}-{_short_hash(filesystem)[:6]}"
    )


def pod_template(
    spec: ClusterSpec, restarted_at: str | None = None, termination_grace_s: float | None = None
) -> dict[str, Any]:
    """The pod of every replica. `termination_grace_s` (the backend's
    --termination-grace-seconds) is how long a pod has between SIGTERM and
    SIGKILL when it is deleted; None leaves the cluster's default."""
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "resources": {"limits": {GPU_RESOURCE: str(spec.gpu_count)}},
        "env": [
            {"name": "ECOLINK_CLUSTER_ID", "value": spec.cluster_id},
            {"name": "ECOLINK_CLUSTER_NAME", "value": spec.name},
        ],
    }
    if spec.startup_command:
        container["command"] = ["sh", "-c", spec.startup_command]
    if spec.endpoint_port is not None:
        container["ports"] = [
            {"name": "endpoint", "containerPort": spec.endpoint_port, "protocol": "TCP"}
        ]
        container["env"].append({"name": "PORT", "value": str(spec.endpoint_port)})
        container["readinessProbe"] = {
            "tcpSocket": {"port": spec.endpoint_port},
            "periodSeconds": 2,
            "failureThreshold": 3,
        }
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if spec.expires_at:
        field = {"fieldPath": f"metadata.annotations['{EXPIRES_ANNOTATION}']"}
        container["env"] += [
            {"name": "ECO_EXPIRES_AT", "valueFrom": {"fieldRef": field}},
            {"name": "ECO_EXPIRES_AT_FILE", "value": f"{EXPIRY_DIR}/expires_at"},
        ]
        volumes.append(
            {
                "name": EXPIRY_VOLUME,
                "downwardAPI": {"items": [{"path": "expires_at", "fieldRef": field}]},
            }
        )
        mounts.append({"name": EXPIRY_VOLUME, "mountPath": EXPIRY_DIR, "readOnly": True})
    for fs in spec.shared_filesystems:
        vol = shared_volume_name(fs)
        volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": fs}})
        mounts.append({"name": vol, "mountPath": f"{SHARED_MOUNT_ROOT}/{fs}"})
    if mounts:
        container["volumeMounts"] = mounts
    annotations = dict(_annotations(spec))
    if spec.expires_at:
        annotations[EXPIRES_ANNOTATION] = spec.expires_at
    if restarted_at:
        annotations[RESTART_ANNOTATION] = restarted_at
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        # Replicas are not meant to call the API server or each other by env.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if termination_grace_s is not None:
        # Kubernetes takes whole seconds; a fraction is rounded up, never to less.
        pod_spec["terminationGracePeriodSeconds"] = max(0, math.ceil(termination_grace_s))
    selector = node_selector(spec)
    if selector:
        pod_spec["nodeSelector"] = selector
    if volumes:
        pod_spec["volumes"] = volumes
    return {"metadata": {"labels": _labels(spec), "annotations": annotations}, "spec": pod_spec}


def deployment(
    spec: ClusterSpec, restarted_at: str | None = None, termination_grace_s: float | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": object_name(spec.cluster_id),
            "labels": _labels(spec),
            "annotations": _annotations(spec),
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": cluster_selector(spec.cluster_id)},
            # One replica at a time, without a surge pod: GPUs are scarce and a
            # surge pod may not fit anywhere.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": pod_template(spec, restarted_at, termination_grace_s),
        },
    }


def service(spec: ClusterSpec, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The cluster's Service, owned by its Deployment (deleted with it).

    Headless, so that it can exist without ports while no endpoint is set
    (clusterIP cannot change later)."""
    ports = []
    if spec.endpoint_port is not None:
        ports.append(
            {
                "name": "endpoint",
                "port": spec.endpoint_port,
                "targetPort": spec.endpoint_port,
                "protocol": "TCP",
            }
        )
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": object_name(spec.cluster_id),
            "labels": _labels(spec),
            "annotations": _annotations(spec),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "blockOwnerDeletion": True,
                    "controller": False,
                }
            ],
        },
        "spec": {
            "clusterIP": "None",
            "selector": cluster_selector(spec.cluster_id),
            "ports": ports,
            "publishNotReadyAddresses": False,
        },
    }


def owned_fields(dep: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a Deployment that ecolink decides, normalised so that a
    live object (with server defaults) and a rendered one compare equal."""
    spec = dep.get("spec") or {}
    tmpl = (spec.get("template") or {}).get("spec") or {}
    containers = tmpl.get("containers") or []
    main: Mapping[str, Any] = next((c for c in containers if c.get("name") == CONTAINER), {})
    limits = (main.get("resources") or {}).get("limits") or {}
    probe = main.get("readinessProbe") or {}
    tolerations = sorted(
        (t.get("key"), t.get("operator"), t.get("effect"))
        for t in tmpl.get("tolerations") or []
        if t.get("key") == GPU_RESOURCE
    )
    volumes = sorted(
        (v.get("name"), (v.get("persistentVolumeClaim") or {}).get("claimName"))
        for v in tmpl.get("volumes") or []
    )
    mounts = sorted((m.get("name"), m.get("mountPath")) for m in main.get("volumeMounts") or [])
    return {
        "containers": sorted(c.get("name", "") for c in containers),
        "image": main.get("image"),
        "command": main.get("command"),
        "args": main.get("args"),
        "gpus": str(limits.get(GPU_RESOURCE)) if GPU_RESOURCE in limits else None,
        "nodeSelector": dict(tmpl.get("nodeSelector") or {}),
        "tolerations": tolerations,
        "volumes": volumes,
        "mounts": mounts,
        "probePort": (probe.get("tcpSocket") or {}).get("port"),
        "ports": sorted(p.get("containerPort") for p in main.get("ports") or []),
        "selector": (spec.get("selector") or {}).get("matchLabels"),
    }


def drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Names of the owned fields that differ between desired and live."""
    a, b = owned_fields(desired), owned_fields(live)
    return [k for k in a if json.dumps(a[k], sort_keys=True) != json.dumps(b[k], sort_keys=True)]


def restarted_at(dep: Mapping[str, Any]) -> str | None:
    ann = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations")
    return (ann or {}).get(RESTART_ANNOTATION)


def cluster_id_of(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if CLUSTER_ANNOTATION in ann:
        return str(ann[CLUSTER_ANNOTATION])
    return None


def spec_from_deployment(dep: Mapping[str, Any]) -> ClusterSpec | None:
    """Rebuild a ClusterSpec from a live Deployment ecolink made (adoption)."""
    meta = dep.get("metadata") or {}
    ann = meta.get("annotations") or {}
    cid = ann.get(CLUSTER_ANNOTATION)
    if not cid:
        return None
    f = owned_fields(dep)
    command = f["command"]
    startup = command[2] if command and command[:2] == ["sh", "-c"] and len(command) == 3 else None
    fs = tuple(m[1].removeprefix(SHARED_MOUNT_ROOT + "/") for m in f["mounts"])
    sel = f["nodeSelector"]
    return ClusterSpec(
        cluster_id=cid,
        account_id=ann.get(ACCOUNT_ANNOTATION, ""),
        name=ann.get(NAME_ANNOTATION, ""),
        region=sel.get(REGION_LABEL, ""),
        gpu_type=sel.get(GPU_PRODUCT_LABEL, ""),
        gpu_count=int(f["gpus"] or 0),
        replicas=int((dep.get("spec") or {}).get("replicas") or 0),
        image=f["image"] or "",
        startup_command=startup,
        shared_filesystems=fs,
        endpoint_port=f["probePort"],
        node_selector=tuple(sorted(sel.items())),
    )


# ---------------------------------------------------------------- pods -> replicas


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            found: Mapping[str, Any] = c
            return found
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    c = _condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_restarts(pod: Mapping[str, Any]) -> int:
    return sum(
        int(cs.get("restartCount") or 0)
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    )


def pod_reason(pod: Mapping[str, Any]) -> str | None:
    """Why a pod is not (yet) serving, in the words Kubernetes uses."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    sched = _condition(pod, "PodScheduled")
    if sched and sched.get("status") == "False":
        # e.g. "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. ..."
        return str(sched.get("message") or sched.get("reason") or "Unschedulable")
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting")
        if waiting and waiting.get("reason"):
            msg = waiting.get("message")
            return f"{waiting['reason']}: {msg}" if msg else str(waiting["reason"])
        term = state.get("terminated")
        if term and term.get("reason") and status.get("phase") != "Succeeded":
            return f"{term['reason']} (exit code {term.get('exitCode')})"
    if status.get("phase") == "Failed":
        return str(status.get("reason") or status.get("message") or "Failed")
    if status.get("phase") == "Running" and not pod_ready(pod):
        c = _condition(pod, "Ready")
        if c and c.get("reason"):
            return str(c.get("reason"))
    return None


_PHASES: tuple[Phase, ...] = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def replica_state(pod: Mapping[str, Any], index: int) -> ReplicaState:
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    return ReplicaState(
        name=pod["metadata"]["name"],
        index=index,
        phase=phase if phase in _PHASES else "Unknown",
        ready=pod_ready(pod),
        restarts=pod_restarts(pod),
        reason=pod_reason(pod),
        node=(pod.get("spec") or {}).get("nodeName") or None,
    )


def filesystem_entry(pvc: Mapping[str, Any]) -> dict[str, str]:
    meta = pvc.get("metadata") or {}
    ann = meta.get("annotations") or {}
    size = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    phase = (pvc.get("status") or {}).get("phase") or "Pending"
    default = f"PersistentVolumeClaim {meta.get('name')}" + (f", {size}" if size else "")
    return {
        "name": str(meta.get("name")),
        "description": str(ann.get(DESCRIPTION_ANNOTATION) or f"{default} ({phase})"),
    }
