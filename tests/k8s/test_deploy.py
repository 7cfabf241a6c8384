"""Deployed in-cluster: `deploy/` renders with kustomize, the API server accepts
every object of it, an ecolink that holds nothing but a token of its
ServiceAccount runs clusters through the runtime, and the Role grants exactly
what the runtime calls (`ecolink.runtime.kubernetes.rbac`), nothing more."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, utils

from ecolink.runtime.kubernetes.rbac import RULES
from support.e2e_helpers import all_ready, connect, exec_url, exit_code, launch, wait_for
from support.server import EcolinkServer

ROOT = Path(__file__).resolve().parents[2]


def render(k8s_env: Any, path: str) -> list[dict[str, Any]]:
    kustomize = k8s_env.info.get("kustomize") or shutil.which("kustomize")
    assert kustomize, "scripts/k8s-testenv builds kustomize; rerun it"
    out = subprocess.run(
        [kustomize, "build", str(ROOT / path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {d["kind"]: d for d in docs}
    assert len(out) == len(docs), "one object of each kind"
    return out


def rules_of(rules: list[Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    """(group, resource, sorted verbs) of RBAC rules, as dicts or client objects."""
    out = set()
    for r in rules:
        r = r if isinstance(r, dict) else r.to_dict()
        groups = r.get("apiGroups") or r.get("api_groups") or []
        for group in groups:
            for resource in r["resources"]:
                out.add((group, resource, tuple(sorted(r["verbs"]))))
    return out


@pytest.fixture(scope="module")
def deployed(k8s_env: Any) -> Any:
    """A namespace with the sqlite overlay applied, and a client holding only a
    token of its ServiceAccount."""
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(str(k8s_env.kubeconfig), client_configuration=cfg)
    admin = client.ApiClient(cfg)
    ns = f"deploy-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": ns}})
    docs = render(k8s_env, "deploy/overlays/sqlite")
    utils.create_from_yaml(admin, yaml_objects=docs, namespace=ns)
    token = core.create_namespaced_service_account_token(
        "ecolink", ns, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = Path(k8s_env.kubeconfig).parent / f"{ns}.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "ecolink",
                "clusters": [
                    {
                        "name": "testenv",
                        "cluster": {
                            "server": k8s_env.server,
                            "certificate-authority-data": base64.b64encode(
                                Path(cfg.ssl_ca_cert).read_bytes()
                            ).decode(),
                        },
                    }
                ],
                "users": [{"name": "ecolink", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "ecolink",
                        "context": {"cluster": "testenv", "user": "ecolink", "namespace": ns},
                    }
                ],
            }
        )
    )
    kubeconfig.chmod(0o600)
    scfg = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=scfg)
    scoped = client.ApiClient(scfg)
    yield admin, scoped, ns, kubeconfig, docs
    scoped.close()
    core.delete_namespace(ns)
    admin.close()
    kubeconfig.unlink()


def test_the_manifests_render_and_are_accepted(k8s_env: Any, deployed: Any) -> None:
    admin, _, ns, _, docs = deployed
    base = by_kind(render(k8s_env, "deploy/base"))
    assert set(base) == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }
    assert base["Deployment"]["spec"]["replicas"] == 2
    overlay = by_kind(docs)
    assert overlay["Deployment"]["spec"]["replicas"] == 1
    assert "PersistentVolumeClaim" in overlay

    # What the API server stored is what was rendered: probes, the service account,
    # the catalog from the ConfigMap, the database URL from a Secret.
    dep = client.AppsV1Api(admin).read_namespaced_deployment("ecolink", ns)
    spec = dep.spec.template.spec
    assert spec.service_account_name == "ecolink"
    (c,) = spec.containers
    assert c.readiness_probe.http_get.path == "/readyz"
    assert c.liveness_probe.http_get.path == "/healthz"
    assert "--runtime=kubernetes" in c.args and "--catalog=/etc/ecolink/catalog.toml" in c.args
    # The overlay keeps its ledger in SQLite: no database URL, no Secret needed.
    assert not [e for e in c.env if e.name == "ECOLINK_DATABASE_URL"]
    # The base: every instance on the Postgres database the Secret names, migrated by
    # each pod's init container before it serves, and reachable at its pod address.
    base_spec = base["Deployment"]["spec"]["template"]["spec"]
    (serve,) = base_spec["containers"]
    (migrate,) = base_spec["initContainers"]
    assert migrate["args"] == ["migrate"]
    for container in (serve, migrate):
        db = next(e for e in container["env"] if e["name"] == "ECOLINK_DATABASE_URL")
        assert db["valueFrom"]["secretKeyRef"] == {"name": "ecolink-database", "key": "url"}
    advertise = next(e for e in serve["env"] if e["name"] == "ECOLINK_ADVERTISE_URL")
    assert advertise["value"] == "http://$(POD_IP):8080"
    volumes = {v.name: v for v in spec.volumes}
    cm = client.CoreV1Api(admin).read_namespaced_config_map(volumes["catalog"].config_map.name, ns)
    assert cm.data["catalog.toml"] == (ROOT / "deploy/base/catalog.toml").read_text()
    assert volumes["state"].persistent_volume_claim.claim_name == "ecolink-state"
    pdb = client.PolicyV1Api(admin).read_namespaced_pod_disruption_budget("ecolink", ns)
    assert pdb.spec.max_unavailable == 1
    assert pdb.spec.selector.match_labels == dep.spec.selector.match_labels
    svc = client.CoreV1Api(admin).read_namespaced_service("ecolink", ns)
    assert svc.spec.selector == dep.spec.selector.match_labels
    # The catalog shipped in deploy/ is the built-in one.
    assert cm.data["catalog.toml"] == (ROOT / "backend/ecolink/catalog.toml").read_text()


def test_the_role_grants_what_the_runtime_calls_and_nothing_more(deployed: Any) -> None:
    admin, scoped, ns, _, _ = deployed
    role = client.RbacAuthorizationV1Api(admin).read_namespaced_role("ecolink-runtime", ns)
    assert rules_of(role.rules) == set(RULES)
    # What the token may do in its namespace, as the API server sees it: the Role,
    # and what every authenticated user may do (review itself), nothing else.
    review = client.AuthorizationV1Api(scoped).create_self_subject_rules_review(
        {"spec": {"namespace": ns}}
    )
    granted = {
        r
        for r in rules_of(review.status.resource_rules)
        if r[0] not in ("authorization.k8s.io", "authentication.k8s.io")
    }
    assert granted == set(RULES)
    for group, resource, verbs in RULES:
        res, _, sub = resource.partition("/")
        for verb in verbs:
            r = client.AuthorizationV1Api(scoped).create_self_subject_access_review(
                {
                    "spec": {
                        "resourceAttributes": {
                            "namespace": ns,
                            "group": group,
                            "resource": res,
                            "subresource": sub,
                            "verb": verb,
                        }
                    }
                }
            )
            assert r.status.allowed, (resource, verb)
    # Outside the list: refused with 403.
    core, apps = client.CoreV1Api(scoped), client.AppsV1Api(scoped)
    refused = [
        lambda: core.list_namespaced_secret(ns),
        lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}}),
        lambda: core.read_namespaced_pod_log("x", "kube-system"),
        lambda: core.list_namespaced_pod("default"),
        lambda: core.list_node(),
        lambda: apps.list_namespaced_deployment("default"),
        lambda: apps.list_namespaced_stateful_set(ns),
        lambda: core.delete_namespace(ns),
        lambda: client.CoordinationV1Api(scoped).list_namespaced_lease(ns),
        lambda: client.CoordinationV1Api(scoped).delete_namespaced_lease("ecolink-leader", ns),
        lambda: client.RbacAuthorizationV1Api(scoped).create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": "x"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "admin",
                },
                "subjects": [],
            },
        ),
    ]
    for call in refused:
        with pytest.raises(client.ApiException) as info:
            call()
        assert info.value.status == 403


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_ecolink_with_only_the_service_account_token_runs_clusters(
    k8s_env: Any, deployed: Any, tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """As the sqlite overlay runs it, and as the base does: on a Postgres database
    (migrated first, as the init container does)."""
    admin, _, ns, kubeconfig, _ = deployed
    env = {"KUBECONFIG": str(kubeconfig)}
    if database == "postgres":
        env["ECOLINK_DATABASE_URL"] = request.getfixturevalue("postgres").new_database()
    # No --namespace, no --context: the token's kubeconfig says where, as the
    # service account's files do in a pod. The Lease is what in-cluster credentials
    # choose; here it is asked for.
    srv = EcolinkServer(
        tmp_path,
        catalog=str(ROOT / "deploy/base/catalog.toml"),
        extra_args=["--runtime", "kubernetes", "--leader-election", "lease"],
        env=env,
    )
    srv.start()
    try:
        key = srv.new_account("team-" + secrets.token_hex(3), "10000")
        with srv.client(key) as api:
            _run_every_operation(k8s_env, srv, api, key, admin, ns)
            lease = client.CoordinationV1Api(admin).read_namespaced_lease("ecolink-leader", ns)
            assert lease.spec.holder_identity
            assert "ecolink_leader 1.0" in api.get("/metrics").text
            _readyz_follows_the_api_server(k8s_env, srv)
    finally:
        srv.close()


def _run_every_operation(
    k8s_env: Any, srv: EcolinkServer, api: httpx.Client, key: str, admin: Any, ns: str
) -> None:
    c = launch(api, "team", replicas=2, command="sleep infinity", port=8080)
    cid = c["id"]
    c = wait_for(api, cid, all_ready(2), timeout=30, what="2 ready")
    sel = f"ecolink.cluster-id={cid}"
    deps = client.AppsV1Api(admin).list_namespaced_deployment(ns, label_selector=sel).items
    assert len(deps) == 1
    assert api.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 3}).status_code == 200
    c = wait_for(api, cid, all_ready(3), timeout=30, what="3 ready")
    # A replica's restart deletes its pod; logs and exec go through subresources.
    replica = c["replica_states"][0]["name"]
    r = api.post(f"/gpu-clusters/{cid}/replicas/{replica}/restart")
    assert r.status_code == 200, r.text
    wait_for(
        api,
        cid,
        lambda c: all_ready(3)(c) and replica not in {s["name"] for s in c["replica_states"]},
        timeout=60,
        what="the replica replaced",
    )
    c = api.get(f"/gpu-clusters/{cid}").json()
    replica = c["replica_states"][0]["name"]
    marker = f"m{time.monotonic_ns()}"
    k8s_env.append_pod_log(marker)
    r = api.get(f"/gpu-clusters/{cid}/replicas/{replica}/logs", params={"tail": 1})
    assert r.status_code == 200 and r.text.strip() == marker

    async def run_exec() -> tuple[bytes, int | None]:
        ch = await connect(exec_url(srv, cid, replica, ["sh", "-c", "echo hi; exit 3"]), key)
        await ch.run_to_end()
        return bytes(ch.out), exit_code(ch.status)

    assert asyncio.run(run_exec()) == (b"hi\n", 3)
    assert api.post(f"/gpu-clusters/{cid}/stop").status_code == 200
    wait_for(
        api,
        cid,
        lambda c: c["status"] == "stopped" and not c["replica_states"],
        timeout=30,
        what="stopped",
    )
    assert api.post(f"/gpu-clusters/{cid}/resume").status_code == 200
    wait_for(api, cid, all_ready(3), timeout=30, what="resumed")
    assert api.delete(f"/gpu-clusters/{cid}").status_code == 200
    wait_for(api, cid, lambda c: c["status"] == "terminated", timeout=60, what="terminated")
    deadline = time.monotonic() + 30
    while (
        client.AppsV1Api(admin).list_namespaced_deployment(ns, label_selector=sel).items
        or client.CoreV1Api(admin).list_namespaced_service(ns, label_selector=sel).items
    ):
        assert time.monotonic() < deadline, "objects left after terminate"
        time.sleep(0.2)
    # Nothing the runtime tried was refused on the way.
    # (a status 403, not those digits inside a port or a timestamp's milliseconds)
    refusals = re.findall(r"(?<![\d.,:])403(?!\d)", srv.log_tail(200_000))
    assert not refusals, refusals


def _readyz_follows_the_api_server(k8s_env: Any, srv: EcolinkServer) -> None:
    assert httpx.get(srv.url + "/readyz").status_code == 200
    k8s_env.stop_apiserver()
    try:
        deadline = time.monotonic() + 30
        while (r := httpx.get(srv.url + "/readyz", timeout=5)).status_code != 503:
            assert time.monotonic() < deadline, "/readyz stayed 200 without an API server"
            time.sleep(0.2)
        assert r.json()["error"]["code"] == "runtime_unavailable"
        assert httpx.get(srv.url + "/healthz").status_code == 200
        metrics = srv.client().get("/metrics").text
        assert "ecolink_runtime_available 0.0" in metrics
    finally:
        k8s_env.start_apiserver()
    deadline = time.monotonic() + 60
    while httpx.get(srv.url + "/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "/readyz did not come back"
        time.sleep(0.2)
