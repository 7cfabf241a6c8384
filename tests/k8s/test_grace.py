"""Each cluster's own termination grace on the kubernetes runtime: its Deployment's
pod template (and so its pods) carry `terminationGracePeriodSeconds` from the
cluster, and clusters launched without one get the backend's default."""

from __future__ import annotations

from kubernetes import client

from .test_runtime import make_spec, ready, rt  # noqa: F401  (the fixture)


def _template_grace(admin, namespace: str, cid: str) -> int | None:
    deps = (
        client.AppsV1Api(admin)
        .list_namespaced_deployment(namespace, label_selector=f"ecolink.cluster-id={cid}")
        .items
    )
    assert len(deps) == 1
    grace: int | None = deps[0].spec.template.spec.termination_grace_period_seconds
    return grace


async def test_the_deployment_carries_the_cluster_grace(rt, admin, namespace):  # noqa: F811
    runtime, rec = await rt(termination_grace_s=30)
    own = make_spec(name="own", termination_grace_s=7)
    plain = make_spec(name="plain", gpu_count=1, replicas=1)
    await runtime.apply(own)
    await runtime.apply(plain)
    await rec.wait_for(ready(rec, own.cluster_id, 2), what="2 ready replicas")
    assert _template_grace(admin, namespace, own.cluster_id) == 7
    assert _template_grace(admin, namespace, plain.cluster_id) == 30
    pods = (
        client.CoreV1Api(admin)
        .list_namespaced_pod(namespace, label_selector=f"ecolink.cluster-id={own.cluster_id}")
        .items
    )
    assert [p.spec.termination_grace_period_seconds for p in pods] == [7, 7]
    await runtime.terminate(own.cluster_id)
    await runtime.terminate(plain.cluster_id)
