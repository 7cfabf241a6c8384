"""The replica tools against `ecolink serve --runtime kubernetes` on the test control
plane: `ecotui run` (folded), `ecotui port-forward` (pods/portforward behind the
portforward WebSocket) and `ecotui cp` (tar over pods/exec). KWOK runs exec as
local processes and forwards pod ports to local servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.e2e_helpers import all_ready, launch, wait_for

from .test_serve import k8s_namespace, kapi, kube_server  # noqa: F401 - fixtures
from .test_streams import forward_pod_port, local_server

ROOT = Path(__file__).resolve().parents[2]


def _env(server, key: str, tmp_path: Path) -> dict[str, str]:
    e = dict(
        os.environ, ECO_API_URL=server.url, ECO_API_KEY=key, XDG_CONFIG_HOME=str(tmp_path / "cfg")
    )
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "backend")])
    return e


def ecotui(env, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ecotui", *argv],
        env=env,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_run_cp_and_port_forward_on_kubernetes(kube_server, kapi, k8s_namespace, tmp_path):  # noqa: F811
    api, ns = k8s_namespace
    c = launch(kapi, "tools", replicas=2, command="sleep infinity")
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")
    names = sorted(s["name"] for s in c["replica_states"])
    env = _env(kube_server, kapi.account_key, tmp_path)

    # run: both replicas, one folded group, exit codes per replica
    p = ecotui(env, "run", "tools", "--", "sh", "-c", "echo same-$((6*7))")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert lines[0].endswith("(2 replicas) · exit 0") and lines[1] == "same-42"
    p = ecotui(env, "run", "tools", "--json", "--", "sh", "-c", "exit 3")
    assert p.returncode == 1
    assert [(o["name"], o["exit_code"]) for o in json.loads(p.stdout)] == [(n, 3) for n in names]

    # cp: a tree up and back through tar over pods/exec
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.bin").write_bytes(os.urandom(100_000))
    (src / "d" / "f.bin").chmod(0o640)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    p = ecotui(env, "cp", str(src / "d"), f"tools/{names[0]}:{remote_dir}")
    assert p.returncode == 0, p.stderr
    back = tmp_path / "back"
    back.mkdir()
    p = ecotui(env, "cp", f"tools/{names[0]}:{remote_dir}/d", str(back))
    assert p.returncode == 0, p.stderr
    got = back / "d" / "f.bin"
    assert got.read_bytes() == (src / "d" / "f.bin").read_bytes()
    assert got.stat().st_mode & 0o777 == 0o640

    # port-forward: the pod's port 8080 through pods/portforward
    with local_server("kube-one") as port:
        forward_pod_port(api, ns, names[0], 8080, port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecotui", "port-forward", "tools", names[0], ":8080"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            assert line.startswith("Forwarding from 127.0.0.1:") and line.endswith("-> 8080\n")
            local = int(line.split(":")[1].split()[0])
            deadline = time.monotonic() + 20
            while True:  # KWOK picks the PortForward object up from an informer
                try:
                    r = httpx.get(f"http://127.0.0.1:{local}/hello", timeout=5)
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.3)
            assert r.text == "kube-one /hello"
            answers = [
                httpx.get(f"http://127.0.0.1:{local}/x{i}", timeout=5).text for i in range(5)
            ]
            assert answers == [f"kube-one /x{i}" for i in range(5)]
        finally:
            proc.terminate()
            proc.wait(10)
    kapi.delete(f"/gpu-clusters/{cid}")


def test_port_forward_to_a_closed_port_is_refused_on_kubernetes(
    kube_server, kapi, k8s_namespace, tmp_path
):  # noqa: F811
    import socket

    from kubernetes import client
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    api, ns = k8s_namespace
    c = launch(kapi, "closed", replicas=2, command="sleep infinity")
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")
    name = sorted(s["name"] for s in c["replica_states"])[0]
    env = _env(kube_server, kapi.account_key, tmp_path)
    with socket.socket() as s:  # a local port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with local_server("open") as port:
        # The pod's 8080 leads to a server, its 9090 to a closed port.
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "kwok.x-k8s.io",
            "v1alpha1",
            ns,
            "portforwards",
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "PortForward",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "forwards": [
                        {"ports": [8080], "target": {"port": port, "address": "127.0.0.1"}},
                        {"ports": [9090], "target": {"port": closed, "address": "127.0.0.1"}},
                    ]
                },
            },
        )
        url = kube_server.url.replace("http://", "ws://", 1)
        headers = {"Authorization": f"Bearer {kapi.account_key}"}

        def dial(p: int):
            return connect(
                f"{url}/gpu-clusters/{cid}/replicas/{name}/portforward?port={p}",
                additional_headers=headers,
                open_timeout=10,
            )

        deadline = time.monotonic() + 20
        while True:  # KWOK picks the PortForward object up from an informer
            with dial(8080) as ws:
                ws.send(b"GET /ok HTTP/1.0\r\n\r\n")
                try:
                    if b"open /ok" in ws.recv(timeout=5):
                        break
                except (ConnectionClosed, TimeoutError):
                    pass
            assert time.monotonic() < deadline, "the port-forward never worked"
            time.sleep(0.3)
        # The backend accepts (the kubelet answers only then) and closes with 4409.
        with dial(9090) as ws:
            try:
                ws.recv(timeout=10)
                raise AssertionError("data from a closed port")
            except ConnectionClosed:
                pass
            assert ws.close_code == 4409
            assert ws.close_reason == f"nothing in {name} listens on port 9090"
        # The CLI checks once at start: a clear line and exit 1, nothing listening.
        p = ecotui(env, "port-forward", "closed", name, ":9090", timeout=30)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert f"nothing in {name} listens on port 9090".encode() in p.stderr
        assert b"Forwarding from" not in p.stdout
    kapi.delete(f"/gpu-clusters/{cid}")


def test_pods_carry_the_expiry_and_follow_an_extend(kube_server, kapi, k8s_namespace):  # noqa: F811
    from datetime import datetime

    from kubernetes import client

    from ecolink.runtime.kubernetes.objects import EXPIRES_ANNOTATION

    api, ns = k8s_namespace
    c = launch(kapi, "clock", replicas=2, command="sleep infinity")
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    def pod_expiries() -> list[str]:
        pods = (
            client.CoreV1Api(api)
            .list_namespaced_pod(ns, label_selector=f"ecolink.cluster-id={cid}")
            .items
        )
        return [(p.metadata.annotations or {}).get(EXPIRES_ANNOTATION, "") for p in pods]

    assert [at(x) for x in pod_expiries()] == [at(c["expires_at"])] * 2
    r = kapi.post(f"/gpu-clusters/{cid}/extend", json={"hours": "1"})
    assert r.status_code == 200, r.text
    new = at(r.json()["expires_at"])
    deadline = time.monotonic() + 10
    while [at(x) if x else None for x in pod_expiries()] != [new, new]:
        assert time.monotonic() < deadline, pod_expiries()
        time.sleep(0.2)
    kapi.delete(f"/gpu-clusters/{cid}")
