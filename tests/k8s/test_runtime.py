"""The kubernetes runtime against a real API server, scheduler and
controllers (KWOK plays the kubelets): objects, status, lifecycle, adoption,
drift, scheduling failures, outages."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from kubernetes import client

from ecolink.runtime.base import ClusterSpec, RuntimeRefused, RuntimeUnavailable
from ecolink.runtime.kubernetes import KubernetesRuntime
from ecolink.runtime.kubernetes.client import load_target

from .conftest import Recorder, forbid_deployments

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"


def make_spec(**kw) -> ClusterSpec:
    cid = kw.pop("cluster_id", f"c{uuid.uuid4().hex[:12]}")
    base = dict(
        cluster_id=cid,
        account_id="acct-1",
        name=kw.pop("name", "train"),
        region="eu-west",
        gpu_type="H100",
        gpu_count=2,
        replicas=2,
        image="registry.invalid/demo:1",
        startup_command="python -m http.server 8080",
        endpoint_port=8080,
        node_selector=(
            ("nvidia.com/gpu.product", H100),
            ("topology.kubernetes.io/region", "eu-west"),
        ),
    )
    base.update(kw)
    return ClusterSpec(**base)


@pytest.fixture
async def rt(kubeconfig, namespace, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    runtimes: list[KubernetesRuntime] = []

    async def make(known=(), **kw) -> tuple[KubernetesRuntime, Recorder]:
        r = KubernetesRuntime(load_target(namespace=namespace), **kw)
        rec = Recorder()
        await r.start(rec, list(known))
        runtimes.append(r)
        return r, rec

    yield make
    for r in runtimes:
        await r.shutdown(stop_replicas=False)


def ready(rec: Recorder, cid: str, n: int):
    def check():
        reps = rec.replicas.get(cid, [])
        return len(reps) == n and all(r.ready and r.phase == "Running" for r in reps) and reps

    return check


async def test_launch_objects_scale_stop_resume_restart_terminate(rt, admin, namespace):
    runtime, rec = await rt()
    spec = make_spec()
    await runtime.apply(spec)
    reps = await rec.wait_for(ready(rec, spec.cluster_id, 2), what="2 ready replicas")
    assert sorted(r.index for r in reps) == [0, 1]
    # The node selection from the catalog's mapping: H100 nodes in eu-west.
    assert {r.node for r in reps} == {"gpu-h-1"}
    assert "replica_ready" in rec.kinds(spec.cluster_id)

    apps, core = client.AppsV1Api(admin), client.CoreV1Api(admin)
    deps = apps.list_namespaced_deployment(
        namespace, label_selector=f"ecolink.cluster-id={spec.cluster_id}"
    ).items
    assert len(deps) == 1
    dep = deps[0]
    assert dep.metadata.labels["ecolink.account-id"] == "acct-1"
    pod_spec = dep.spec.template.spec
    main = pod_spec.containers[0]
    assert main.resources.limits["nvidia.com/gpu"] == "2"
    assert main.command == ["sh", "-c", "python -m http.server 8080"]
    assert main.readiness_probe.tcp_socket.port == 8080
    assert pod_spec.node_selector == {
        "nvidia.com/gpu.product": H100,
        "topology.kubernetes.io/region": "eu-west",
    }
    assert any(t.key == "nvidia.com/gpu" and t.operator == "Exists" for t in pod_spec.tolerations)
    svc = core.read_namespaced_service(dep.metadata.name, namespace)
    assert [p.port for p in svc.spec.ports] == [8080]
    assert svc.metadata.owner_references[0].uid == dep.metadata.uid

    # Scale up: 4 x 2 GPUs fill the one H100 node of eu-west.
    await runtime.apply(make_spec(cluster_id=spec.cluster_id, replicas=4))
    reps = await rec.wait_for(ready(rec, spec.cluster_id, 4), what="4 ready replicas")
    assert sorted(r.index for r in reps) == [0, 1, 2, 3]
    await runtime.apply(make_spec(cluster_id=spec.cluster_id, replicas=2))
    await rec.wait_for(ready(rec, spec.cluster_id, 2), what="scaled down to 2")

    # Stop: scale to zero, the Deployment stays.
    await runtime.apply(make_spec(cluster_id=spec.cluster_id, replicas=0))
    await rec.wait_for(lambda: rec.replicas.get(spec.cluster_id) == [], what="stopped")
    assert apps.read_namespaced_deployment(dep.metadata.name, namespace).spec.replicas == 0
    await runtime.apply(make_spec(cluster_id=spec.cluster_id, replicas=2))
    reps = await rec.wait_for(ready(rec, spec.cluster_id, 2), what="resumed")

    # Rolling restart replaces every pod; restarting one replaces only it.
    before = {r.name for r in reps}
    await runtime.restart(spec.cluster_id)
    await rec.wait_for(
        lambda: (r := ready(rec, spec.cluster_id, 2)()) and not ({x.name for x in r} & before),
        timeout=60,
        what="rolling restart",
    )
    reps = runtime.replicas(spec.cluster_id)
    victim, keeper = reps[0].name, reps[1].name
    await runtime.restart(spec.cluster_id, victim)
    await rec.wait_for(
        lambda: (
            (r := ready(rec, spec.cluster_id, 2)())
            and victim not in {x.name for x in r}
            and keeper in {x.name for x in r}
        ),
        what="one replica restarted",
    )
    # Indices stay unique (a replacement takes a free one; a pod keeps its own).
    indices = [r.index for r in runtime.replicas(spec.cluster_id)]
    assert len(set(indices)) == 2
    assert next(r.index for r in runtime.replicas(spec.cluster_id) if r.name == keeper) == next(
        r.index for r in reps if r.name == keeper
    )

    await runtime.terminate(spec.cluster_id)
    assert runtime.replicas(spec.cluster_id) == []
    assert not apps.list_namespaced_deployment(namespace).items
    assert not core.list_namespaced_service(namespace).items
    assert not [p for p in core.list_namespaced_pod(namespace).items], "pods left after terminate"


async def test_status_reaches_listener_within_a_second(rt, admin, namespace):
    runtime, rec = await rt()
    spec = make_spec(replicas=2)
    await runtime.apply(spec)
    reps = await rec.wait_for(ready(rec, spec.cluster_id, 2), what="ready")
    core = client.CoreV1Api(admin)
    pod = core.read_namespaced_pod_status(reps[0].name, namespace)
    # Play the kubelet: the container restarted and is not ready.
    conds = [
        {
            "type": c.type,
            "status": "False" if c.type in ("Ready", "ContainersReady") else c.status,
            "lastTransitionTime": c.last_transition_time.isoformat(),
        }
        for c in pod.status.conditions
    ]
    cs = pod.status.container_statuses[0]
    status = {
        "conditions": conds,
        "containerStatuses": [
            {
                "name": cs.name,
                "image": cs.image,
                "imageID": "",
                "ready": False,
                "restartCount": 1,
                "state": {
                    "waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}
                },
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}},
            }
        ],
    }
    sent = time.monotonic()
    core.patch_namespaced_pod_status(reps[0].name, namespace, {"status": status})
    await rec.wait_for(
        lambda: any(
            r.name == reps[0].name and not r.ready and r.restarts == 1
            for r in rec.replicas.get(spec.cluster_id, [])
        ),
        timeout=5,
        what="not-ready replica",
    )
    seen = next(
        t
        for t, cid, r in rec.updates
        if cid == spec.cluster_id and any(x.name == reps[0].name and x.restarts == 1 for x in r)
    )
    assert seen - sent < 1.0, f"status arrived {seen - sent:.2f}s after the change"
    state = next(r for r in runtime.replicas(spec.cluster_id) if r.name == reps[0].name)
    assert state.reason and state.reason.startswith("CrashLoopBackOff")
    assert "replica_crashed" in rec.kinds(spec.cluster_id)


async def test_unschedulable_launch_shows_scheduler_reason(rt):
    runtime, rec = await rt()
    # 16 GPUs per replica: no node has more than 8.
    spec = make_spec(gpu_count=16, replicas=2)
    await runtime.apply(spec)
    reps = await rec.wait_for(
        lambda: (
            (r := rec.replicas.get(spec.cluster_id, []))
            and len(r) == 2
            and all(x.reason and "Insufficient nvidia.com/gpu" in x.reason for x in r)
            and r
        ),
        what="unschedulable reason",
    )
    assert all(r.phase == "Pending" and not r.ready and r.node is None for r in reps)
    assert "replica_pending" in rec.kinds(spec.cluster_id)
    await runtime.terminate(spec.cluster_id)


async def test_adoption_after_restart_and_unknown_removed(rt, admin, namespace):
    first, rec1 = await rt()
    keep = make_spec(name="keep")
    orphan = make_spec(name="orphan", gpu_count=1)
    await first.apply(keep)
    await first.apply(orphan)
    reps = await rec1.wait_for(ready(rec1, keep.cluster_id, 2), what="ready")
    await rec1.wait_for(ready(rec1, orphan.cluster_id, 2), what="orphan ready")
    apps = client.AppsV1Api(admin)
    uid = (
        apps.list_namespaced_deployment(
            namespace, label_selector=f"ecolink.cluster-id={keep.cluster_id}"
        )
        .items[0]
        .metadata.uid
    )
    await first.shutdown(stop_replicas=True)

    # A new backend that knows only `keep`.
    second, rec2 = await rt(known=[keep])
    adopted = await rec2.wait_for(ready(rec2, keep.cluster_id, 2), what="adopted")
    assert {r.name for r in adopted} == {r.name for r in reps}, "pods were replaced"
    deps = apps.list_namespaced_deployment(namespace).items
    await rec2.wait_for(
        lambda: len(apps.list_namespaced_deployment(namespace).items) == 1,
        timeout=30,
        what="the unknown cluster removed",
    )
    deps = apps.list_namespaced_deployment(namespace).items
    assert [d.metadata.uid for d in deps] == [uid], "adoption must not create a duplicate"
    assert not [k for k in rec2.kinds(keep.cluster_id) if k in ("scaled", "restarted")]


async def test_drift_is_restored_with_an_event(rt, admin, namespace):
    runtime, rec = await rt()
    spec = make_spec()
    await runtime.apply(spec)
    await rec.wait_for(ready(rec, spec.cluster_id, 2), what="ready")
    apps = client.AppsV1Api(admin)
    name = apps.list_namespaced_deployment(namespace).items[0].metadata.name

    apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": 3}})
    await rec.wait_for(lambda: "scaled" in rec.kinds(spec.cluster_id), what="scale drift event")
    await rec.wait_for(
        lambda: apps.read_namespaced_deployment(name, namespace).spec.replicas == 2,
        what="replicas restored",
    )

    apps.patch_namespaced_deployment(
        name,
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "main", "image": "someone/else:latest"}]}
                }
            }
        },
        _content_type="application/strategic-merge-patch+json",
    )
    await rec.wait_for(lambda: "restarted" in rec.kinds(spec.cluster_id), what="edit drift event")
    await rec.wait_for(
        lambda: (
            apps.read_namespaced_deployment(name, namespace).spec.template.spec.containers[0].image
            == spec.image
        ),
        what="image restored",
    )
    msg = [e[2] for e in rec.events if e[1] == "restarted"][0]
    assert "image" in msg

    apps.delete_namespaced_deployment(name, namespace)
    await rec.wait_for(
        lambda: any("deleted outside" in e[2] for e in rec.events), what="recreate event"
    )
    await rec.wait_for(ready(rec, spec.cluster_id, 2), what="recreated and ready")
    await runtime.terminate(spec.cluster_id)


async def test_api_server_outage_and_recovery(rt, k8s_env, admin, namespace):
    runtime, rec = await rt()
    spec = make_spec()
    await runtime.apply(spec)
    reps = await rec.wait_for(ready(rec, spec.cluster_id, 2), what="ready")
    assert runtime.available()
    k8s_env.stop_apiserver()
    try:
        await rec.wait_for(lambda: not runtime.available(), timeout=15, what="unavailable")
        assert rec.availability[-1] is False
        # Reads serve the last known state; changes fail and change nothing.
        assert [r.name for r in runtime.replicas(spec.cluster_id)] == [r.name for r in reps]
        with pytest.raises(RuntimeUnavailable):
            await runtime.apply(make_spec(cluster_id=spec.cluster_id, replicas=3))
        with pytest.raises(RuntimeUnavailable):
            await runtime.terminate(spec.cluster_id)
        with pytest.raises(RuntimeUnavailable):
            await runtime.restart(spec.cluster_id)
    finally:
        k8s_env.start_apiserver()
    await rec.wait_for(runtime.available, timeout=30, what="available again")
    assert rec.availability[-1] is True
    apps = client.AppsV1Api(admin)
    # The failed scale was not applied behind our back.
    assert apps.list_namespaced_deployment(namespace).items[0].spec.replicas == 2
    # Watches work again: a change made now is seen and acted on.
    await runtime.apply(make_spec(cluster_id=spec.cluster_id, replicas=3))
    await rec.wait_for(ready(rec, spec.cluster_id, 3), timeout=30, what="scaled after outage")
    await runtime.terminate(spec.cluster_id)


async def test_watch_relists_after_410_gone(rt, k8s_env):
    runtime, rec = await rt()
    spec = make_spec(gpu_count=1)
    await runtime.apply(spec)
    await rec.wait_for(ready(rec, spec.cluster_id, 2), what="ready")
    pods_watch = next(w for w in runtime.informer.watchers if w.kind == "pods")
    old_rv = pods_watch.resource_version
    # A restarted API server's watch cache starts at the current revision:
    # a watch from a resourceVersion before that is answered 410 Gone.
    k8s_env.stop_apiserver()
    k8s_env.start_apiserver()
    await rec.wait_for(runtime.available, timeout=30, what="available again")
    lists_before = pods_watch.lists
    pods_watch.resume_from(old_rv)
    await rec.wait_for(lambda: pods_watch.relists_after_gone >= 1, timeout=15, what="410 Gone")
    await rec.wait_for(lambda: pods_watch.lists > lists_before, timeout=15, what="relist")
    # And the watch still delivers changes after the relist.
    await runtime.apply(make_spec(cluster_id=spec.cluster_id, gpu_count=1, replicas=3))
    await rec.wait_for(ready(rec, spec.cluster_id, 3), what="3 ready after relist")
    await runtime.terminate(spec.cluster_id)


async def test_a_refused_apply_keeps_the_api_servers_words_and_creates_nothing(
    rt, admin, namespace
):
    runtime, _ = await rt()
    apps, core = client.AppsV1Api(admin), client.CoreV1Api(admin)
    # An object the API server will not accept: a label value with a space.
    bad = make_spec(node_selector=(("topology.kubernetes.io/region", "eu west"),))
    with pytest.raises(RuntimeRefused) as invalid:
        await runtime.apply(bad)
    assert invalid.value.status == 422
    assert "the API server refused: 422" in str(invalid.value)
    assert "Invalid value" in str(invalid.value) and "eu west" in str(invalid.value)
    # A change the namespace forbids: a quota of no Deployments at all.
    forbid_deployments(core, namespace)
    spec = make_spec()
    with pytest.raises(RuntimeRefused) as forbidden:
        await runtime.apply(spec)
    assert forbidden.value.status == 409
    assert "the API server refused: 403" in str(forbidden.value)
    assert "forbidden" in str(forbidden.value)
    assert apps.list_namespaced_deployment(namespace).items == []
    assert runtime.available()
    # Nothing is wanted either: the drift repair does not try again behind our back.
    assert spec.cluster_id not in runtime.applier.specs
    assert bad.cluster_id not in runtime.applier.specs


async def test_runtime_unavailable_without_server(monkeypatch, tmp_path):
    """No API server at all: start does not fail, changes answer unavailable."""
    cfg = tmp_path / "config"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        "    server: https://127.0.0.1:9\n    insecure-skip-tls-verify: true\n"
        "users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n"
        "    cluster: c\n    user: u\ncurrent-context: x\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    runtime = KubernetesRuntime(load_target())
    rec = Recorder()
    t0 = time.monotonic()
    await runtime.start(rec, [])
    try:
        assert not runtime.available()
        with pytest.raises(RuntimeUnavailable):
            await runtime.apply(make_spec())
        assert runtime.replicas("nope") == []
        assert time.monotonic() - t0 < 30
    finally:
        await runtime.shutdown(stop_replicas=False)
    await asyncio.sleep(0)
