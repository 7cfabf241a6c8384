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

from e2e.helpers import all_ready, launch, wait_for

from .test_serve import k8s_namespace, kapi, kube_server  # noqa: F401 - fixtures
from .test_streams import forward_pod_port, local_server

ROOT = Path(__file__).resolve().parents[2]


def _env(server, key: str, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ, ECO_API_URL=server.url, ECO_API_KEY=key,
             XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "backend")])
    return e


def ecotui(env, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ecotui", *argv], env=env,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


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
    assert [(o["name"], o["exit_code"]) for o in json.loads(p.stdout)] == \
        [(n, 3) for n in names]

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
        proc = subprocess.Popen([sys.executable, "-m", "ecotui", "port-forward", "tools",
                                 names[0], ":8080"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
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
            answers = [httpx.get(f"http://127.0.0.1:{local}/x{i}", timeout=5).text
                       for i in range(5)]
            assert answers == [f"kube-one /x{i}" for i in range(5)]
        finally:
            proc.terminate()
            proc.wait(10)
    kapi.delete(f"/gpu-clusters/{cid}")


def test_pods_carry_the_expiry_and_follow_an_extend(kube_server, kapi, k8s_namespace):  # noqa: F811
    from datetime import datetime

    from kubernetes import client

    from ecolink.runtime.kube_objects import EXPIRES_ANNOTATION

    api, ns = k8s_namespace
    c = launch(kapi, "clock", replicas=2, command="sleep infinity")
    cid = c["id"]
    c = wait_for(kapi, cid, all_ready(2), timeout=30, what="ready")

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    def pod_expiries() -> list[str]:
        pods = client.CoreV1Api(api).list_namespaced_pod(
            ns, label_selector=f"ecolink.cluster-id={cid}").items
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
