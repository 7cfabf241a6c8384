"""What the kubernetes runtime (and the leader election of instances running with it)
asks of the API server, as RBAC rules of a namespaced Role: every call it makes, and
nothing else. `deploy/base/role.yaml` grants exactly
these (a test compares the two and runs every operation with a token of that Role).

Not granted, and not needed to run clusters: listing pods in every namespace to
find DCGM exporters (GPU telemetry then comes from nvidia-smi through exec).
"""

from __future__ import annotations

# (API group, resource, verbs), verbs sorted.
RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # apply.py: read, create, patch, replace, delete; informer.py: list, watch.
    ("apps", "deployments", ("create", "delete", "get", "list", "patch", "update", "watch")),
    # informer.py: list, watch; runtime.py: delete (restart a replica), patch
    # (the expiry annotation).
    ("", "pods", ("delete", "list", "patch", "watch")),
    # logs.py.
    ("", "pods/log", ("get",)),
    # stream.py: exec and port-forward are WebSocket upgrades of a GET, which the
    # API server authorises as get and, since 1.30, as create as well.
    ("", "pods/exec", ("create", "get")),
    ("", "pods/portforward", ("create", "get")),
    # apply.py: the cluster's Service.
    ("", "services", ("create", "delete", "get", "patch")),
    # informer.py: the shared filesystems (optional: without it none are offered).
    ("", "persistentvolumeclaims", ("list", "watch")),
    # ecolink/leadership/lease.py: the leader's Lease (read, made once, renewed,
    # taken over and handed back by updates).
    ("coordination.k8s.io", "leases", ("create", "get", "update")),
)
