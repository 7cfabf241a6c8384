"""End to end: `ecolink serve --runtime kubernetes` against the test control
plane, driven over HTTP and WebSocket like the dashboard drives it."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import httpx
import pytest
from kubernetes import client

from support.e2e_helpers import V4, V5, all_ready, connect, exec_url, exit_code, launch, wait_for
from support.server import EcolinkServer

from .conftest import forbid_deployments
from .test_streams import forward_pod_port, local_server


@pytest.fixture(scope="module")
def k8s_namespace(k8s_env):
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(str(k8s_env.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while True:
        try:
            client.CoreV1Api(api).read_namespaced_service_account("default", name)
            break
        except client.ApiException:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    yield api, name
    client.CoreV1Api(api).delete_namespace(name)
    api.close()


@pytest.fixture(scope="module")
def kube_server(k8s_env, k8s_namespace, tmp_path_factory):
    _, ns = k8s_namespace
    srv = EcolinkServer(
        tmp_path_factory.mktemp("ecolink-k8s"),
        extra_args=["--runtime", "kubernetes", "--namespace", ns],
        env={"KUBECONFIG": str(k8s_env.kubeconfig)},
    )
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def kapi(kube_server):
    key = kube_server.new_account("acct-" + secrets.token_hex(4), "10000")
    with kube_server.client(key) as c:
        c.account_key = key  # type: ignore[attr-defined]
        yield c


def kube_objects(k8s_namespace, cid: str):
    api, ns = k8s_namespace
    sel = f"ecolink.cluster-id={cid}"
    return (
        client.AppsV1Api(api).list_namespaced_deployment(ns, label_selector=sel).items,
        client.CoreV1Api(api).list_namespaced_service(ns, label_selector=sel).items,
        client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=sel).items,
    )


def test_lifecycle_through_the_api(kapi, k8s_namespace):
    c = launch(kapi, "life", replicas=2, command="sleep infinity", port=8080)
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="2 ready")
    # us-east + H100-80GB in the catalog maps to the H100 node of us-east.
    assert {s["node"] for s in c["replica_states"]} == {"gpu-h-2"}
    deps, svcs, pods = kube_objects(k8s_namespace, cid)
    assert len(deps) == 1 and len(svcs) == 1 and len(pods) == 2
    assert deps[0].spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"

    r = kapi.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 3})
    assert r.status_code == 200, r.text
    wait_for(kapi, cid, all_ready(3), timeout=30, what="3 ready")

    assert kapi.post(f"/gpu-clusters/{cid}/stop").status_code == 200
    wait_for(
        kapi,
        cid,
        lambda c: c["status"] == "stopped" and not c["replica_states"],
        timeout=30,
        what="stopped",
    )
    deps, _, _ = kube_objects(k8s_namespace, cid)
    assert deps[0].spec.replicas == 0
    assert kapi.post(f"/gpu-clusters/{cid}/resume").status_code == 200
    c = wait_for(kapi, cid, all_ready(3), timeout=30, what="resumed")
    before = {s["name"] for s in c["replica_states"]}
    assert kapi.post(f"/gpu-clusters/{cid}/restart").status_code == 200
    wait_for(
        kapi,
        cid,
        lambda c: all_ready(3)(c) and not ({s["name"] for s in c["replica_states"]} & before),
        timeout=60,
        what="rolling restart",
    )

    r = kapi.delete(f"/gpu-clusters/{cid}")
    assert r.status_code == 200
    wait_for(kapi, cid, lambda c: c["status"] == "terminated", timeout=60, what="terminated")
    deadline = time.monotonic() + 30
    while any(kube_objects(k8s_namespace, cid)):
        assert time.monotonic() < deadline, "objects left after terminate"
        time.sleep(0.2)
    kinds = [e["kind"] for e in kapi.get(f"/gpu-clusters/{cid}/events").json()["events"]]
    assert "replica_ready" in kinds


def test_unschedulable_reason_reaches_the_api(kapi):
    # One H100 node in us-east has 8 GPUs: only one 8-GPU replica fits.
    c = launch(kapi, "toobig", replicas=3, gpu_count=8, command="sleep infinity")
    cid = c["id"]
    c = wait_for(
        kapi,
        cid,
        lambda c: (
            len(c["replica_states"]) == 3
            and sum(
                "Insufficient nvidia.com/gpu" in (s["reason"] or "") for s in c["replica_states"]
            )
            == 2
        ),
        timeout=30,
        what="the scheduler's reason",
    )
    assert c["ready_replicas"] == 1
    kapi.delete(f"/gpu-clusters/{cid}")


@pytest.mark.parametrize("proto", [V5, V4])
async def test_exec_through_ecolink(kube_server, kapi, proto):
    c = launch(kapi, f"ex{proto[1]}", replicas=2, command="sleep infinity")
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")
    replica = c["replica_states"][0]["name"]
    key = kapi.account_key
    ch = await connect(
        exec_url(kube_server, cid, replica, ["sh", "-c", "echo hi; exit 3"]), key, (proto,)
    )
    assert ch.protocol == proto
    await ch.run_to_end()
    assert bytes(ch.out) == b"hi\n"
    assert exit_code(ch.status) == 3

    ch = await connect(exec_url(kube_server, cid, replica, ["sh"], tty=1, stdin=1), key, (proto,))
    await ch.resize(100, 30)
    deadline = time.monotonic() + 10
    while b"30 100" not in ch.out:
        assert time.monotonic() < deadline, bytes(ch.out)
        await ch.send_stdin(b"stty size\n")
        with __import__("contextlib").suppress(AssertionError):
            await ch.until_out(b"30 100", timeout=1)
    await ch.send_stdin(b"exit 4\n")
    await ch.run_to_end()
    assert exit_code(ch.status) == 4
    kapi.delete(f"/gpu-clusters/{cid}")


def test_logs_through_ecolink(kapi, k8s_env):
    c = launch(kapi, "logs", replicas=2, command="sleep infinity")
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")
    marker = f"m{time.monotonic_ns()}"
    k8s_env.append_pod_log(f"{marker} a", f"{marker} b")
    replica = c["replica_states"][1]["name"]
    r = kapi.get(f"/gpu-clusters/{cid}/replicas/{replica}/logs", params={"tail": 1})
    assert r.status_code == 200
    assert r.text.strip() == f"{marker} b"
    kapi.delete(f"/gpu-clusters/{cid}")


def test_service_url_round_robin_through_port_forward(kube_server, kapi, k8s_namespace):
    api, ns = k8s_namespace
    c = launch(kapi, "svc", replicas=2, command="sleep infinity", port=8080)
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")
    with local_server("one") as p1, local_server("two") as p2:
        for rep, port in zip(c["replica_states"], (p1, p2), strict=True):
            forward_pod_port(api, ns, rep["name"], 8080, port)
        url = f"/gpu-clusters/{cid}/service/hello"
        deadline = time.monotonic() + 20
        answers: list[str] = []
        while len(answers) < 4:
            assert time.monotonic() < deadline, answers
            r = kapi.get(url)
            if r.status_code == 200:
                answers.append(r.text)
            else:
                answers.clear()  # KWOK has not seen every PortForward yet
                time.sleep(0.3)
        assert sorted(answers) == ["one /hello", "one /hello", "two /hello", "two /hello"]
        assert answers[0] != answers[1], "not round-robin"
    kapi.delete(f"/gpu-clusters/{cid}")


def test_outage_answers_503_and_stale_then_recovers(kapi, k8s_env):
    c = launch(kapi, "outage", replicas=2, command="sleep infinity")
    cid = c["id"]
    wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")
    k8s_env.stop_apiserver()
    try:
        c = wait_for(kapi, cid, lambda c: c["stale"], timeout=15, what="stale")
        assert len(c["replica_states"]) == 2
        ledger = kapi.get("/account/ledger", params={"cluster_id": cid}).json()["entries"]
        r = kapi.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 3})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "runtime_unavailable"
        after = kapi.get("/account/ledger", params={"cluster_id": cid}).json()["entries"]
        holds = [e for e in after if e["kind"] == "hold"]
        assert holds == [e for e in ledger if e["kind"] == "hold"], "a hold for a failed change"
        assert kapi.get(f"/gpu-clusters/{cid}").json()["replicas"] == 2
    finally:
        k8s_env.start_apiserver()
    wait_for(kapi, cid, lambda c: not c["stale"], timeout=30, what="not stale")
    r = kapi.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 3})
    assert r.status_code == 200, r.text
    wait_for(kapi, cid, all_ready(3), timeout=30, what="3 ready after the outage")
    kapi.delete(f"/gpu-clusters/{cid}")


def test_a_refusal_of_the_api_server_is_answered_409_with_its_words(kapi, k8s_namespace):
    api, ns = k8s_namespace
    core = client.CoreV1Api(api)
    forbid_deployments(core, ns)
    try:
        before = kapi.get("/account").json()
        r = kapi.post(
            "/gpu-clusters",
            json={
                "name": "refused",
                "region": "us-east",
                "gpu_type": "H100-80GB",
                "gpu_count": 1,
                "replicas": 2,
                "image": "example/app:1",
                "estimated_duration_hours": 1,
            },
        )
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "conflict"
        assert error["message"].startswith("the API server refused: 403")
        assert "forbidden" in error["message"]
        # Nothing was changed: no cluster, no hold, the same balance.
        assert kapi.get("/account").json() == before
        assert all(c["name"] != "refused" for c in kapi.get("/gpu-clusters").json()["clusters"])
    finally:
        core.delete_namespaced_resource_quota("no-deployments", ns)


def test_backend_restart_adopts_running_clusters(kube_server, kapi, k8s_namespace):
    c = launch(kapi, "adopt", replicas=2, command="sleep infinity")
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")
    pods = {s["name"] for s in c["replica_states"]}
    uid = kube_objects(k8s_namespace, cid)[0][0].metadata.uid
    kube_server.restart()
    with kube_server.client(kapi.account_key) as again:
        c = wait_for(again, cid, all_ready(2), timeout=30, what="adopted")
        assert {s["name"] for s in c["replica_states"]} == pods
        deps = kube_objects(k8s_namespace, cid)[0]
        assert [d.metadata.uid for d in deps] == [uid]
        again.delete(f"/gpu-clusters/{cid}")
    asyncio.run(asyncio.sleep(0))
    httpx.get(kube_server.url + "/healthz").raise_for_status()
